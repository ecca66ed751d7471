import { StrictMode } from 'react';
import type { ReactNode } from 'react';
import { act, cleanup, render, renderHook, screen } from '@testing-library/react';
import { afterEach, describe, expect, it } from 'vitest';
import { createTaskClient } from '@celery-pushserver/client';
import type { TaskClient } from '@celery-pushserver/client';
import { TaskClientProvider, useConnection, useTaskClient, useTaskStatus, useWorkflowStatus } from '../src/index.js';
import { FakeSocket, flush, taskState } from '../../client/test/unit/fakeSocket.js';

function setup({ connect = true, getToken }: { connect?: boolean; getToken?: (id: string) => string } = {}) {
  const socket = new FakeSocket();
  if (connect) socket.connected = true;
  const client = createTaskClient({ socket: socket.asSocket(), getToken });
  const wrapper = ({ children }: { children?: ReactNode }) => <TaskClientProvider client={client}>{children}</TaskClientProvider>;
  return { client, socket, wrapper };
}

const settle = () => act(async () => { await flush(); });

afterEach(cleanup);

describe('useTaskStatus', () => {
  it('subscribes on mount with the task token and shows the ack snapshot', () => {
    const { socket, wrapper } = setup();
    const { result } = renderHook(() => useTaskStatus('t1', { token: 'tok-1' }), { wrapper });
    expect(result.current).toEqual({ task: null, error: null });
    const [sub] = socket.takeEmits('subscribe');
    expect(sub!.payload).toEqual({ task_id: 't1', token: 'tok-1' });
    act(() => sub!.ack({ ok: true, tasks: [taskState('t1', 'STARTED', 1)] }));
    expect(result.current.task?.state).toBe('STARTED');
  });

  it('follows task:update and ignores updates that would move the task backwards', () => {
    const { socket, wrapper } = setup();
    const { result } = renderHook(() => useTaskStatus('t1', { token: 'tok' }), { wrapper });
    act(() => socket.fire('task:update', taskState('t1', 'PROGRESS', 2, { progress: { current: 1, total: 4, percent: 25, message: 'decoded' } })));
    expect(result.current.task?.progress?.percent).toBe(25);
    act(() => socket.fire('task:update', taskState('t1', 'SUCCESS', 3, { result: 4 })));
    const [sub] = socket.takeEmits('subscribe');
    act(() => sub!.ack({ ok: true, tasks: [taskState('t1', 'STARTED', 1.5)] }));
    act(() => socket.fire('task:update', taskState('t1', 'PROGRESS', 2.5, { progress: { percent: 75 } })));
    expect(result.current.task?.state).toBe('SUCCESS');
    expect(result.current.task?.result).toBe(4);
  });

  it('re-subscribes after every reconnect and catches up from the snapshot', () => {
    const { socket, wrapper } = setup();
    const { result } = renderHook(() => useTaskStatus('a', { token: 'tok-a' }), { wrapper });
    socket.takeEmits('subscribe');
    for (const state of ['PROGRESS', 'SUCCESS']) {
      act(() => socket.serverDisconnect('transport close'));
      act(() => socket.serverConnect());
      const subs = socket.takeEmits('subscribe');
      expect(subs.map((e) => e.payload)).toEqual([{ task_id: 'a', token: 'tok-a' }]);
      act(() => subs[0]!.ack({ ok: true, tasks: [taskState('a', state, state === 'SUCCESS' ? 2 : 1)] }));
    }
    expect(result.current.task?.state).toBe('SUCCESS');
  });

  it('shows a refused subscription and keeps the last known state', () => {
    const { socket, wrapper } = setup();
    const { result } = renderHook(() => useTaskStatus('t1', { token: 'expired' }), { wrapper });
    act(() => socket.fire('task:update', taskState('t1', 'PROGRESS', 2)));
    act(() => socket.takeEmits('subscribe')[0]!.ack({ ok: false, error: { code: 'forbidden', message: 'token does not name task t1' } }));
    expect(result.current.error).toEqual({ code: 'forbidden', message: 'token does not name task t1' });
    expect(result.current.task?.state).toBe('PROGRESS');
  });

  it('refreshes an expired token through the client getToken without a re-render from the app', async () => {
    const { socket, wrapper } = setup({ getToken: (id) => `fresh-${id}` });
    const { result } = renderHook(() => useTaskStatus('t1', { token: 'first' }), { wrapper });
    act(() => socket.takeEmits('subscribe')[0]!.ack({ ok: true, tasks: [taskState('t1', 'PROGRESS', 1)] }));
    act(() => socket.fire('pushserver:error', { code: 'token_expired', task_ids: ['t1'], message: 'token expired' }));
    await settle();
    const [again] = socket.takeEmits('subscribe');
    expect(again!.payload).toEqual({ task_id: 't1', token: 'fresh-t1' });
    act(() => again!.ack({ ok: true, tasks: [taskState('t1', 'SUCCESS', 3)] }));
    expect(result.current).toMatchObject({ task: { state: 'SUCCESS' }, error: null });
  });

  it('unsubscribes when the last watcher unmounts, and one subscription serves several', async () => {
    const { client, socket, wrapper } = setup();
    const first = renderHook(() => useTaskStatus('t1', { token: 'tok' }), { wrapper });
    const second = renderHook(() => useTaskStatus('t1', { token: 'tok' }), { wrapper });
    expect(socket.takeEmits('subscribe')).toHaveLength(1);
    act(() => socket.fire('task:update', taskState('t1', 'STARTED', 1)));
    expect(second.result.current.task?.state).toBe('STARTED');
    first.unmount();
    await settle();
    expect(socket.takeEmits('unsubscribe')).toHaveLength(0);
    second.unmount();
    await settle();
    expect(socket.takeEmits('unsubscribe').map((e) => e.payload)).toEqual([{ task_id: 't1' }]);
    expect(client.watchedTasks()).toEqual([]);
  });

  it('survives StrictMode double effects without unsubscribing', async () => {
    const { client, socket, wrapper } = setup();
    const strict = ({ children }: { children?: ReactNode }) => <StrictMode>{wrapper({ children })}</StrictMode>;
    renderHook(() => useTaskStatus('t1', { token: 'tok' }), { wrapper: strict });
    await settle();
    expect(socket.takeEmits('unsubscribe')).toHaveLength(0);
    expect(client.watchedTasks()).toEqual(['t1']);
  });

  it('subscribes again when the token changes, without unsubscribing', async () => {
    const { socket, wrapper } = setup();
    const { rerender, result } = renderHook(({ token }) => useTaskStatus('t1', { token }), { wrapper, initialProps: { token: 'old' } });
    const [old] = socket.takeEmits('subscribe');
    rerender({ token: 'new' });
    await settle();
    const subs = socket.takeEmits('subscribe');
    expect(subs.map((e) => e.payload)).toEqual([{ task_id: 't1', token: 'new' }]);
    expect(socket.takeEmits('unsubscribe')).toHaveLength(0);
    act(() => old!.ack({ ok: false, error: { code: 'unauthorized', message: 'token has expired' } }));
    expect(result.current.error).toBeNull();
    act(() => subs[0]!.ack({ ok: true, tasks: [taskState('t1', 'SUCCESS', 2)] }));
    expect(result.current.task?.state).toBe('SUCCESS');
  });

  it('watches nothing for a null task id', () => {
    const { socket, wrapper } = setup();
    const { result } = renderHook(() => useTaskStatus(null), { wrapper });
    expect(result.current).toEqual({ task: null, error: null });
    expect(socket.takeEmits('subscribe')).toHaveLength(0);
  });
});

