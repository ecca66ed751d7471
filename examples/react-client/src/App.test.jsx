import { act, cleanup, fireEvent, render, screen, waitFor } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createTaskClient } from '@celery-pushserver/client';
import { TaskClientProvider } from '@celery-pushserver/react';
import App from './App.jsx';
import { ApiError } from './api.js';
import { FakeSocket } from './testing/fakeSocket.js';

const ADA = { id: 'u1', username: 'ada' };

function fakeApi(overrides = {}) {
  return {
    currentUser: vi.fn().mockResolvedValue(ADA),
    signIn: vi.fn().mockResolvedValue(ADA),
    register: vi.fn().mockResolvedValue(ADA),
    signOut: vi.fn().mockResolvedValue(undefined),
    startTask: vi.fn(),
    listTasks: vi.fn().mockResolvedValue([]),
    latestReport: vi.fn().mockResolvedValue(null),
    ...overrides,
  };
}

function renderApp(api, { getToken } = {}) {
  const socket = new FakeSocket();
  const client = createTaskClient({ socket, getToken });
  const view = render(<TaskClientProvider client={client}><App api={api} /></TaskClientProvider>);
  return { ...view, socket, client };
}

function fillSignIn(username, password) {
  fireEvent.change(screen.getByLabelText('Username'), { target: { value: username } });
  fireEvent.change(screen.getByLabelText('Password'), { target: { value: password } });
}

afterEach(cleanup);

