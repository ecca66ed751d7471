// The shared socket's connection status, for a connection indicator.
import { useSyncExternalStore } from 'react';
import { taskSocket } from './taskSocket.js';

/** Returns `{status, error}`; status is one of CONNECTION's values. `client` is for tests. */
export function useConnection({ client = taskSocket } = {}) {
  return useSyncExternalStore(client.subscribeConnection, client.getConnection, client.getConnection);
}
