// The task client: one shared Socket.IO connection to the pushserver, the
// tasks watched over it, and the store their states go to.
//
// python-socketio has no connection-state recovery: after any reconnect the
// server knows a new socket with no rooms. So on EVERY `connect` the client
// sends `subscribe` again for each watched task; the ack carries the current
// snapshot, which fills whatever was missed while away. The same holds after
// a token refresh: a new `subscribe` answers with a snapshot, so nothing that
// happened between the expiry and the refresh is lost.
import { io as socketIo } from 'socket.io-client';
import type { ManagerOptions, Socket, SocketOptions } from 'socket.io-client';
import { ClientClosedError, errorFromProblem, WaitTimeoutError } from './errors.js';
import { isTerminal } from './precedence.js';
import { createTaskStore } from './store.js';
import { MAX_BACKOFF_MS, newWatchEntry, RETRY_DELAY_MS } from './watch-entry.js';
import type { WatchEntry } from './watch-entry.js';
import type { ConnectionInfo, ConnectionStatus, TaskProblem, TaskRecord, TaskState, WorkflowRecord } from './types.js';
import { createWorkflows } from './workflows.js';
import type { WatchWorkflowOptions, WorkflowListener } from './workflows.js';

/** A token, or nothing when none can be had. */
export type TokenResult = string | null | undefined;

/** Returns a fresh token naming `taskId` — or a workflow id, for `watchWorkflow` — (e.g. from your API); may be async. */
export type GetToken = (taskId: string) => TokenResult | Promise<TokenResult>;

/** Options of `createTaskClient`. */
export interface TaskClientOptions {
  /** The pushserver's URL, e.g. `https://push.example.com`. Not needed when `socket` is given. */
  url?: string;
  /** A token sent when connecting (e.g. a dashboard's `tasks: ["*"]` token), or a function returning one at each connect. */
  token?: string | (() => TokenResult | Promise<TokenResult>);
  /** Called for a task's token when it has none, when the server answers `unauthorized`, and on `token_expired`. */
  getToken?: GetToken;
  /** Use this Socket.IO socket instead of creating one (the client never closes a socket it did not create). */
  socket?: Socket;
  /** Extra options for `io()` when the client creates the socket. */
  socketOptions?: Partial<ManagerOptions & SocketOptions>;
  /** How long to wait for a subscribe ack before asking again, in ms (default 10 000). */
  ackTimeout?: number;
  /** How many finished tasks nobody watches are remembered for `state()` and `wait()` (default 1 000). */
  maxFinished?: number;
}

/** Options of `watch`. */
export interface WatchOptions {
  /** The task's token; without one the client uses the connection token or asks `getToken`. */
  token?: string;
  /** Called when the task cannot be watched: refused subscribe, expired token with no way to refresh it. */
  onError?: (problem: TaskProblem) => void;
  /** Called after every change of the task's `{task, error}` record (what React's useSyncExternalStore needs). */
  onChange?: (record: TaskRecord) => void;
}

/** Options of `wait`. */
export interface WaitOptions {
  token?: string;
  /** Reject with a WaitTimeoutError after this many ms (default: wait as long as it takes). */
  timeout?: number;
  /** Reject with the signal's reason when it aborts. */
  signal?: AbortSignal;
}

/** Receives every new TaskState of a watched task, starting with the subscribe snapshot. */
export type TaskListener = (task: TaskState) => void;

/** Receives the connection status on every change. */
export type ConnectionListener = (info: ConnectionInfo) => void;

/** A client holding one shared connection; see createTaskClient. */
export interface TaskClient {
  /** Watch a task; returns the function that stops watching. */
  watch(taskId: string, listener?: TaskListener, options?: WatchOptions): () => void;
  /** The task's terminal TaskState (SUCCESS, FAILURE, REVOKED or REJECTED); resolves at once when already known. */
  wait(taskId: string, options?: WaitOptions): Promise<TaskState>;
  /** The latest TaskState known for the task, if any. */
  state(taskId: string): TaskState | undefined;
  /** The task's `{task, error}` record; the same object until it changes (for React's useSyncExternalStore). */
  record(taskId: string): TaskRecord;
  /** Call `listener` on every change of the connection status; returns the function that stops it. */
  onConnection(listener: ConnectionListener): () => void;
  /** The current connection status; the same object until it changes. */
  readonly connection: ConnectionInfo;
  /** Ids of the tasks watched right now. */
  watchedTasks(): string[];
  /** Watch a group, chord or chain by its workflow id; returns the function that stops watching. */
  watchWorkflow(workflowId: string, listener?: WorkflowListener, options?: WatchWorkflowOptions): () => void;
  /** The workflow's `{workflow, error}` record; the same object until it changes. */
  workflowRecord(workflowId: string): WorkflowRecord;
  /** Ids of the workflows watched right now. */
  watchedWorkflows(): string[];
  /** Stop: disconnect (a socket the client created), reject pending waits with ClientClosedError. */
  close(): void;
  /** The underlying Socket.IO socket. */
  readonly socket: Socket;
}


