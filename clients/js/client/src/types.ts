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

/**
 * What a SUCCESS state's `result` is: the returned value as JSON, Celery's repr string of it
 * (no value in the result backend, or the server runs `--forward-results repr`), or left out
 * because its JSON is larger than the server's `--max-result-bytes`.
 */
export type ResultFormat = 'json' | 'repr' | 'too_large';

/** Everything the pushserver knows about one task (docs/protocol.md § TaskState). */
export interface TaskState {
  task_id: string;
  name: string | null;
  state: TaskStateName;
  progress: TaskProgress | null;
  /**
   * On SUCCESS: what `result_format` says — the value the task returned, as JSON (`"json"`);
   * Celery's repr string of it (`"repr"`); null, the value being too large to send (`"too_large"`).
   * Null in every other state.
   */
  result: unknown;
  /** How to read `result` on SUCCESS (docs/protocol.md § TaskState); null in every other state. */
  result_format: ResultFormat | null;
  /** On FAILURE, RETRY, REVOKED, REJECTED: the exception as a readable string (its repr). */
  exception: string | null;
  /** The exception's class name (`ValueError`), to branch on without parsing `exception`; null when unknown. */
  exception_type: string | null;
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

/** The kinds of workflow the pushserver follows. */
export type WorkflowKind = 'group' | 'chord' | 'chain';

/** A group's, chord's or chain's progress as one object (docs/protocol.md § WorkflowState). */
export interface WorkflowState {
  workflow_id: string;
  kind: WorkflowKind;
  /** PENDING until a member starts, STARTED while it runs, FAILURE once it cannot succeed, SUCCESS when done. */
  state: 'PENDING' | 'STARTED' | 'SUCCESS' | 'FAILURE';
  /** Members; a chain's may grow as its later steps are sent. */
  total: number;
  /** How many members are in each state; adds up to `total`. */
  counts: Partial<Record<TaskStateName, number>>;
  completed: number;
  failed: number;
  /** 0-100: finished members plus running members' own progress, over `total`. */
  percent: number;
  /** The members, in workflow order (a chain's: first task first). */
  task_ids: string[];
  updated_at: number | null;
}

/**
 * A `workflow:update` as it comes on the wire: a WorkflowState whose `task_ids` are left out when they did
 * not change since the last update or ack (docs/protocol.md § workflow:update). The client merges it into the
 * state it holds, so listeners and `workflowRecord` always see whole WorkflowStates.
 */
export type WorkflowUpdate = Omit<WorkflowState, 'task_ids'> & { task_ids?: string[] };

/** What the client holds for one workflow; replaced (never mutated) on every change. */
export interface WorkflowRecord {
  readonly workflow: WorkflowState | null;
  readonly error: TaskProblem | null;
}
