// Watched workflows (groups, chords, chains) over the task client's shared
// connection: the same rules as tasks — subscribe again on every connect, a
// fresh token on `unauthorized` and `token_expired`, backoff on `too_many` —
// with `{workflow_id}` payloads and `workflow:update` events. Each update is
// the workflow's current state, so the newest received wins; one without
// `task_ids` (the membership did not move) keeps the ones held.
import type { Socket } from 'socket.io-client';
import type { TaskProblem, WorkflowRecord, WorkflowState, WorkflowUpdate } from './types.js';
import { MAX_BACKOFF_MS, newWatchEntry, RETRY_DELAY_MS } from './watch-entry.js';
import type { WatchEntry } from './watch-entry.js';

/** The record of a workflow nothing is known about; one shared object. */
export const EMPTY_WORKFLOW_RECORD: WorkflowRecord = Object.freeze({ workflow: null, error: null });

/** Receives every new WorkflowState of a watched workflow, starting with the subscribe snapshot. */
export type WorkflowListener = (workflow: WorkflowState) => void;

/** Options of `watchWorkflow`. */
export interface WatchWorkflowOptions {
  /** A token naming the workflow id; without one the client uses the connection token or asks `getToken(workflowId)`. */
  token?: string;
  /** Called when the workflow cannot be watched (refused subscribe, expired token with no way to refresh it). */
  onError?: (problem: TaskProblem) => void;
  /** Called after every change of the workflow's `{workflow, error}` record. */
  onChange?: (record: WorkflowRecord) => void;
}

/** What the workflow side needs from the client it lives in. */
export interface WorkflowDeps {
  socket: Socket;
  getToken?: (id: string) => unknown;
  hasConnectionToken: boolean;
  ackTimeout: number;
  later: (fn: () => void, ms: number) => void;
  isClosed: () => boolean;
  /** How many finished workflows nobody watches are remembered (shown at once when watched again). */
  maxFinished: number;
}


interface Ack {
  ok?: boolean;
  workflows?: unknown[];
  error?: { code?: unknown; message?: unknown };
}


function isWorkflowUpdate(value: unknown): value is WorkflowUpdate {
  const w = value as WorkflowUpdate | null;
  return typeof w === 'object' && w !== null && typeof w.workflow_id === 'string' && typeof w.state === 'string'
    && typeof w.total === 'number' && (w.task_ids === undefined || Array.isArray(w.task_ids));
}