describe('App', () => {
  it('asks for a sign-in without a session, then shows the console', async () => {
    const api = fakeApi({ currentUser: vi.fn().mockResolvedValue(null) });
    renderApp(api);
    expect(await screen.findByTestId('sign-in')).toBeTruthy();
    fillSignIn('ada', 'correct horse');
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Sign in' })));
    expect(api.signIn).toHaveBeenCalledWith('ada', 'correct horse');
    expect(screen.getByTestId('signed-in-as').textContent).toBe('ada');
    expect(screen.getByText('No tasks yet')).toBeTruthy();
  });

  it('creates an account with the second button, and says when the name is taken', async () => {
    const api = fakeApi({
      currentUser: vi.fn().mockResolvedValue(null),
      register: vi.fn().mockRejectedValueOnce(new ApiError(409, 'conflict', 'username taken')).mockResolvedValueOnce(ADA),
    });
    renderApp(api);
    await screen.findByTestId('sign-in');
    fillSignIn('ada', 'correct horse');
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Create account' })));
    expect(screen.getByRole('alert').textContent).toMatch(/username is taken/);
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Create account' })));
    expect(api.register).toHaveBeenCalledTimes(2);
    expect(api.signIn).not.toHaveBeenCalled();
    expect(screen.getByTestId('signed-in-as').textContent).toBe('ada');
  });

  it('checks the credentials before sending them', async () => {
    const api = fakeApi({ currentUser: vi.fn().mockResolvedValue(null) });
    renderApp(api);
    await screen.findByTestId('sign-in');
    fillSignIn('ada', 'short');
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Sign in' })));
    expect(screen.getByRole('alert').textContent).toMatch(/at least 8 characters/);
    expect(api.signIn).not.toHaveBeenCalled();
  });

  it('starts a task from a form, lists it newest first, and subscribes with its token', async () => {
    const api = fakeApi({
      startTask: vi.fn()
        .mockResolvedValueOnce({ task_id: 'aaaaaaaa-1', token: 'tok-1' })
        .mockResolvedValueOnce({ task_id: 'bbbbbbbb-2', token: 'tok-2' }),
    });
    const { socket } = renderApp(api);
    act(() => socket.serverConnect());
    await screen.findByText('No tasks yet');

    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Resize image' })));
    expect(api.startTask).toHaveBeenCalledWith('resize-image', { width: 640, watermark: 'celery-pushserver', steps_delay: 0.5 });
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Classify' })));
    expect(api.startTask).toHaveBeenLastCalledWith('predict', { features: [5.1, 3.5, 1.4, 0.2] });

    const cards = await screen.findAllByTestId('task-card');
    expect(cards.map((c) => c.dataset.kind)).toEqual(['predict', 'resize-image']);
    expect(cards[1].dataset.state).toBe('PENDING');
    expect(socket.takeEmits('subscribe').map((e) => e.payload)).toEqual([
      { task_id: 'aaaaaaaa-1', token: 'tok-1' }, { task_id: 'bbbbbbbb-2', token: 'tok-2' },
    ]);

    fireEvent.click(screen.getByRole('button', { name: 'Remove Iris classification from the list' }));
    expect(screen.getAllByTestId('task-card')).toHaveLength(1);
  });

  it("lists the user's tasks from the server after a reload, and subscribes with a token from Express", async () => {
    const api = fakeApi({
      listTasks: vi.fn().mockResolvedValue([
        { id: 'cccccccc-3', kind: 'predict', task: 'workers.tasks.predict', args_summary: '[1, 2, 3, 4]', state: 'STARTED', created_at: '2026-11-30T07:00:02.000Z' },
        { id: 'dddddddd-4', kind: 'welcome-email', task: 'workers.tasks.send_welcome_email', args_summary: '"u1"', state: 'SUCCESS', created_at: '2026-11-30T07:00:01.000Z' },
      ]),
    });
    const getToken = vi.fn(async (taskId) => `fresh-${taskId}`);
    const { socket } = renderApp(api, { getToken });
    act(() => socket.serverConnect());
    const cards = await screen.findAllByTestId('task-card');
    expect(cards.map((c) => c.dataset.taskId)).toEqual(['cccccccc-3', 'dddddddd-4']);
    expect(cards.map((c) => c.dataset.kind)).toEqual(['predict', 'welcome-email']);
    await waitFor(() => expect(getToken).toHaveBeenCalledTimes(2));
    await waitFor(() => expect(socket.takeEmits('subscribe').map((e) => e.payload)).toEqual([
      { task_id: 'cccccccc-3', token: 'fresh-cccccccc-3' }, { task_id: 'dddddddd-4', token: 'fresh-dddddddd-4' },
    ]));
    // Hiding a card is for this page: nothing is deleted on the server.
    fireEvent.click(screen.getByRole('button', { name: 'Remove Welcome email from the list' }));
    expect(screen.getAllByTestId('task-card')).toHaveLength(1);
  });

  it('shows the latest nightly report', async () => {
    const api = fakeApi({
      latestReport: vi.fn().mockResolvedValue({
        generated_at: '2026-11-30T00:00:00.000Z', total: 5, archived: 12,
        counts: [{ task: 'workers.tasks.fail', state: 'FAILURE', count: 2 }, { task: 'workers.tasks.predict', state: 'SUCCESS', count: 3 }],
      }),
    });
    renderApp(api);
    const summary = await screen.findByTestId('report-summary');
    expect(summary.textContent).toMatch(/^5 tasks in the day before .*; 12 old records archived\.$/);
    const rows = screen.getByTestId('nightly-report').querySelectorAll('tbody tr');
    expect([...rows].map((r) => [...r.cells].map((c) => c.textContent))).toEqual([['fail', 'FAILURE', '2'], ['predict', 'SUCCESS', '3']]);
  });

  it('says when there is no nightly report yet, or the list cannot be loaded', async () => {
    const api = fakeApi({ listTasks: vi.fn().mockRejectedValue(new ApiError(503, 'database_unavailable', 'The database is unavailable right now. Try again in a few seconds.')) });
    renderApp(api);
    expect(await screen.findByText(/No report yet/)).toBeTruthy();
    expect((await screen.findByText(/Could not load your tasks/)).textContent).toMatch(/database is unavailable/);
  });

  it('shows why a task could not be started', async () => {
    const api = fakeApi({ startTask: vi.fn().mockRejectedValue(new ApiError(503, 'broker_unavailable', 'The task queue is unavailable right now. Try again in a few seconds.')) });
    renderApp(api);
    await screen.findByText('No tasks yet');
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Run failing task' })));
    await waitFor(() => expect(screen.getByRole('alert').textContent).toMatch(/task queue is unavailable/));
    expect(screen.queryAllByTestId('task-card')).toHaveLength(0);
  });

  it('goes back to the sign-in form when the session has ended', async () => {
    const api = fakeApi({ startTask: vi.fn().mockRejectedValue(new ApiError(401, 'unauthorized', 'sign in first')) });
    renderApp(api);
    await screen.findByText('No tasks yet');
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Classify' })));
    expect(await screen.findByTestId('sign-in')).toBeTruthy();
    expect(screen.getByText('Your session has ended: sign in again.')).toBeTruthy();
  });

  it('checks task inputs before sending', async () => {
    const api = fakeApi();
    renderApp(api);
    const width = await screen.findByLabelText('Width (px)');
    fireEvent.change(width, { target: { value: '0' } });
    await act(async () => fireEvent.click(screen.getByRole('button', { name: 'Resize image' })));
    expect(screen.getByRole('alert').textContent).toMatch(/Width must be a whole number/);
    expect(api.startTask).not.toHaveBeenCalled();
  });
});