describe('useConnection', () => {
  it('reports connecting, connected and offline', () => {
    const { socket, wrapper } = setup({ connect: false });
    const { result } = renderHook(() => useConnection(), { wrapper });
    expect(result.current.status).toBe('connecting');
    act(() => socket.serverConnect());
    expect(result.current.status).toBe('connected');
    act(() => socket.serverDisconnect('transport close'));
    expect(result.current).toEqual({ status: 'connecting', error: 'transport close' });
    act(() => window.dispatchEvent(new Event('offline')));
    expect(result.current.status).toBe('offline');
    act(() => window.dispatchEvent(new Event('online')));
    expect(result.current.status).toBe('connecting');
    act(() => socket.serverConnect());
    expect(result.current.status).toBe('connected');
  });
});

describe('TaskClientProvider', () => {
  it('hands its client to useTaskClient, and the hooks explain a missing provider', () => {
    const { client, wrapper } = setup();
    expect(renderHook(() => useTaskClient(), { wrapper }).result.current).toBe(client);
    expect(() => renderHook(() => useTaskStatus('t1'))).toThrow(/TaskClientProvider/);
  });

  it('creates a client from url and options, uses the latest getToken, and closes it on unmount', async () => {
    const socket = new FakeSocket();
    socket.connected = true;
    let seen: TaskClient | undefined;
    function Probe({ id }: { id: string }) {
      seen = useTaskClient();
      const { task } = useTaskStatus(id);
      return <p data-testid="state">{task?.state ?? 'none'}</p>;
    }
    const app = (prefix: string) => (
      <StrictMode>
        <TaskClientProvider url="http://push.test" socket={socket.asSocket()} getToken={(id) => `${prefix}-${id}`}>
          <Probe id="t1" />
        </TaskClientProvider>
      </StrictMode>
    );
    const view = render(app('v1'));
    await settle();
    const first = seen;
    view.rerender(app('v2'));
    expect(seen).toBe(first); // one client for the provider's life
    // An expiry after the re-render asks the newest getToken.
    act(() => socket.fire('pushserver:error', { code: 'token_expired', task_ids: ['t1'], message: 'expired' }));
    await settle();
    const tokens = socket.takeEmits('subscribe').map((e) => e.payload.token);
    expect(tokens.at(-1)).toBe('v2-t1');
    act(() => socket.takeEmits('subscribe'));
    view.unmount();
    await settle();
    expect(socket.handlerCount).toBe(0); // closed
    expect(screen.queryByTestId('state')).toBeNull();
  });
});

