// What the client keeps for each watched id, task or workflow alike: who
// holds it, which token its subscribes use, and how long to wait before asking
// again after `too_many`.

/** One watched id's subscription state. */
export interface WatchEntry {
  refs: number;
  /** The token last passed to watch/wait. */
  given: string | undefined;
  /** The token subscribes use (given, or from getToken). */
  token: string | undefined;
  /** `token` came from getToken and the server has not answered it yet. */
  fresh: boolean;
  /** Bumped by every subscribe; answers to older ones are ignored. */
  generation: number;
  /** Delay before asking again after `too_many`, doubled each time (reset by a success). */
  backoff: number;
}

export const RETRY_DELAY_MS = 1000;
export const MAX_BACKOFF_MS = 30_000;

/** A new entry for an id first watched with `token`. */
export function newWatchEntry(token: string | undefined): WatchEntry {
  return { refs: 0, given: token, token, fresh: false, generation: 0, backoff: RETRY_DELAY_MS };
}
