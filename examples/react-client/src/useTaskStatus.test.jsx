import { StrictMode } from 'react';
import { act, cleanup, render, renderHook, screen } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createTaskSocket, CONNECTION } from './taskSocket.js';
import { createTaskStore } from './taskStore.js';
import { useTaskStatus } from './useTaskStatus.js';
import { useConnection } from './useConnection.js';
import { fakeIo } from './testing/fakeSocket.js';
import { TaskCard } from './components/TaskCard.jsx';

const flush = () => act(async () => { await Promise.resolve(); });

function setup({ connect = true } = {}) {
  const io = fakeIo();
  const client = createTaskSocket({ store: createTaskStore(), io });
  client.configure({ url: 'http://push.test' });
  const socket = io.sockets[0];
  if (connect) act(() => socket.serverConnect());
  return { client, socket, io };
}

const taskState = (id, state, updated_at, extra = {}) => ({
  task_id: id, name: 'workers.tasks.demo_progress', state, updated_at, progress: null, result: null,
  result_format: null, exception: null, exception_type: null, traceback: null, retries: 0, ...extra,
});

afterEach(cleanup);

describe('taskSocket', () => {
  it('connects with websocket only and no token by default', () => {
    const { socket } = setup({ connect: false });
    expect(socket.url).toBe('http://push.test');
    expect(socket.options.transports).toEqual(['websocket']);
    let auth;
    socket.options.auth((value) => { auth = value; });
    expect(auth).toEqual({});
  });

  it('can send a connect-time token (e.g. a dashboard token)', () => {
    const io = fakeIo();
    createTaskSocket({ io }).configure({ url: 'http://push.test', token: () => 'dash' });
    let auth;
    io.sockets[0].options.auth((value) => { auth = value; });
    expect(auth).toEqual({ token: 'dash' });
  });
});

describe('taskSocket.configure', () => {
  it('replaces the connection and keeps the watched tasks', () => {
    const { client, socket, io } = setup();
    client.watch('t1', 'tok');
    socket.takeEmits('subscribe');
    client.configure({ url: 'http://other.test' });
    expect(socket.connected).toBe(false);
    expect(socket.handlers.size).toBe(0); // the old socket no longer feeds the store
    const next = io.sockets[1];
    act(() => next.serverConnect());
    expect(next.takeEmits('subscribe').map((e) => e.payload)).toEqual([{ task_id: 't1', token: 'tok' }]);
  });
});

