// One Socket.IO connection per page, shared by every component that watches a task.
//
// python-socketio has no connection-state recovery: after any reconnect the
// server knows a new socket with no rooms. So on EVERY `connect` we send
// `subscribe` again for each watched task, with that task's token; the ack
// carries the current snapshot, which fills whatever we missed while away.
import { io as socketIo } from 'socket.io-client';
import { createTaskStore } from './taskStore.js';

const ACK_TIMEOUT_MS = 10_000;

/** Connection status values, for the indicator. */
export const CONNECTION = Object.freeze({
  IDLE: 'idle', // not configured yet
  CONNECTING: 'connecting', // first connection attempt
  CONNECTED: 'connected',
  RECONNECTING: 'reconnecting', // lost it; socket.io is retrying
  OFFLINE: 'offline', // the browser is offline, or we were told to stop
});

function browserOffline() {
  return typeof navigator !== 'undefined' && navigator.onLine === false;
}

/**
 * Create a task socket: the connection, the set of watched tasks and the
 * store their updates go to. `io` is injectable for tests.
 */
export function createTaskSocket({ store = createTaskStore(), io = socketIo } = {}) {
  let socket = null;
  let connection = Object.freeze({ status: CONNECTION.IDLE, error: null });
  const connectionListeners = new Set();
  const watched = new Map(); // task id -> { token, refs }
  let removeWindowListeners = () => {};

  function setConnection(status, error = null) {
    if (connection.status === status && connection.error === error) return;
    connection = Object.freeze({ status, error });
    for (const listener of [...connectionListeners]) listener();
  }

  function subscribe(taskId) {
    const entry = watched.get(taskId);
    if (!socket?.connected || !entry) return;
    const payload = entry.token ? { task_id: taskId, token: entry.token } : { task_id: taskId };
    socket.timeout(ACK_TIMEOUT_MS).emit('subscribe', payload, (err, ack) => {
      // Unwatched meanwhile, or the token changed and a newer call is on its way.
      if (watched.get(taskId) !== entry || entry.token !== payload.token) return;
      if (err) return; // no ack in time: the next `connect` subscribes again
      if (ack?.ok) {
        for (const task of ack.tasks ?? []) store.apply(task);
      } else {
        store.setError(taskId, ack?.error ?? { code: 'error', message: 'subscription refused' });
      }
    });
  }

  function unsubscribe(taskId) {
    if (socket?.connected) socket.emit('unsubscribe', { task_id: taskId });
  }

  function onConnect() {
    setConnection(CONNECTION.CONNECTED);
    for (const taskId of watched.keys()) subscribe(taskId);
  }

  function onDisconnect(reason) {
    if (reason === 'io client disconnect') return setConnection(CONNECTION.OFFLINE);
    setConnection(browserOffline() ? CONNECTION.OFFLINE : CONNECTION.RECONNECTING, reason);
    // The server closed this socket on purpose: socket.io will not retry by
    // itself, but the next server (a restarted replica) will take us.
    if (reason === 'io server disconnect') setTimeout(() => socket?.connect(), 1000);
  }

  function onConnectError(err) {
    const status = browserOffline() ? CONNECTION.OFFLINE
      : connection.status === CONNECTION.CONNECTING ? CONNECTION.CONNECTING : CONNECTION.RECONNECTING;
    setConnection(status, err?.message ?? String(err));
  }

  function onUpdate(task) {
    if (task && watched.has(task.task_id)) store.apply(task);
  }

  function listenToWindow() {
    if (typeof window === 'undefined') return () => {};
    const offline = () => setConnection(CONNECTION.OFFLINE, 'the browser is offline');
    const online = () => {
      if (socket?.connected) setConnection(CONNECTION.CONNECTED);
      else setConnection(CONNECTION.RECONNECTING);
    };
    window.addEventListener('offline', offline);
    window.addEventListener('online', online);
    return () => {
      window.removeEventListener('offline', offline);
      window.removeEventListener('online', online);
    };
  }

  function close() {
    removeWindowListeners();
    removeWindowListeners = () => {};
    if (socket) {
      socket.off();
      socket.disconnect();
      socket = null;
      setConnection(CONNECTION.OFFLINE);
    }
  }

  return {
    store,

    /**
     * Connect to the pushserver at `url`. `token` (optional) is sent at
     * connect time — e.g. a dashboard's wildcard token; per-task tokens go
     * with each subscribe. Reconfiguring replaces the connection.
     */
    configure({ url, token, options = {} }) {
      close();
      setConnection(CONNECTION.CONNECTING);
      socket = io(url, {
        transports: ['websocket'], // no long-polling: no sticky sessions needed behind a balancer
        auth: (cb) => cb(token ? { token: typeof token === 'function' ? token() : token } : {}),
        reconnectionDelay: 500,
        reconnectionDelayMax: 3000,
        ...options,
      });
      socket.on('connect', onConnect);
      socket.on('disconnect', onDisconnect);
      socket.on('connect_error', onConnectError);
      socket.on('task:update', onUpdate);
      removeWindowListeners = listenToWindow();
      return socket;
    },

    /**
     * Watch `taskId` with `token`; returns the function that stops watching.
     * Watches are counted: the task is unsubscribed (and dropped from the
     * store) only when its last watcher stops.
     */
    watch(taskId, token) {
      let entry = watched.get(taskId);
      if (!entry) {
        entry = { token, refs: 0 };
        watched.set(taskId, entry);
        subscribe(taskId);
      } else if (token && token !== entry.token) {
        // A fresher token: ask again with it (the old one may have expired).
        const next = { token, refs: entry.refs };
        watched.set(taskId, next);
        entry = next;
        subscribe(taskId);
      }
      entry.refs += 1;
      let stopped = false;
      return () => {
        if (stopped) return;
        stopped = true;
        const current = watched.get(taskId);
        if (!current) return;
        current.refs -= 1;
        // Decide after the current task: React StrictMode and a token change
        // both unmount and remount at once, which should not unsubscribe.
        queueMicrotask(() => {
          if (watched.get(taskId) !== current || current.refs > 0) return;
          watched.delete(taskId);
          unsubscribe(taskId);
          store.remove(taskId);
        });
      };
    },

    /** Ids of the tasks watched right now. */
    watchedTasks() {
      return [...watched.keys()];
    },

    getConnection() {
      return connection;
    },

    subscribeConnection(listener) {
      connectionListeners.add(listener);
      return () => connectionListeners.delete(listener);
    },

    /** Close the connection (watched tasks stay registered for a later configure). */
    close,

    get socket() {
      return socket;
    },
  };
}

/** The page's shared task socket. */
export const taskSocket = createTaskSocket();

/** Connect the shared socket to the pushserver at `url`. */
export function configureTaskSocket(options) {
  return taskSocket.configure(options);
}