interface SubscribeAck {
  ok?: boolean;
  tasks?: unknown[];
  error?: { code?: unknown; message?: unknown };
}


/** Problems that end a `wait`: asking again as is cannot help. (`too_many` is retried with backoff.) */
const FINAL_PROBLEMS = new Set(['forbidden', 'unauthorized', 'token_expired', 'bad_request']);

function browserOffline(): boolean {
  return typeof navigator !== 'undefined' && (navigator as { onLine?: boolean }).onLine === false;
}

function problemOf(value: SubscribeAck['error'] | undefined, fallback: string): TaskProblem {
  const code = typeof value?.code === 'string' ? value.code : 'error';
  const message = typeof value?.message === 'string' ? value.message : fallback;
  return { code, message };
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Create a task client: one Socket.IO connection (WebSocket transport) shared
 * by every watched task, re-subscribing them all on every connect. It
 * connects on first use (`watch`, `wait` or `onConnection`).
 */
export function createTaskClient(options: TaskClientOptions): TaskClient {
  const { url, token: connectionToken, getToken, ackTimeout = 10_000, maxFinished = 1000 } = options;
  if (!options.socket && !url) throw new TypeError('createTaskClient needs a url (or a socket)');
  const store = createTaskStore({ maxFinished });
  const watched = new Map<string, WatchEntry>();
  const connectionListeners = new Set<ConnectionListener>();
  const pendingWaits = new Set<() => void>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  let connection: ConnectionInfo = Object.freeze({ status: 'connecting', error: null });
  let closed = false;

  const ownSocket = !options.socket;
  const socket: Socket = options.socket ?? socketIo(url as string, {
    transports: ['websocket'], // no long-polling: no sticky sessions needed behind a balancer
    auth: (cb: (data: object) => void) => {
      if (!connectionToken) return cb({});
      Promise.resolve(typeof connectionToken === 'function' ? connectionToken() : connectionToken)
        .then((value) => cb(value ? { token: value } : {}), () => cb({}));
    },
    reconnectionDelay: 500,
    reconnectionDelayMax: 3000,
    ...options.socketOptions,
    autoConnect: false, // connected on first use, see start()
  });

  function later(fn: () => void, ms: number): void {
    const timer = setTimeout(() => {
      timers.delete(timer);
      fn();
    }, ms);
    timers.add(timer);
  }

  const workflows = createWorkflows({
    socket,
    getToken,
    hasConnectionToken: Boolean(connectionToken),
    ackTimeout,
    later,
    isClosed: () => closed,
    maxFinished,
  });

  function setConnection(status: ConnectionStatus, error: string | null = null): void {
    if (connection.status === status && connection.error === error) return;
    connection = Object.freeze({ status, error });
    for (const listener of [...connectionListeners]) listener(connection);
  }

  function current(taskId: string, entry: WatchEntry, generation: number): boolean {
    return !closed && watched.get(taskId) === entry && entry.generation === generation;
  }

  /** Subscribe `taskId`; with `refresh`, first ask getToken for a new token. */
  async function subscribeTask(taskId: string, entry: WatchEntry, refresh = false): Promise<void> {
    if (closed || watched.get(taskId) !== entry) return;
    const generation = ++entry.generation;
    if (getToken && (refresh || (!entry.token && !connectionToken))) {
      let token: TokenResult;
      try {
        token = await getToken(taskId);
      } catch (err) {
        if (current(taskId, entry, generation)) {
          store.setError(taskId, { code: 'unauthorized', message: `getToken failed: ${describe(err)}` });
        }
        return;
      }
      if (!current(taskId, entry, generation)) return;
      if (!token) {
        store.setError(taskId, { code: 'unauthorized', message: 'getToken returned no token' });
        return;
      }
      entry.token = token;
      entry.fresh = true;
    }
    if (!socket.connected) return; // the next `connect` subscribes
    const payload = entry.token ? { task_id: taskId, token: entry.token } : { task_id: taskId };
    const wasFresh = entry.fresh;
    socket.timeout(ackTimeout).emit('subscribe', payload, (err: Error | null, ack?: SubscribeAck) => {
      if (!current(taskId, entry, generation)) return;
      if (err) {
        // No answer in time (a busy server): ask again while connected; a
        // reconnect asks again anyway.
        later(() => {
          if (current(taskId, entry, generation) && socket.connected) void subscribeTask(taskId, entry);
        }, RETRY_DELAY_MS);
        return;
      }
      if (ack?.ok) {
        entry.fresh = false;
        entry.backoff = RETRY_DELAY_MS;
        store.setError(taskId, null);
        for (const task of ack.tasks ?? []) store.apply(task);
        return;
      }
      const problem = problemOf(ack?.error, 'subscription refused');
      if (problem.code === 'unauthorized' && getToken && !wasFresh) {
        void subscribeTask(taskId, entry, true); // the token we held expired: get a new one
        return;
      }
      if (problem.code === 'unauthorized' && getToken) {
        // Even a fresh token was refused: final for now, but the next connect asks getToken again.
        entry.token = undefined;
        entry.fresh = false;
      }
      if (problem.code === 'too_many') {
        // The server's subscribe rate limit (a reconnect re-subscribes every
        // task at once) or its subscription cap: ask again later, backing off.
        const delay = entry.backoff;
        entry.backoff = Math.min(entry.backoff * 2, MAX_BACKOFF_MS);
        later(() => {
          if (current(taskId, entry, generation) && socket.connected) void subscribeTask(taskId, entry);
        }, delay);
      }
      store.setError(taskId, problem);
    });
  }

  function onConnect(): void {
    setConnection('connected');
    for (const [taskId, entry] of watched) void subscribeTask(taskId, entry);
    workflows.resubscribe();
  }

  function onDisconnect(reason: string): void {
    if (reason === 'io client disconnect') return setConnection('offline');
    setConnection(browserOffline() ? 'offline' : 'connecting', reason);
    // The server closed this socket on purpose: socket.io will not retry by
    // itself, but the next server (a restarted replica) will take us.
    if (reason === 'io server disconnect') later(() => { if (!closed && !socket.connected) socket.connect(); }, RETRY_DELAY_MS);
  }

  function onConnectError(err: Error): void {
    setConnection(browserOffline() ? 'offline' : 'connecting', describe(err));
  }

  function onUpdate(task: unknown): void {
    const id = (task as TaskState | null)?.task_id;
    if (typeof id === 'string' && watched.has(id)) store.apply(task);
  }

  function onServerError(payload: unknown): void {
    const { code, task_ids: ids, workflow_ids: workflowIds, message } = (payload ?? {}) as {
      code?: unknown; task_ids?: unknown; workflow_ids?: unknown; message?: unknown;
    };
    if (code === 'token_expired') workflows.onExpired(workflowIds, message);
    if (code !== 'token_expired' || !Array.isArray(ids)) return;
    for (const taskId of ids) {
      const entry = typeof taskId === 'string' ? watched.get(taskId) : undefined;
      if (!entry) continue;
      // The server has dropped us from the task's room: subscribe again with a new token.
      entry.token = undefined;
      entry.fresh = false;
      if (getToken) {
        void subscribeTask(taskId, entry, true);
      } else if (connectionToken) {
        void subscribeTask(taskId, entry);
      } else {
        entry.generation += 1; // drop answers still on their way for the expired token
        store.setError(taskId, { code: 'token_expired', message: typeof message === 'string' ? message : 'the token has expired' });
      }
    }
  }

  const handlers: Record<string, (...args: never[]) => void> = {
    connect: onConnect,
    disconnect: onDisconnect,
    connect_error: onConnectError,
    'task:update': onUpdate,
    'workflow:update': workflows.onUpdate,
    'pushserver:error': onServerError,
  };
  let started = false;
  let removeWindowListeners = (): void => {};

  /**
   * Attach to the socket and connect, on first use: a client nobody uses
   * (React StrictMode renders a provider twice and keeps one) holds nothing.
   */
  function start(): void {
    if (started || closed) return;
    started = true;
    for (const [event, handler] of Object.entries(handlers)) socket.on(event, handler as (...args: unknown[]) => void);
    if (typeof window !== 'undefined' && typeof window.addEventListener === 'function') {
      const offline = (): void => setConnection('offline', 'the browser is offline');
      const online = (): void => setConnection(socket.connected ? 'connected' : 'connecting');
      window.addEventListener('offline', offline);
      window.addEventListener('online', online);
      removeWindowListeners = () => {
        window.removeEventListener('offline', offline);
        window.removeEventListener('online', online);
      };
    }
    if (socket.connected) onConnect();
    else if (ownSocket || socket.active === false) socket.connect();
  }

  function watch(taskId: string, listener?: TaskListener, watchOptions: WatchOptions = {}): () => void {
    if (typeof taskId !== 'string' || taskId === '') throw new TypeError('watch needs a task id');
    if (closed) throw new ClientClosedError(taskId);
    start();
    const { token, onError, onChange } = watchOptions;
    let last = store.get(taskId);
    const stopListening = store.subscribe(taskId, (record) => {
      const previous = last;
      last = record;
      if (record.task && record.task !== previous.task) listener?.(record.task);
      if (record.error && record.error !== previous.error) onError?.(record.error);
      onChange?.(record);
    });

    let entry = watched.get(taskId);
    if (!entry) {
      entry = newWatchEntry(token);
      watched.set(taskId, entry);
      store.setError(taskId, null); // a problem from an earlier watch is not this one's
      last = store.get(taskId);
      void subscribeTask(taskId, entry);
    } else if (token && token !== entry.given) {
      // A different token from the caller: ask again with it (the old one may have expired).
      entry.given = token;
      entry.token = token;
      entry.fresh = false;
      void subscribeTask(taskId, entry);
    }
    entry.refs += 1;
    // The listener starts from what is known already (a finished task, another watcher's state).
    const initial = last.task;
    if (initial && listener) queueMicrotask(() => { if (!stopped && last.task === initial) listener(initial); });

    let stopped = false;
    return () => {
      if (stopped) return;
      stopped = true;
      stopListening();
      const held = watched.get(taskId);
      if (!held) return;
      held.refs -= 1;
      // Decide after the current task: React StrictMode and a token change
      // both unmount and remount at once, which should not unsubscribe.
      queueMicrotask(() => {
        if (watched.get(taskId) !== held || held.refs > 0) return;
        watched.delete(taskId);
        held.generation += 1;
        if (socket.connected) socket.emit('unsubscribe', { task_id: taskId });
        store.release(taskId);
      });
    };
  }

  function wait(taskId: string, waitOptions: WaitOptions = {}): Promise<TaskState> {
    const known = store.get(taskId).task;
    if (known && isTerminal(known.state)) return Promise.resolve(known);
    if (closed) return Promise.reject(new ClientClosedError(taskId));
    const { token, timeout, signal } = waitOptions;
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<TaskState>((resolve, reject) => {
      let done = false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      let unwatch = (): void => {};
      const finish = (settle: () => void): void => {
        if (done) return;
        done = true;
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        pendingWaits.delete(cancel);
        unwatch();
        settle();
      };
      const cancel = (): void => finish(() => reject(new ClientClosedError(taskId)));
      const onAbort = (): void => finish(() => reject(signal?.reason));
      pendingWaits.add(cancel);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeout !== undefined) {
        timer = setTimeout(() => finish(() => reject(new WaitTimeoutError(`task ${taskId} did not finish within ${timeout} ms`, taskId))), timeout);
      }
      unwatch = watch(taskId, (task) => {
        if (isTerminal(task.state)) finish(() => resolve(task));
      }, {
        token,
        onError: (problem) => {
          if (FINAL_PROBLEMS.has(problem.code)) finish(() => reject(errorFromProblem(problem, taskId)));
        },
      });
      if (done) unwatch();
    });
  }

  return {
    watch,
    wait,
    state: (taskId) => store.get(taskId).task ?? undefined,
    record: (taskId) => store.get(taskId),
    onConnection(listener) {
      start();
      connectionListeners.add(listener);
      return () => { connectionListeners.delete(listener); };
    },
    get connection() {
      return connection;
    },
    watchedTasks: () => [...watched.keys()],
    watchWorkflow(workflowId, listener, watchOptions) {
      if (typeof workflowId !== 'string' || workflowId === '') throw new TypeError('watchWorkflow needs a workflow id');
      if (closed) throw new ClientClosedError(workflowId);
      start();
      return workflows.watchWorkflow(workflowId, listener, watchOptions);
    },
    workflowRecord: (workflowId) => workflows.record(workflowId),
    watchedWorkflows: () => workflows.watched(),
    close() {
      if (closed) return;
      for (const cancel of [...pendingWaits]) cancel();
      closed = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      removeWindowListeners();
      if (started) {
        for (const [event, handler] of Object.entries(handlers)) socket.off(event, handler as (...args: unknown[]) => void);
      }
      if (ownSocket) socket.disconnect();
      watched.clear();
      workflows.clear();
      setConnection('offline', 'closed');
    },
    get socket() {
      return socket;
    },
  };
}
