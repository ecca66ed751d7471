import { afterEach, describe, expect, it, vi } from 'vitest';
import { createTaskClient } from '../../src/client.js';
import type { TaskClientOptions } from '../../src/client.js';
import { ClientClosedError, ForbiddenError, TaskClientError, UnauthorizedError, WaitTimeoutError } from '../../src/errors.js';
import type { ConnectionInfo, TaskProblem, TaskState } from '../../src/types.js';
import { FakeSocket, flush, taskState } from './fakeSocket.js';

function setup({ connect = true, ...options }: Partial<TaskClientOptions> & { connect?: boolean } = {}) {
  const socket = new FakeSocket();
  if (connect) socket.connected = true;
  const client = createTaskClient({ socket: socket.asSocket(), ...options });
  return { client, socket };
}

afterEach(() => vi.useRealTimers());

describe('createTaskClient', () => {
  it('creates its own WebSocket-only socket that sends the connection token', async () => {
    const client = createTaskClient({ url: 'http://127.0.0.1:9', token: () => 'dash', socketOptions: { autoConnect: false } });
    const opts = (client.socket.io as unknown as { opts: Record<string, any> }).opts;
    expect(opts.transports).toEqual(['websocket']);
    const auth = await new Promise((resolve) => (client.socket as any).auth(resolve));
    expect(auth).toEqual({ token: 'dash' });
    client.close();
  });

  it('needs a url or a socket', () => {
    expect(() => createTaskClient({})).toThrow(/url/);
  });
});

