// A store of task states keyed by task id, that never lets a task move backwards.
//
// Updates reach the browser more than once and out of order: a subscribe ack's
// snapshot can land after a newer `task:update`, and every reconnect re-sends
// snapshots. The merge rules mirror the server's (DESIGN.md § TaskState):
// terminal states are final, a state never drops to a lower precedence, and
// RETRY re-opens a task only when it is newer than what we hold.

/** Celery's precedence with SENT and PROGRESS placed as the pushserver places them. */
export const STATE_RANK = Object.freeze({
  PENDING: 0,
  SENT: 1,
  REJECTED: 2,
  RECEIVED: 3,
  STARTED: 4,
  PROGRESS: 5,
  REVOKED: 6,
  FAILURE: 7,
  SUCCESS: 8,
});

export const TERMINAL_STATES = Object.freeze(new Set(['SUCCESS', 'FAILURE', 'REVOKED']));

export function isTerminal(state) {
  return TERMINAL_STATES.has(state);
}

function rank(state) {
  return STATE_RANK[state] ?? -1;
}

function time(task) {
  return typeof task?.updated_at === 'number' ? task.updated_at : -Infinity;
}

function sameContent(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Decide whether `incoming` (a TaskState from the server) should replace
 * `current` (what the store holds, or undefined).
 */
export function shouldReplace(current, incoming) {
  if (!current) return true;
  if (sameContent(current, incoming)) return false;
  const newer = time(incoming) > time(current);
  const sameTime = time(incoming) === time(current);

  if (isTerminal(current.state)) {
    // Final. Only a higher terminal state (the server resolves e.g. a late
    // REVOKED against a SUCCESS by precedence) or a fuller copy of the same
    // state (the result backend filled in the result) may replace it.
    if (!isTerminal(incoming.state)) return false;
    if (incoming.state === current.state) return newer || sameTime;
    return rank(incoming.state) > rank(current.state);
  }
  if (isTerminal(incoming.state)) return true;

  // A retry re-opens the task, so precedence says nothing across attempts:
  // the newer report wins. A snapshot taken after a retry we never saw
  // (we were offline) shows as a higher retry count.
  if (incoming.state === 'RETRY' || current.state === 'RETRY') return newer;
  if ((incoming.retries ?? 0) !== (current.retries ?? 0)) return (incoming.retries ?? 0) > (current.retries ?? 0);

  if (rank(incoming.state) > rank(current.state)) return true;
  if (rank(incoming.state) < rank(current.state)) return false;
  // Same state: newer progress, or the same moment with more detail.
  return newer || sameTime;
}

const EMPTY_RECORD = Object.freeze({ task: null, error: null });

/**
 * Create a store. Records are immutable `{task, error}` objects, replaced on
 * every change, so `useSyncExternalStore` can compare them by identity.
 */
export function createTaskStore() {
  const records = new Map();
  const listeners = new Map(); // task id -> Set of callbacks

  function notify(taskId) {
    for (const listener of [...(listeners.get(taskId) ?? [])]) listener();
  }

  function set(taskId, record) {
    records.set(taskId, Object.freeze(record));
    notify(taskId);
  }

  return {
    /** The `{task, error}` record of a task (a shared empty record when unknown). */
    get(taskId) {
      return records.get(taskId) ?? EMPTY_RECORD;
    },

    has(taskId) {
      return records.has(taskId);
    },

    /**
     * Merge a TaskState from the server; returns true when the store changed.
     * Stale or backwards updates are ignored.
     */
    apply(task) {
      if (!task || typeof task.task_id !== 'string' || typeof task.state !== 'string') return false;
      const current = records.get(task.task_id);
      if (!shouldReplace(current?.task, task)) return false;
      // A successful update clears an earlier subscribe error.
      set(task.task_id, { task: Object.freeze({ ...task }), error: null });
      return true;
    },

    /** Record why a task cannot be watched (a refused subscribe), keeping its last known state. */
    setError(taskId, error) {
      const current = records.get(taskId);
      if (current?.error && sameContent(current.error, error)) return;
      set(taskId, { task: current?.task ?? null, error: error ? Object.freeze({ ...error }) : null });
    },

    /** Forget a task (nobody watches it any more). */
    remove(taskId) {
      if (records.delete(taskId)) notify(taskId);
    },

    /** Call `listener` after every change of `taskId`; returns the unsubscribe function. */
    subscribe(taskId, listener) {
      let set = listeners.get(taskId);
      if (!set) listeners.set(taskId, (set = new Set()));
      set.add(listener);
      return () => {
        set.delete(listener);
        if (set.size === 0 && listeners.get(taskId) === set) listeners.delete(taskId);
      };
    },

    get size() {
      return records.size;
    },
  };
}
