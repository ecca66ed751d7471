// The pushserver's state precedence (pushserver/state.py PRECEDENCE, docs/protocol.md
// § task:update), shared by everything in the client that decides which of two
// TaskStates is the current one.
import type { TaskState, TaskStateName } from './types.js';

/**
 * Precedence, lowest first: a task never moves to a lower state. RETRY has no
 * rank: it re-opens the task, so only the newer report counts across attempts.
 */
export const PRECEDENCE: Readonly<Record<Exclude<TaskStateName, 'RETRY'>, number>> = Object.freeze({
  PENDING: 0,
  SENT: 1,
  RECEIVED: 2,
  STARTED: 3,
  PROGRESS: 4,
  REJECTED: 5,
  REVOKED: 6,
  FAILURE: 7,
  SUCCESS: 8,
});

/** States after which a task does nothing more (a requeued rejection arrives as RETRY instead). */
export const TERMINAL_STATES: ReadonlySet<TaskStateName> = Object.freeze(
  new Set<TaskStateName>(['SUCCESS', 'FAILURE', 'REVOKED', 'REJECTED']),
);

/** True for SUCCESS, FAILURE, REVOKED and REJECTED. */
export function isTerminal(state: string | null | undefined): boolean {
  return TERMINAL_STATES.has(state as TaskStateName);
}

function rank(state: string): number {
  return (PRECEDENCE as Record<string, number>)[state] ?? -1;
}

function time(task: TaskState): number {
  return typeof task.updated_at === 'number' ? task.updated_at : -Infinity;
}

function sameContent(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Decide whether `incoming` (a TaskState from the server) should replace
 * `current` (what the client holds, or undefined).
 *
 * Updates arrive twice and out of order: a subscribe ack's snapshot can land
 * after a newer `task:update`, and every reconnect re-sends snapshots.
 */
export function shouldReplace(current: TaskState | null | undefined, incoming: TaskState): boolean {
  if (!current) return true;
  if (sameContent(current, incoming)) return false;
  const newer = time(incoming) > time(current);
  const sameTime = time(incoming) === time(current);

  if (isTerminal(current.state)) {
    // Final. Only a higher ready state (the server resolves a late REVOKED
    // against a SUCCESS by precedence) or a fuller copy of the same state
    // (the result backend filled in the result) may replace it.
    if (!isTerminal(incoming.state)) return false;
    if (incoming.state === current.state) return newer || sameTime;
    return rank(incoming.state) > rank(current.state);
  }
  if (isTerminal(incoming.state)) return true;

  // A retry re-opens the task, so precedence says nothing across attempts:
  // the newer report wins. A snapshot taken after a retry we never saw (we
  // were offline) shows as a higher retry count.
  if (incoming.state === 'RETRY' || current.state === 'RETRY') return newer;
  const retriesIn = incoming.retries ?? 0;
  const retriesNow = current.retries ?? 0;
  if (retriesIn !== retriesNow) return retriesIn > retriesNow;

  if (rank(incoming.state) > rank(current.state)) return true;
  if (rank(incoming.state) < rank(current.state)) return false;
  // Same state: newer progress, or the same moment with more detail.
  return newer || sameTime;
}
