// Hooks over a TaskClient, built on useSyncExternalStore.
import { useCallback, useSyncExternalStore } from 'react';
import { EMPTY_RECORD, EMPTY_WORKFLOW_RECORD } from '@celery-pushserver/client';
import type { ConnectionInfo, TaskClient, TaskRecord, WorkflowRecord } from '@celery-pushserver/client';
import { useClientOrProvided } from './context.js';

/** Options of useTaskStatus. */
export interface UseTaskStatusOptions {
  /** The task's token; without one the client uses its connection token or asks its `getToken`. */
  token?: string;
  /** Use this client instead of the provider's. */
  client?: TaskClient;
}

/**
 * Watch a Celery task live: returns `{task, error}` where `task` is the latest
 * TaskState (null until the first snapshot arrives) and `error` why the task
 * cannot be watched (`{code, message}`), e.g. a token that was refused.
 *
 * Subscribes on mount (and again after every reconnect or token refresh);
 * unsubscribes when the last component watching the task unmounts. A null
 * or undefined `taskId` watches nothing.
 */
export function useTaskStatus(taskId: string | null | undefined, options: UseTaskStatusOptions = {}): TaskRecord {
  const client = useClientOrProvided(options.client);
  const { token } = options;
  const subscribe = useCallback(
    (onStoreChange: () => void) => (taskId ? client.watch(taskId, undefined, { token, onChange: onStoreChange }) : () => {}),
    [client, taskId, token],
  );
  const getSnapshot = useCallback(() => (taskId ? client.record(taskId) : EMPTY_RECORD), [client, taskId]);
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
}

/**
 * Watch a group, chord or chain live by its workflow id: returns `{workflow, error}`
 * where `workflow` is the latest WorkflowState (`state`, `total`, `counts`,
 * `percent`, `task_ids`, …; null until the first snapshot) and `error` why it
 * cannot be watched. Subscribes on mount and after every reconnect; a null or
 * undefined `workflowId` watches nothing. `options.token` must name the workflow id.
 */
export function useWorkflowStatus(workflowId: string | null | undefined, options: UseTaskStatusOptions = {}): WorkflowRecord {
  const client = useClientOrProvided(options.client);
  const { token } = options;
  const subscribe = useCallback(
    (onStoreChange: () => void) => (
      workflowId ? client.watchWorkflow(workflowId, undefined, { token, onChange: onStoreChange }) : () => {}
    ),
    [client, workflowId, token],
  );
  const getSnapshot = useCallback(
    () => (workflowId ? client.workflowRecord(workflowId) : EMPTY_WORKFLOW_RECORD),
    [client, workflowId],
  );
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
}

/** The shared connection's `{status, error}`; status is `connected`, `connecting` or `offline`. */
export function useConnection(options: { client?: TaskClient } = {}): ConnectionInfo {
  const client = useClientOrProvided(options.client);
  const subscribe = useCallback((onStoreChange: () => void) => client.onConnection(onStoreChange), [client]);
  const getSnapshot = useCallback(() => client.connection, [client]);
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
}
