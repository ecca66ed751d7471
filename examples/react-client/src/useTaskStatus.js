// React hooks over the shared task socket, built on useSyncExternalStore.
import { useCallback, useEffect, useSyncExternalStore } from 'react';
import { taskSocket } from './taskSocket.js';

/**
 * Watch a Celery task live: returns `{task, error}` where `task` is the latest
 * TaskState (null until the first snapshot arrives) and `error` a refused
 * subscription (`{code, message}`), e.g. an expired token.
 *
 * Subscribes on mount (and again after every reconnect); unsubscribes when the
 * last component watching the task unmounts. `client` is for tests.
 */
export function useTaskStatus(taskId, token, { client = taskSocket } = {}) {
  useEffect(() => {
    if (!taskId) return undefined;
    return client.watch(taskId, token);
  }, [client, taskId, token]);

  const subscribe = useCallback(
    (onChange) => (taskId ? client.store.subscribe(taskId, onChange) : () => {}),
    [client, taskId],
  );
  const getSnapshot = () => client.store.get(taskId);
  return useSyncExternalStore(subscribe, getSnapshot, getSnapshot);
}
