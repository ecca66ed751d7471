// @celery-pushserver/client: watch Celery tasks live through celery-pushserver.
export { createTaskClient } from './client.js';
export type {
  ConnectionListener, GetToken, TaskClient, TaskClientOptions, TaskListener, TokenResult, WaitOptions, WatchOptions,
} from './client.js';
export {
  ClientClosedError, ForbiddenError, TaskClientError, UnauthorizedError, WaitTimeoutError, errorFromProblem,
} from './errors.js';
export { PRECEDENCE, TERMINAL_STATES, isTerminal, shouldReplace } from './precedence.js';
export { createTaskStore, EMPTY_RECORD } from './store.js';
export type { RecordListener, TaskStore } from './store.js';
export type {
  ConnectionInfo, ConnectionStatus, ResultFormat, TaskProblem, TaskProgress, TaskRecord, TaskState, TaskStateName,
  WorkflowKind, WorkflowRecord, WorkflowState, WorkflowUpdate,
} from './types.js';
export { EMPTY_WORKFLOW_RECORD } from './workflows.js';
export type { WatchWorkflowOptions, WorkflowListener } from './workflows.js';