describe('useTaskStatus', () => {
  it('subscribes on mount with the task token and shows the ack snapshot', () => {
    const { client, socket } = setup();
    const { result } = renderHook(() => useTaskStatus('t1', 'tok-1', { client }));
    expect(result.current).toEqual({ task: null, error: null });
    const [sub] = socket.takeEmits('subscribe');
    expect(sub.payload).toEqual({ task_id: 't1', token: 'tok-1' });
    act(() => sub.ack({ ok: true, tasks: [taskState('t1', 'STARTED', 1)] }));
    expect(result.current.task.state).toBe('STARTED');
  });

  it('follows task:update and ignores updates that would move the task backwards', () => {
    const { client, socket } = setup();
    const { result } = renderHook(() => useTaskStatus('t1', 'tok', { client }));
    act(() => socket.fire('task:update', taskState('t1', 'PROGRESS', 2, { progress: { current: 1, total: 4, percent: 25, message: 'decoded' } })));
    expect(result.current.task.progress.percent).toBe(25);
    act(() => socket.fire('task:update', taskState('t1', 'SUCCESS', 3, { result: 4 })));
    // A late snapshot from the subscribe ack and a late progress event change nothing.
    const [sub] = socket.takeEmits('subscribe');
    act(() => sub.ack({ ok: true, tasks: [taskState('t1', 'STARTED', 1.5)] }));
    act(() => socket.fire('task:update', taskState('t1', 'PROGRESS', 2.5, { progress: { percent: 75 } })));
    expect(result.current.task.state).toBe('SUCCESS');
    expect(result.current.task.result).toBe(4);
    // Updates for tasks nobody watches are dropped.
    act(() => socket.fire('task:update', taskState('other', 'SUCCESS', 1)));
    expect(client.store.has('other')).toBe(false);
  });

  it('subscribes once connected when mounted while still connecting', () => {
    const { client, socket } = setup({ connect: false });
    renderHook(() => useTaskStatus('t1', 'tok', { client }));
    expect(socket.takeEmits('subscribe')).toHaveLength(0);
    act(() => socket.serverConnect());
    expect(socket.takeEmits('subscribe').map((e) => e.payload)).toEqual([{ task_id: 't1', token: 'tok' }]);
  });

  it('re-subscribes every watched task, each with its own token, on every connect', () => {
    const { client, socket } = setup();
    const a = renderHook(() => useTaskStatus('a', 'tok-a', { client }));
    renderHook(() => useTaskStatus('b', 'tok-b', { client }));
    socket.takeEmits('subscribe');

    for (let i = 0; i < 2; i += 1) {
      act(() => socket.serverDisconnect('transport close'));
      // While offline the task finished; the server lost our rooms.
      act(() => socket.serverConnect());
      const subs = socket.takeEmits('subscribe');
      expect(subs.map((e) => e.payload)).toEqual([{ task_id: 'a', token: 'tok-a' }, { task_id: 'b', token: 'tok-b' }]);
      act(() => subs[0].ack({ ok: true, tasks: [taskState('a', i === 0 ? 'PROGRESS' : 'SUCCESS', i + 1)] }));
    }
    expect(a.result.current.task.state).toBe('SUCCESS');
  });

  it('shows a refused subscription and keeps the last known state', () => {
    const { client, socket } = setup();
    const { result } = renderHook(() => useTaskStatus('t1', 'expired', { client }));
    act(() => socket.fire('task:update', taskState('t1', 'PROGRESS', 2)));
    const [sub] = socket.takeEmits('subscribe');
    act(() => sub.ack({ ok: false, error: { code: 'unauthorized', message: 'token has expired' } }));
    expect(result.current.error).toEqual({ code: 'unauthorized', message: 'token has expired' });
    expect(result.current.task.state).toBe('PROGRESS');
  });

  it('unsubscribes and forgets the task when the last watcher unmounts', async () => {
    const { client, socket } = setup();
    const first = renderHook(() => useTaskStatus('t1', 'tok', { client }));
    const second = renderHook(() => useTaskStatus('t1', 'tok', { client }));
    expect(socket.takeEmits('subscribe')).toHaveLength(1); // one subscription for both
    act(() => socket.fire('task:update', taskState('t1', 'STARTED', 1)));
    expect(second.result.current.task.state).toBe('STARTED');

    first.unmount();
    await flush();
    expect(socket.takeEmits('unsubscribe')).toHaveLength(0);
    expect(client.watchedTasks()).toEqual(['t1']);

    second.unmount();
    await flush();
    expect(socket.takeEmits('unsubscribe').map((e) => e.payload)).toEqual([{ task_id: 't1' }]);
    expect(client.watchedTasks()).toEqual([]);
    expect(client.store.has('t1')).toBe(false);
    // Not re-subscribed after a reconnect either.
    act(() => { socket.serverDisconnect(); socket.serverConnect(); });
    expect(socket.takeEmits('subscribe')).toHaveLength(0);
  });

  it('survives StrictMode double effects without unsubscribing', async () => {
    const { client, socket } = setup();
    renderHook(() => useTaskStatus('t1', 'tok', { client }), { wrapper: StrictMode });
    await flush();
    expect(socket.takeEmits('unsubscribe')).toHaveLength(0);
    expect(client.watchedTasks()).toEqual(['t1']);
  });

  it('subscribes again with a new token when the token changes', async () => {
    const { client, socket } = setup();
    const { rerender, result } = renderHook(({ token }) => useTaskStatus('t1', token, { client }), { initialProps: { token: 'old' } });
    const [old] = socket.takeEmits('subscribe');
    rerender({ token: 'new' });
    await flush();
    const subs = socket.takeEmits('subscribe');
    expect(subs.map((e) => e.payload)).toEqual([{ task_id: 't1', token: 'new' }]);
    expect(socket.takeEmits('unsubscribe')).toHaveLength(0);
    // The old call's answer arrives late: ignored.
    act(() => old.ack({ ok: false, error: { code: 'unauthorized', message: 'token has expired' } }));
    expect(result.current.error).toBeNull();
    act(() => subs[0].ack({ ok: true, tasks: [taskState('t1', 'SUCCESS', 2)] }));
    expect(result.current.task.state).toBe('SUCCESS');
  });
});

