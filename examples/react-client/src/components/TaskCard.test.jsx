import { act, cleanup, render, screen } from '@testing-library/react';
import { afterEach, describe, expect, it } from 'vitest';
import { createTaskClient } from '@celery-pushserver/client';
import { TaskClientProvider } from '@celery-pushserver/react';
import { FakeSocket } from '../testing/fakeSocket.js';
import { ConnectionIndicator } from './ConnectionIndicator.jsx';
import { TaskCard } from './TaskCard.jsx';

const taskState = (id, state, updated_at, extra = {}) => ({
  task_id: id, name: 'workers.tasks.demo_progress', state, updated_at, progress: null, result: null,
  result_format: null, exception: null, exception_type: null, traceback: null, retries: 0, ...extra,
});

function renderWithClient(ui, { getToken } = {}) {
  const socket = new FakeSocket();
  socket.connected = true;
  const client = createTaskClient({ socket, getToken });
  render(<TaskClientProvider client={client}>{ui}</TaskClientProvider>);
  return { socket, client };
}

afterEach(cleanup);

describe('TaskCard', () => {
  it('renders progress, then the result, from live updates', () => {
    const { socket } = renderWithClient(<TaskCard id="t1" token="tok" kind="resize-image" createdAt={Date.now()} />);
    expect(screen.getByTestId('state-badge').dataset.state).toBe('PENDING');
    expect(socket.takeEmits('subscribe').map((e) => e.payload)).toEqual([{ task_id: 't1', token: 'tok' }]);
    act(() => socket.fire('task:update', taskState('t1', 'PROGRESS', 2, { progress: { current: 2, total: 5, percent: 40, message: 'resized to 640x400' } })));
    expect(screen.getByRole('progressbar').getAttribute('aria-valuenow')).toBe('40');
    expect(screen.getByTestId('progress-message').textContent).toBe('resized to 640x400');
    act(() => socket.fire('task:update', taskState('t1', 'SUCCESS', 3, {
      result: { path: '/media/x.jpg', width: 640, height: 400, bytes: 2048 }, result_format: 'json', runtime: 1.25,
    })));
    expect(screen.getByTestId('task-card').dataset.state).toBe('SUCCESS');
    expect(screen.getByTestId('state-badge').textContent).toBe('Succeeded');
    expect(screen.getByTestId('result').textContent).toContain('Image resized to 640 × 400 px');
    expect(screen.getByTestId('progress-percent').textContent).toBe('100%');
  });

  it('shows a failure with its exception and traceback', () => {
    const { socket } = renderWithClient(<TaskCard id="t1" token="tok" kind="fail" createdAt={Date.now()} />);
    act(() => socket.fire('task:update', taskState('t1', 'FAILURE', 3, {
      exception: "RuntimeError('Disk quota exceeded')", exception_type: 'RuntimeError',
      traceback: 'Traceback (most recent call last):\n  ...',
    })));
    const error = screen.getByTestId('error');
    expect(error.querySelector('code').textContent).toBe('RuntimeError');
    expect(error.querySelector('.outcome__message').textContent).toBe('RuntimeError: Disk quota exceeded');
    expect(screen.getByText('Traceback')).toBeTruthy();
  });

  it('says live updates stopped when no token is accepted', async () => {
    const { socket } = renderWithClient(<TaskCard id="t1" token="tok" kind="predict" createdAt={Date.now()} />, {
      getToken: () => Promise.reject(new Error('no task t1 dispatched by you')),
    });
    act(() => socket.takeEmits('subscribe')[0].ack({ ok: false, error: { code: 'unauthorized', message: 'token has expired' } }));
    expect(await screen.findByRole('alert')).toBeTruthy();
    expect(screen.getByRole('alert').textContent).toMatch(/Live updates stopped: getToken failed: no task t1 dispatched by you/);
  });
});

describe('ConnectionIndicator', () => {
  it('shows the shared connection status', () => {
    const socket = new FakeSocket();
    const client = createTaskClient({ socket });
    render(<TaskClientProvider client={client}><ConnectionIndicator /></TaskClientProvider>);
    expect(screen.getByTestId('connection').dataset.status).toBe('connecting');
    act(() => socket.serverConnect());
    expect(screen.getByTestId('connection').dataset.status).toBe('connected');
    expect(screen.getByText('Connected')).toBeTruthy();
    act(() => window.dispatchEvent(new Event('offline')));
    expect(screen.getByTestId('connection').dataset.status).toBe('offline');
  });
});

describe('FanoutProgress', () => {
  const workflow = (counts, extra = {}) => {
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const completed = counts.SUCCESS ?? 0;
    const failed = counts.FAILURE ?? 0;
    return {
      workflow_id: 'f1', kind: 'chain', state: failed ? 'FAILURE' : completed === total ? 'SUCCESS' : 'STARTED', total,
      counts, completed, failed, percent: (100 * (completed + failed)) / total,
      task_ids: Array.from({ length: total }, (_, i) => `m${i}`), updated_at: 1, ...extra,
    };
  };

  it('watches the fan-out task as a workflow: one bar, one dot per member by state', () => {
    const { socket } = renderWithClient(<TaskCard id="f1" token="tok" kind="webhooks" createdAt={Date.now()} />);
    const subs = socket.takeEmits('subscribe').map((e) => e.payload);
    expect(subs).toHaveLength(2);
    expect(subs).toContainEqual({ task_id: 'f1', token: 'tok' });
    expect(subs).toContainEqual({ workflow_id: 'f1', token: 'tok' });
    act(() => socket.fire('workflow:update', workflow({ SUCCESS: 2, STARTED: 1, PENDING: 2 })));
    expect(screen.getByTestId('fanout-progress').getAttribute('aria-valuenow')).toBe('40');
    expect(screen.getByTestId('fanout-caption').textContent).toBe('2 of 5 tasks finished');
    const dots = screen.getAllByRole('listitem').map((dot) => dot.dataset.state);
    expect(dots).toEqual(['SUCCESS', 'SUCCESS', 'STARTED', 'PENDING', 'PENDING']);
    act(() => socket.fire('workflow:update', workflow({ SUCCESS: 4, FAILURE: 1 })));
    expect(screen.getByTestId('fanout').dataset.state).toBe('FAILURE');
    expect(screen.getByTestId('fanout-caption').textContent).toBe('5 of 5 tasks finished, 1 failed');
  });
});

describe('FanoutProgress before its first snapshot', () => {
  it('shows a waiting bar, then a refusal as a warning', () => {
    const { socket } = renderWithClient(<TaskCard id="f2" token="tok" kind="webhooks" createdAt={Date.now()} />);
    expect(screen.getByTestId('fanout').dataset.state).toBe('PENDING');
    expect(screen.getByText('Waiting for the fan-out…')).toBeTruthy();
    const sub = socket.takeEmits('subscribe').find((e) => e.payload.workflow_id === 'f2');
    act(() => sub.ack({ ok: false, error: { code: 'too_many', message: 'workflow has more than 10000 members (--max-workflow-size)' } }));
    expect(screen.getByRole('alert').textContent).toMatch(/Fan-out progress unavailable: workflow has more than 10000 members/);
  });
});
