/** The states a task can be in, as the pushserver reports them. */
export type TaskStateName =
  | 'PENDING'
  | 'SENT'
  | 'RECEIVED'
  | 'STARTED'
  | 'PROGRESS'
  | 'RETRY'
  | 'SUCCESS'
  | 'FAILURE'
  | 'REVOKED'
  | 'REJECTED';

/** The `progress` object of a TaskState: the last `task-progress` event's fields. */
export interface TaskProgress {
  current: number | null;
  total: number | null;
  percent: number | null;
  message: string | null;
}

/** Everything the pushserver knows about one task (docs/protocol.md § TaskState). */
export interface TaskState {
  task_id: string;
  name: string | null;
  state: TaskStateName;
  progress: TaskProgress | null;
  /** On SUCCESS: the result as Celery puts it in events. */
  result: unknown;
  /** On FAILURE, RETRY, REVOKED, REJECTED: the exception's repr. */
  exception: string | null;
  traceback: string | null;
  worker: string | null;
  retries: number;
  runtime: number | null;
  sent_at: number | null;
  received_at: number | null;
  started_at: number | null;
  finished_at: number | null;
  updated_at: number | null;
  /** Type of the newest event merged (`task-progress`, `task-succeeded`, …). */
  event: string | null;
}

/** Why a task cannot be watched: a refused subscribe, an expired token, a failed getToken. */
export interface TaskProblem {
  code: string;
  message: string;
}

/** What the client holds for one task; replaced (never mutated) on every change. */
export interface TaskRecord {
  readonly task: TaskState | null;
  readonly error: TaskProblem | null;
}

/** The shared connection's status. */
export type ConnectionStatus = 'connected' | 'connecting' | 'offline';

/** The connection status and, when not connected, the last reason given. */
export interface ConnectionInfo {
  readonly status: ConnectionStatus;
  readonly error: string | null;
}