/** The workflow half of a task client. */
export function createWorkflows(deps: WorkflowDeps) {
  const { socket, getToken, hasConnectionToken, ackTimeout, later, isClosed, maxFinished } = deps;
  // Finished workflows nobody watches, oldest first: a remount shows them before the server answers.
  const released = new Map<string, true>();
  const watched = new Map<string, WatchEntry>();
  const records = new Map<string, WorkflowRecord>();
  const listeners = new Map<string, Set<(record: WorkflowRecord) => void>>();

  function record(id: string): WorkflowRecord {
    return records.get(id) ?? EMPTY_WORKFLOW_RECORD;
  }

  function set(id: string, next: WorkflowRecord): void {
    records.set(id, Object.freeze(next));
    for (const listener of [...(listeners.get(id) ?? [])]) listener(records.get(id) as WorkflowRecord);
  }

  function apply(value: unknown): void {
    if (!isWorkflowUpdate(value) || !watched.has(value.workflow_id)) return;
    let workflow: WorkflowState;
    if (value.task_ids !== undefined) {
      workflow = value as WorkflowState;
    } else {
      // The server leaves task_ids out while they stay as the ack or an earlier update gave them.
      const held = record(value.workflow_id).workflow;
      // Nothing held, or ids of another membership (held from before a reconnect): the ack,
      // which always carries them, is on its way.
      if (!held || held.task_ids.length !== value.total) return;
      workflow = { ...value, task_ids: held.task_ids };
    }
    set(value.workflow_id, { workflow, error: null });
  }

  function setError(id: string, error: TaskProblem | null): void {
    const now = record(id);
    if (now.error === error || (now.error && error && now.error.code === error.code && now.error.message === error.message)) return;
    set(id, { workflow: now.workflow, error });
  }

  function current(id: string, entry: WatchEntry, generation: number): boolean {
    return !isClosed() && watched.get(id) === entry && entry.generation === generation;
  }

  async function subscribe(id: string, entry: WatchEntry, refresh = false): Promise<void> {
    if (isClosed() || watched.get(id) !== entry) return;
    const generation = ++entry.generation;
    if (getToken && (refresh || (!entry.token && !hasConnectionToken))) {
      let token: unknown;
      try {
        token = await getToken(id);
      } catch (err) {
        if (current(id, entry, generation)) {
          setError(id, { code: 'unauthorized', message: `getToken failed: ${err instanceof Error ? err.message : String(err)}` });
        }
        return;
      }
      if (!current(id, entry, generation)) return;
      if (typeof token !== 'string' || !token) {
        setError(id, { code: 'unauthorized', message: 'getToken returned no token' });
        return;
      }
      entry.token = token;
      entry.fresh = true;
    }
    if (!socket.connected) return; // the next `connect` subscribes
    const payload = entry.token ? { workflow_id: id, token: entry.token } : { workflow_id: id };
    const wasFresh = entry.fresh;
    socket.timeout(ackTimeout).emit('subscribe', payload, (err: Error | null, ack?: Ack) => {
      if (!current(id, entry, generation)) return;
      if (err) {
        later(() => { if (current(id, entry, generation) && socket.connected) void subscribe(id, entry); }, RETRY_DELAY_MS);
        return;
      }
      if (ack?.ok) {
        entry.fresh = false;
        entry.backoff = RETRY_DELAY_MS;
        setError(id, null);
        for (const workflow of ack.workflows ?? []) apply(workflow);
        return;
      }
      const code = typeof ack?.error?.code === 'string' ? ack.error.code : 'error';
      const message = typeof ack?.error?.message === 'string' ? ack.error.message : 'subscription refused';
      if (code === 'unauthorized' && getToken && !wasFresh) {
        void subscribe(id, entry, true);
        return;
      }
      if (code === 'unauthorized' && getToken) {
        entry.token = undefined;
        entry.fresh = false;
      }
      if (code === 'too_many' && !message.includes('--max-workflow-size')) {
        // A rate limit: ask again later. A workflow too large stays refused.
        const delay = entry.backoff;
        entry.backoff = Math.min(entry.backoff * 2, MAX_BACKOFF_MS);
        later(() => { if (current(id, entry, generation) && socket.connected) void subscribe(id, entry); }, delay);
      }
      setError(id, { code, message });
    });
  }

  function watchWorkflow(id: string, listener?: WorkflowListener, options: WatchWorkflowOptions = {}): () => void {
    const { token, onError, onChange } = options;
    let last = record(id);
    const mine = (next: WorkflowRecord): void => {
      const previous = last;
      last = next;
      if (next.workflow && next.workflow !== previous.workflow) listener?.(next.workflow);
      if (next.error && next.error !== previous.error) onError?.(next.error);
      onChange?.(next);
    };
    const set_ = listeners.get(id) ?? new Set();
    listeners.set(id, set_);
    set_.add(mine);
    released.delete(id);
    let entry = watched.get(id);
    if (!entry) {
      entry = newWatchEntry(token);
      watched.set(id, entry);
      void subscribe(id, entry);
    } else if (token && token !== entry.given) {
      entry.given = token;
      entry.token = token;
      entry.fresh = false;
      void subscribe(id, entry);
    }
    entry.refs += 1;
    const initial = last.workflow;
    let stopped = false;
    if (initial && listener) queueMicrotask(() => { if (!stopped && last.workflow === initial) listener(initial); });
    return () => {
      if (stopped) return;
      stopped = true;
      set_.delete(mine);
      const held = watched.get(id);
      if (!held) return;
      held.refs -= 1;
      queueMicrotask(() => {
        if (watched.get(id) !== held || held.refs > 0) return;
        watched.delete(id);
        held.generation += 1;
        if (socket.connected) socket.emit('unsubscribe', { workflow_id: id });
        if (!listeners.get(id)?.size) {
          listeners.delete(id);
          const state = records.get(id)?.workflow?.state;
          if (state === 'SUCCESS' || state === 'FAILURE') {
            released.set(id, true);
            for (const oldest of released.keys()) {
              if (released.size <= maxFinished) break;
              released.delete(oldest);
              records.delete(oldest);
            }
          } else {
            records.delete(id);
          }
        }
      });
    };
  }

  function onExpired(ids: unknown, message: unknown): void {
    if (!Array.isArray(ids)) return;
    for (const id of ids) {
      const entry = typeof id === 'string' ? watched.get(id) : undefined;
      if (!entry) continue;
      entry.token = undefined;
      entry.fresh = false;
      if (getToken) void subscribe(id, entry, true);
      else if (hasConnectionToken) void subscribe(id, entry);
      else {
        entry.generation += 1;
        setError(id, { code: 'token_expired', message: typeof message === 'string' ? message : 'the token has expired' });
      }
    }
  }

  return {
    watchWorkflow,
    record,
    /** Subscribe every watched workflow again (on every connect). */
    resubscribe(): void {
      for (const [id, entry] of watched) void subscribe(id, entry);
    },
    onUpdate: apply,
    onExpired,
    watched: () => [...watched.keys()],
    clear(): void {
      watched.clear();
    },
  };
}