describe('useConnection', () => {
  it('reports connecting, connected, reconnecting and offline', () => {
    const { client, socket } = setup({ connect: false });
    const { result } = renderHook(() => useConnection({ client }));
    expect(result.current.status).toBe(CONNECTION.CONNECTING);
    act(() => socket.serverConnect());
    expect(result.current.status).toBe(CONNECTION.CONNECTED);
    act(() => socket.serverDisconnect('transport close'));
    expect(result.current.status).toBe(CONNECTION.RECONNECTING);
    act(() => socket.fire('connect_error', new Error('websocket error')));
    expect(result.current).toEqual({ status: CONNECTION.RECONNECTING, error: 'websocket error' });
    act(() => window.dispatchEvent(new Event('offline')));
    expect(result.current.status).toBe(CONNECTION.OFFLINE);
    act(() => window.dispatchEvent(new Event('online')));
    expect(result.current.status).toBe(CONNECTION.RECONNECTING);
    act(() => socket.serverConnect());
    expect(result.current.status).toBe(CONNECTION.CONNECTED);
  });

  it('reconnects by itself after the server closed the socket', () => {
    const { socket } = setup();
    vi.useFakeTimers();
    try {
      act(() => socket.serverDisconnect('io server disconnect'));
      vi.advanceTimersByTime(1000);
      expect(socket.connectCalls).toBe(1);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('TaskCard', () => {
  it('renders progress, then the result, from live updates', () => {
    const { client, socket } = setup();
    render(<TaskCard id="t1" token="tok" kind="resize-image" createdAt={Date.now()} client={client} />);
    expect(screen.getByTestId('state-badge').dataset.state).toBe('PENDING');
    act(() => socket.fire('task:update', taskState('t1', 'PROGRESS', 2, { progress: { current: 2, total: 5, percent: 40, message: 'resized to 640x400' } })));
    expect(screen.getByRole('progressbar').getAttribute('aria-valuenow')).toBe('40');
    expect(screen.getByTestId('progress-message').textContent).toBe('resized to 640x400');
    expect(screen.getByTestId('progress-percent').textContent).toBe('40%');
    act(() => socket.fire('task:update', taskState('t1', 'SUCCESS', 3, {
      result: { path: '/media/x.jpg', width: 640, height: 400, bytes: 2048 }, result_format: 'json', runtime: 1.25,
    })));
    expect(screen.getByTestId('task-card').dataset.state).toBe('SUCCESS');
    expect(screen.getByTestId('state-badge').textContent).toBe('Succeeded');
    expect(screen.getByTestId('result').textContent).toContain('Image resized to 640 × 400 px');
    expect(screen.getByTestId('progress-percent').textContent).toBe('100%');
  });

  it('shows a failure with its exception and traceback', () => {
    const { client, socket } = setup();
    render(<TaskCard id="t1" token="tok" kind="fail" createdAt={Date.now()} client={client} />);
    act(() => socket.fire('task:update', taskState('t1', 'FAILURE', 3, {
      exception: "RuntimeError('Disk quota exceeded')", exception_type: 'RuntimeError',
      traceback: 'Traceback (most recent call last):\n  ...',
    })));
    const error = screen.getByTestId('error');
    expect(error.querySelector('code').textContent).toBe('RuntimeError');
    expect(error.querySelector('.outcome__message').textContent).toBe('RuntimeError: Disk quota exceeded');
    expect(screen.getByText('Traceback')).toBeTruthy();
  });
});
