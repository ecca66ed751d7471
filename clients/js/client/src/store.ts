// Task records keyed by task id, merged by precedence so no task ever moves backwards.
import { isTerminal, shouldReplace } from './precedence.js';
import type { TaskProblem, TaskRecord, TaskState } from './types.js';

/** The record of a task nothing is known about; one shared object, so it compares equal by identity. */
export const EMPTY_RECORD: TaskRecord = Object.freeze({ task: null, error: null });

/** Callback run after a task's record changed. */
export type RecordListener = (record: TaskRecord) => void;

/** A map of task id → immutable `{task, error}` records with per-task change listeners. */
export interface TaskStore {
  /** The task's record (EMPTY_RECORD when unknown). */
  get(taskId: string): TaskRecord;
  has(taskId: string): boolean;
  /** Merge a TaskState from the server; true when the record changed (stale or backwards updates are ignored). */
  apply(task: unknown): boolean;
  /** Record why the task cannot be watched (null clears it), keeping its last known state. */
  setError(taskId: string, error: TaskProblem | null): void;
  /** Forget the task; a finished one is kept (up to `maxFinished`) so `wait` can answer at once. */
  release(taskId: string): void;
  /** Call `listener` after every change of `taskId`; returns the function that stops it. */
  subscribe(taskId: string, listener: RecordListener): () => void;
  readonly size: number;
}

function isTaskState(value: unknown): value is TaskState {
  const task = value as TaskState | null;
  return typeof task === 'object' && task !== null && typeof task.task_id === 'string' && typeof task.state === 'string';
}

/** Create a store. `maxFinished` bounds how many finished, unwatched tasks are remembered. */
export function createTaskStore({ maxFinished = 1000 }: { maxFinished?: number } = {}): TaskStore {
  const records = new Map<string, TaskRecord>();
  const listeners = new Map<string, Set<RecordListener>>();
  // Finished tasks nobody watches any more, oldest first (a Map keeps insertion order).
  const released = new Map<string, true>();

  function set(taskId: string, record: TaskRecord): void {
    const frozen = Object.freeze(record);
    records.set(taskId, frozen);
    for (const listener of [...(listeners.get(taskId) ?? [])]) listener(frozen);
  }

  return {
    get(taskId) {
      return records.get(taskId) ?? EMPTY_RECORD;
    },

    has(taskId) {
      return records.has(taskId);
    },

    apply(task) {
      if (!isTaskState(task)) return false;
      const current = records.get(task.task_id);
      if (!shouldReplace(current?.task, task)) return false;
      // A successful update clears an earlier subscribe error.
      set(task.task_id, { task: Object.freeze({ ...task }), error: null });
      return true;
    },

    setError(taskId, error) {
      const current = records.get(taskId) ?? EMPTY_RECORD;
      if (JSON.stringify(current.error) === JSON.stringify(error)) return;
      set(taskId, { task: current.task, error: error ? Object.freeze({ code: error.code, message: error.message }) : null });
    },

    release(taskId) {
      const record = records.get(taskId);
      if (!record) return;
      if (isTerminal(record.task?.state)) {
        released.delete(taskId);
        released.set(taskId, true);
        while (released.size > maxFinished) {
          const oldest = released.keys().next().value as string;
          released.delete(oldest);
          if (!listeners.has(oldest)) records.delete(oldest);
        }
        return;
      }
      if (!listeners.has(taskId)) records.delete(taskId);
    },

    subscribe(taskId, listener) {
      let set = listeners.get(taskId);
      if (!set) listeners.set(taskId, (set = new Set()));
      set.add(listener);
      released.delete(taskId);
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
