// @celery-pushserver/react: React hooks for watching Celery tasks live through celery-pushserver.
export { TaskClientProvider, useTaskClient } from './context.js';
export type { TaskClientProviderProps } from './context.js';
export { useConnection, useTaskStatus, useWorkflowStatus } from './hooks.js';
export type { UseTaskStatusOptions } from './hooks.js';
export type {
  ConnectionInfo, ConnectionStatus, TaskClient, TaskClientOptions, TaskProblem, TaskProgress, TaskRecord, TaskState,
  TaskStateName, WorkflowRecord, WorkflowState,
} from '@celery-pushserver/client';