describe('watch', () => {
  it('subscribes with the task token and gives the listener the snapshot, then every update', () => {
    const { client, socket } = setup();
    const seen: string[] = [];
    client.watch('t1', (task) => seen.push(task.state), { token: 'tok-1' });
    const [sub] = socket.takeEmits('subscribe');
    expect(sub!.payload).toEqual({ task_id: 't1', token: 'tok-1' });
    sub!.ack({ ok: true, tasks: [taskState('t1', 'STARTED', 1)] });
    socket.fire('task:update', taskState('t1', 'PROGRESS', 2, { progress: { percent: 50 } }));
    socket.fire('task:update', taskState('t1', 'SUCCESS', 3, { result: 4 }));
    expect(seen).toEqual(['STARTED', 'PROGRESS', 'SUCCESS']);
    expect(client.state('t1')?.result).toBe(4);
  });

  it('never moves a task backwards: late snapshots and late progress change nothing', () => {
    const { client, socket } = setup();
    const seen: string[] = [];
    client.watch('t1', (task) => seen.push(task.state), { token: 'tok' });
    socket.fire('task:update', taskState('t1', 'SUCCESS', 3, { result: 4 }));
    const [sub] = socket.takeEmits('subscribe');
    sub!.ack({ ok: true, tasks: [taskState('t1', 'STARTED', 1.5)] });
    socket.fire('task:update', taskState('t1', 'PROGRESS', 2.5));
    expect(seen).toEqual(['SUCCESS']);
    expect(client.state('t1')?.state).toBe('SUCCESS');
    // Updates of tasks nobody watches are dropped.
    socket.fire('task:update', taskState('other', 'SUCCESS', 1));
    expect(client.state('other')).toBeUndefined();
  });

  it('subscribes once connected when watched while still connecting', () => {
    const { client, socket } = setup({ connect: false });
    client.watch('t1', undefined, { token: 'tok' });
    expect(socket.takeEmits('subscribe')).toHaveLength(0);
    expect(client.connection.status).toBe('connecting');
    socket.serverConnect();
    expect(socket.takeEmits('subscribe').map((e) => e.payload)).toEqual([{ task_id: 't1', token: 'tok' }]);
  });

  it('re-subscribes every watched task, each with its own token, on every connect', () => {
    const { client, socket } = setup();
    const states: string[] = [];
    client.watch('a', (t) => states.push(t.state), { token: 'tok-a' });
    client.watch('b', undefined, { token: 'tok-b' });
    socket.takeEmits('subscribe');
    for (let i = 0; i < 3; i += 1) {
      socket.serverDisconnect('transport close');
      expect(client.connection.status).toBe('connecting');
      socket.serverConnect();
      const subs = socket.takeEmits('subscribe');
      expect(subs.map((e) => e.payload)).toEqual([{ task_id: 'a', token: 'tok-a' }, { task_id: 'b', token: 'tok-b' }]);
      // While away the task moved on; the snapshot fills the gap.
      subs[0]!.ack({ ok: true, tasks: [taskState('a', ['STARTED', 'PROGRESS', 'SUCCESS'][i]!, i + 1)] });
    }
    expect(states).toEqual(['STARTED', 'PROGRESS', 'SUCCESS']);
  });

  it('shares one subscription between watchers and unsubscribes after the last one stops', async () => {
    const { client, socket } = setup();
    const stopA = client.watch('t1', undefined, { token: 'tok' });
    const stopB = client.watch('t1', undefined, { token: 'tok' });
    expect(socket.takeEmits('subscribe')).toHaveLength(1);
    stopA();
    stopA(); // twice is harmless
    await flush();
    expect(socket.takeEmits('unsubscribe')).toHaveLength(0);
    stopB();
    await flush();
    expect(socket.takeEmits('unsubscribe').map((e) => e.payload)).toEqual([{ task_id: 't1' }]);
    expect(client.watchedTasks()).toEqual([]);
    socket.serverDisconnect();
    socket.serverConnect();
    expect(socket.takeEmits('subscribe')).toHaveLength(0);
  });

  it('does not unsubscribe when a watcher stops and another starts in the same tick (React StrictMode)', async () => {
    const { client, socket } = setup();
    const stop = client.watch('t1', undefined, { token: 'tok' });
    stop();
    client.watch('t1', undefined, { token: 'tok' });
    await flush();
    expect(socket.takeEmits('unsubscribe')).toHaveLength(0);
    expect(socket.takeEmits('subscribe')).toHaveLength(1);
    expect(client.watchedTasks()).toEqual(['t1']);
  });

  it('starts a new watcher from the state already known', async () => {
    const { client, socket } = setup();
    client.watch('t1', undefined, { token: 'tok' });
    socket.takeEmits('subscribe')[0]!.ack({ ok: true, tasks: [taskState('t1', 'PROGRESS', 2)] });
    const listener = vi.fn();
    client.watch('t1', listener);
    expect(listener).not.toHaveBeenCalled();
    await flush();
    expect(listener).toHaveBeenCalledTimes(1);
    expect(listener.mock.calls[0]![0].state).toBe('PROGRESS');
  });

  it('subscribes again with a new token from the caller and ignores the old answer', () => {
    const { client, socket } = setup();
    const errors: TaskProblem[] = [];
    client.watch('t1', undefined, { token: 'old', onError: (p) => errors.push(p) });
    const [old] = socket.takeEmits('subscribe');
    client.watch('t1', undefined, { token: 'new' });
    const subs = socket.takeEmits('subscribe');
    expect(subs.map((e) => e.payload)).toEqual([{ task_id: 't1', token: 'new' }]);
    old!.ack({ ok: false, error: { code: 'unauthorized', message: 'token has expired' } });
    expect(errors).toEqual([]);
    subs[0]!.ack({ ok: true, tasks: [taskState('t1', 'SUCCESS', 2)] });
    expect(client.state('t1')?.state).toBe('SUCCESS');
  });

  it('asks again when a subscribe gets no answer in time', () => {
    vi.useFakeTimers();
    const { client, socket } = setup();
    client.watch('t1', undefined, { token: 'tok' });
    socket.takeEmits('subscribe')[0]!.timeout();
    expect(socket.takeEmits('subscribe')).toHaveLength(0);
    vi.advanceTimersByTime(1000);
    expect(socket.takeEmits('subscribe').map((e) => e.payload)).toEqual([{ task_id: 't1', token: 'tok' }]);
    client.close();
  });

  it('reports a refused subscription to onError and keeps the last known state', () => {
    const { client, socket } = setup();
    const errors: TaskProblem[] = [];
    client.watch('t1', undefined, { token: 'tok', onError: (p) => errors.push(p) });
    socket.fire('task:update', taskState('t1', 'PROGRESS', 2));
    socket.takeEmits('subscribe')[0]!.ack({ ok: false, error: { code: 'forbidden', message: 'token does not name task t1' } });
    expect(errors).toEqual([{ code: 'forbidden', message: 'token does not name task t1' }]);
    expect(client.record('t1').error?.code).toBe('forbidden');
    expect(client.record('t1').task?.state).toBe('PROGRESS');
  });
});