describe('useWorkflowStatus', () => {
  const state = (completed: number, total = 2) => ({
    workflow_id: 'g1', kind: 'group', state: completed === total ? 'SUCCESS' : 'STARTED', total,
    counts: { SUCCESS: completed, STARTED: total - completed }, completed, failed: 0,
    percent: (100 * completed) / total, task_ids: ['a', 'b'], updated_at: completed,
  });

  it('subscribes to the workflow on mount, follows workflow:update and unsubscribes on unmount', async () => {
    const { socket, wrapper } = setup();
    const { result, unmount } = renderHook(() => useWorkflowStatus('g1', { token: 'tok-g' }), { wrapper });
    expect(result.current).toEqual({ workflow: null, error: null });
    const [sub] = socket.takeEmits('subscribe');
    expect(sub!.payload).toEqual({ workflow_id: 'g1', token: 'tok-g' });
    act(() => sub!.ack({ ok: true, workflows: [state(1)] }));
    expect(result.current.workflow?.percent).toBe(50);
    act(() => socket.fire('workflow:update', state(2)));
    expect(result.current.workflow?.state).toBe('SUCCESS');
    unmount();
    await settle();
    expect(socket.takeEmits('unsubscribe').map((e) => e.payload)).toEqual([{ workflow_id: 'g1' }]);
  });

  it('shows a refusal and watches nothing for a null id', () => {
    const { socket, wrapper } = setup();
    const { result } = renderHook(() => useWorkflowStatus('g1', { token: 'bad' }), { wrapper });
    act(() => socket.takeEmits('subscribe')[0]!.ack({ ok: false, error: { code: 'forbidden', message: 'no' } }));
    expect(result.current.error).toEqual({ code: 'forbidden', message: 'no' });
    const none = renderHook(() => useWorkflowStatus(null), { wrapper });
    expect(none.result.current).toEqual({ workflow: null, error: null });
    expect(socket.takeEmits('subscribe')).toHaveLength(0);
  });
});
