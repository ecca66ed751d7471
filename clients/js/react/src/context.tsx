// <TaskClientProvider>: hands one TaskClient to every hook below it.
import { createContext, useContext, useEffect, useRef, useState } from 'react';
import type { ReactNode } from 'react';
import { createTaskClient } from '@celery-pushserver/client';
import type { TaskClient, TaskClientOptions } from '@celery-pushserver/client';

const TaskClientContext = createContext<TaskClient | null>(null);

/** Props of TaskClientProvider: a client you created, or the options to create one. */
export type TaskClientProviderProps =
  | { client: TaskClient; children?: ReactNode }
  | (TaskClientOptions & { url: string; client?: undefined; children?: ReactNode });

/**
 * Provide a TaskClient to useTaskStatus, useConnection and useTaskClient.
 *
 * Pass `client` to share one you created (you close it), or `url` and the
 * options of createTaskClient: the provider then creates the client once and
 * closes it when it unmounts. Its `getToken` and `token` may change between
 * renders; the latest is used. Change the provider's `key` to connect elsewhere.
 */
export function TaskClientProvider(props: TaskClientProviderProps) {
  const { children } = props;
  const latest = useRef(props);
  latest.current = props;
  const [owned] = useState<TaskClient | null>(() => {
    if (props.client) return null;
    const { url, token, getToken, socket, socketOptions, ackTimeout, maxFinished } = props;
    return createTaskClient({
      url, socket, socketOptions, ackTimeout, maxFinished,
      token: token === undefined ? undefined : () => {
        const current = (latest.current as TaskClientOptions).token;
        return typeof current === 'function' ? current() : current;
      },
      getToken: getToken && ((taskId) => {
        const current = (latest.current as TaskClientOptions).getToken ?? getToken;
        return current(taskId);
      }),
    });
  });

  const mounts = useRef(0);
  useEffect(() => {
    if (!owned) return undefined;
    mounts.current += 1;
    return () => {
      mounts.current -= 1;
      // Decide after the current task: StrictMode unmounts and remounts at once.
      queueMicrotask(() => { if (mounts.current === 0) owned.close(); });
    };
  }, [owned]);

  const client = props.client ?? owned;
  return <TaskClientContext.Provider value={client}>{children}</TaskClientContext.Provider>;
}

/** The TaskClient of the nearest TaskClientProvider. Throws when there is none. */
export function useTaskClient(): TaskClient {
  return useClientOrProvided(undefined);
}

/** `client` when given, else the provider's; throws when there is neither. */
export function useClientOrProvided(client: TaskClient | undefined): TaskClient {
  const provided = useContext(TaskClientContext); // read every render: hooks keep their order
  if (client) return client;
  if (!provided) {
    throw new Error('useTaskClient: no TaskClient here; wrap your app in <TaskClientProvider client={...}> or <TaskClientProvider url="...">');
  }
  return provided;
}