describe('getToken', () => {
  it('is asked for the token of a task watched without one, and may be async', async () => {
    const getToken = vi.fn(async (id: string) => `tok-for-${id}`);
    const { client, socket } = setup({ getToken });
    client.watch('t1');
    await flush();
    expect(getToken).toHaveBeenCalledWith('t1');
    expect(socket.takeEmits('subscribe').map((e) => e.payload)).toEqual([{ task_id: 't1', token: 'tok-for-t1' }]);
    // A reconnect reuses the token it got, without asking again.
    socket.serverDisconnect();
    socket.serverConnect();
    await flush();
    expect(socket.takeEmits('subscribe').map((e) => e.payload)).toEqual([{ task_id: 't1', token: 'tok-for-t1' }]);
    expect(getToken).toHaveBeenCalledTimes(1);
  });

  it('is not asked when the connection carries a token', async () => {
    const getToken = vi.fn(() => 'x');
    const { client, socket } = setup({ getToken, token: 'dashboard' });
    client.watch('t1');
    await flush();
    expect(getToken).not.toHaveBeenCalled();
    expect(socket.takeEmits('subscribe').map((e) => e.payload)).toEqual([{ task_id: 't1' }]);
  });

  it('refreshes the token on `unauthorized` and subscribes again with it', async () => {
    const getToken = vi.fn(() => 'fresh');
    const { client, socket } = setup({ getToken });
    const errors: TaskProblem[] = [];
    client.watch('t1', undefined, { token: 'expired', onError: (p) => errors.push(p) });
    socket.takeEmits('subscribe')[0]!.ack({ ok: false, error: { code: 'unauthorized', message: 'token has expired' } });
    await flush();
    expect(getToken).toHaveBeenCalledWith('t1');
    const [retry] = socket.takeEmits('subscribe');
    expect(retry!.payload).toEqual({ task_id: 't1', token: 'fresh' });
    retry!.ack({ ok: true, tasks: [taskState('t1', 'SUCCESS', 5)] });
    expect(errors).toEqual([]);
    expect(client.state('t1')?.state).toBe('SUCCESS');
  });

  it('gives up when the fresh token is refused too: wait rejects with UnauthorizedError', async () => {
    const getToken = vi.fn(() => 'also-bad');
    const { client, socket } = setup({ getToken });
    const result = client.wait('t1', { token: 'expired' });
    socket.takeEmits('subscribe')[0]!.ack({ ok: false, error: { code: 'unauthorized', message: 'token has expired' } });
    await flush();
    socket.takeEmits('subscribe')[0]!.ack({ ok: false, error: { code: 'unauthorized', message: 'token signature is invalid' } });
    await expect(result).rejects.toBeInstanceOf(UnauthorizedError);
    await expect(result).rejects.toMatchObject({ code: 'unauthorized', taskId: 't1', message: 'token signature is invalid' });
    expect(getToken).toHaveBeenCalledTimes(1);
    expect(socket.takeEmits('subscribe')).toHaveLength(0);
  });

  it('records a getToken failure as the task error', async () => {
    const { client } = setup({ getToken: () => Promise.reject(new Error('HTTP 404')) });
    const result = client.wait('t1');
    await expect(result).rejects.toMatchObject({ name: 'UnauthorizedError', message: 'getToken failed: HTTP 404' });
  });

  it('on token_expired: gets a new token, subscribes again, and the snapshot brings the final state', async () => {
    let n = 0;
    const getToken = vi.fn(() => `tok-${(n += 1)}`);
    const { client, socket } = setup({ getToken });
    const seen: string[] = [];
    client.watch('t1', (t) => seen.push(t.state));
    client.watch('t2', undefined, { token: 'keep' });
    await flush();
    const first = socket.takeEmits('subscribe');
    first[0]!.ack({ ok: true, tasks: [taskState('t1', 'PROGRESS', 1)] });
    // The server dropped t1 from its room; the task finished meanwhile.
    socket.fire('pushserver:error', { code: 'token_expired', task_ids: ['t1', 'unknown'], message: 'token expired' });
    await flush();
    const again = socket.takeEmits('subscribe');
    expect(again.map((e) => e.payload)).toEqual([{ task_id: 't1', token: 'tok-2' }]);
    again[0]!.ack({ ok: true, tasks: [taskState('t1', 'SUCCESS', 3)] });
    expect(seen).toEqual(['PROGRESS', 'SUCCESS']);
    expect(client.record('t1').error).toBeNull();
  });

  it('without getToken, token_expired is a task error and wait rejects', async () => {
    const { client, socket } = setup();
    const result = client.wait('t1', { token: 'short-lived' });
    socket.takeEmits('subscribe')[0]!.ack({ ok: true, tasks: [taskState('t1', 'STARTED', 1)] });
    socket.fire('pushserver:error', { code: 'token_expired', task_ids: ['t1'], message: 'the token for these tasks has expired' });
    await expect(result).rejects.toMatchObject({ name: 'UnauthorizedError', code: 'token_expired' });
  });

  it('ignores other pushserver:error payloads and malformed ones', async () => {
    const getToken = vi.fn(() => 'x');
    const { client, socket } = setup({ getToken });
    client.watch('t1', undefined, { token: 'tok' });
    socket.takeEmits('subscribe');
    socket.fire('pushserver:error', { code: 'too_many', message: 'slow down' });
    socket.fire('pushserver:error', null);
    socket.fire('pushserver:error', { code: 'token_expired', task_ids: 't1' });
    await flush();
    expect(getToken).not.toHaveBeenCalled();
    expect(socket.takeEmits('subscribe')).toHaveLength(0);
  });
});

describe('wait', () => {
  it('resolves at once for a task already known finished, without subscribing', async () => {
    const { client, socket } = setup();
    const stop = client.watch('t1', undefined, { token: 'tok' });
    socket.takeEmits('subscribe')[0]!.ack({ ok: true, tasks: [taskState('t1', 'SUCCESS', 2, { result: 42 })] });
    stop();
    await flush();
    socket.takeEmits('unsubscribe');
    const done = await client.wait('t1');
    expect(done.result).toBe(42);
    expect(socket.takeEmits('subscribe')).toHaveLength(0);
  });

  it('resolves from the subscribe snapshot of a task that finished before anyone asked', async () => {
    const { client, socket } = setup();
    const result = client.wait('t1', { token: 'tok' });
    socket.takeEmits('subscribe')[0]!.ack({ ok: true, tasks: [taskState('t1', 'FAILURE', 2, { exception: "RuntimeError('x')" })] });
    const task: TaskState = await result;
    expect(task.state).toBe('FAILURE');
    await flush();
    expect(socket.takeEmits('unsubscribe')).toHaveLength(1); // the wait stopped watching
  });

  it('resolves on the terminal update, not before', async () => {
    const { client, socket } = setup();
    let settled = false;
    const result = client.wait('t1', { token: 'tok' }).finally(() => { settled = true; });
    socket.takeEmits('subscribe')[0]!.ack({ ok: true, tasks: [taskState('t1', 'STARTED', 1)] });
    socket.fire('task:update', taskState('t1', 'RETRY', 2, { retries: 1 }));
    await flush();
    expect(settled).toBe(false);
    socket.fire('task:update', taskState('t1', 'SUCCESS', 3, { retries: 1 }));
    expect((await result).state).toBe('SUCCESS');
  });

  it('rejects with ForbiddenError when the token does not name the task', async () => {
    const getToken = vi.fn(() => 'x');
    const { client, socket } = setup({ getToken });
    const result = client.wait('t1', { token: 'other-task' });
    socket.takeEmits('subscribe')[0]!.ack({ ok: false, error: { code: 'forbidden', message: 'token does not name task t1' } });
    const err = await result.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ForbiddenError);
    expect(err).toBeInstanceOf(TaskClientError);
    expect(getToken).not.toHaveBeenCalled(); // a fresh token would not help
  });

  it('rejects with WaitTimeoutError after `timeout` ms and stops watching', async () => {
    vi.useFakeTimers();
    const { client, socket } = setup();
    const result = client.wait('t1', { token: 'tok', timeout: 500 });
    const caught = result.catch((e: unknown) => e);
    vi.advanceTimersByTime(499);
    vi.advanceTimersByTime(1);
    const err = await caught;
    expect(err).toBeInstanceOf(WaitTimeoutError);
    expect((err as WaitTimeoutError).code).toBe('timeout');
    await Promise.resolve();
    expect(socket.takeEmits('unsubscribe')).toHaveLength(1);
  });

  it('rejects with the abort reason when its signal aborts', async () => {
    const { client } = setup();
    const controller = new AbortController();
    const result = client.wait('t1', { token: 'tok', signal: controller.signal });
    controller.abort(new Error('user left'));
    await expect(result).rejects.toThrow('user left');
  });

  it('rejects pending waits with ClientClosedError on close', async () => {
    const { client, socket } = setup();
    const result = client.wait('t1', { token: 'tok' });
    client.close();
    await expect(result).rejects.toBeInstanceOf(ClientClosedError);
    expect(socket.handlerCount).toBe(0); // a socket it did not create is left open, without our handlers
    expect(socket.disconnectCalls).toBe(0);
    expect(() => client.watch('t2')).toThrow(ClientClosedError);
  });
});

describe('connection', () => {
  it('reports connecting, connected and offline, with the reason', () => {
    const { client, socket } = setup({ connect: false });
    const seen: ConnectionInfo[] = [];
    client.onConnection((info) => seen.push(info));
    expect(seen).toEqual([]);
    expect(client.connection).toEqual({ status: 'connecting', error: null });
    socket.serverConnect();
    socket.serverDisconnect('transport close');
    socket.fire('connect_error', new Error('websocket error'));
    socket.serverConnect();
    socket.serverDisconnect('io client disconnect');
    expect(seen).toEqual([
      { status: 'connected', error: null },
      { status: 'connecting', error: 'transport close' },
      { status: 'connecting', error: 'websocket error' },
      { status: 'connected', error: null },
      { status: 'offline', error: null },
    ]);
  });

  it('keeps the same object while nothing changes (for useSyncExternalStore)', () => {
    const { client } = setup();
    client.onConnection(() => {});
    expect(client.connection).toBe(client.connection);
    expect(client.connection.status).toBe('connected');
  });

  it('reconnects by itself after the server closed the socket', () => {
    vi.useFakeTimers();
    const { client, socket } = setup();
    client.onConnection(() => {});
    socket.serverDisconnect('io server disconnect');
    vi.advanceTimersByTime(1000);
    expect(socket.connectCalls).toBe(1);
  });

  it('connects a given socket that is not active yet, on first use', () => {
    const socket = new FakeSocket();
    socket.active = false;
    const client = createTaskClient({ socket: socket.asSocket() });
    expect(socket.connectCalls).toBe(0);
    expect(socket.handlerCount).toBe(0); // nothing attached before first use
    client.onConnection(() => {});
    expect(socket.connectCalls).toBe(1);
  });
});

describe('watch onChange', () => {
  it('is called on every record change, including an error being cleared', () => {
    const { client, socket } = setup({ getToken: () => 'fresh' });
    const records: unknown[] = [];
    client.watch('t1', undefined, { token: 'tok', onChange: (r) => records.push(r) });
    socket.takeEmits('subscribe')[0]!.ack({ ok: false, error: { code: 'too_many', message: 'more than 1000 subscriptions' } });
    socket.serverDisconnect();
    socket.serverConnect();
    socket.takeEmits('subscribe')[0]!.ack({ ok: true, tasks: [] });
    expect(records).toEqual([
      { task: null, error: { code: 'too_many', message: 'more than 1000 subscriptions' } },
      { task: null, error: null },
    ]);
    expect(records[1]).toBe(client.record('t1'));
  });
});

describe('refusals that time can fix', () => {
  it('too_many: asks again with growing delays, shows the error meanwhile, and wait keeps waiting', async () => {
    vi.useFakeTimers();
    const { client, socket } = setup();
    let settled = false;
    const result = client.wait('t1', { token: 'tok' }).finally(() => { settled = true; });
    const tooMany = { ok: false, error: { code: 'too_many', message: 'rate limit: 10 subscribe calls/s' } };
    socket.takeEmits('subscribe')[0]!.ack(tooMany);
    expect(client.record('t1').error?.code).toBe('too_many');
    vi.advanceTimersByTime(999);
    expect(socket.takeEmits('subscribe')).toHaveLength(0);
    vi.advanceTimersByTime(1);
    socket.takeEmits('subscribe')[0]!.ack(tooMany);
    vi.advanceTimersByTime(1999);
    expect(socket.takeEmits('subscribe')).toHaveLength(0); // doubled
    vi.advanceTimersByTime(1);
    const [third] = socket.takeEmits('subscribe');
    await Promise.resolve();
    expect(settled).toBe(false);
    third!.ack({ ok: true, tasks: [taskState('t1', 'SUCCESS', 4)] });
    expect((await result).state).toBe('SUCCESS');
    expect(client.record('t1').error).toBeNull();
  });

  it('a fresh token refused: the error stands, and the next connect asks getToken again', async () => {
    let n = 0;
    const getToken = vi.fn(() => `tok-${(n += 1)}`);
    const { client, socket } = setup({ getToken });
    client.watch('t1');
    await flush();
    socket.takeEmits('subscribe')[0]!.ack({ ok: false, error: { code: 'unauthorized', message: 'token signature is invalid' } });
    await flush();
    expect(socket.takeEmits('subscribe')).toHaveLength(0); // no loop
    expect(client.record('t1').error?.code).toBe('unauthorized');
    socket.serverDisconnect();
    socket.serverConnect();
    await flush();
    expect(socket.takeEmits('subscribe').map((e) => e.payload)).toEqual([{ task_id: 't1', token: 'tok-2' }]);
    expect(getToken).toHaveBeenCalledTimes(2);
  });
});
