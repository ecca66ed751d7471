// Waiting on an ioredis connection and bounding a publish in time, without stray promises.

/** The part of an ioredis client the guards need (both Node Celery clients use ioredis 4). */
export interface RedisLike {
  status: string;
  once(event: string, listener: (...args: unknown[]) => void): unknown;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  removeListener(event: string, listener: (...args: unknown[]) => void): unknown;
  disconnect(): void;
}

/** Reject with `new Error(what timed out…)` unless `promise` settles within `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Resolve when `redis` is ready; reject on its next error or after `ms`.
 * Concurrent callers share one wait, so a burst of dispatches during an
 * outage adds two listeners, not two per request.
 */
export function readyWaiter(redis: RedisLike, ms: number): () => Promise<void> {
  let pending: Promise<void> | undefined;
  return () => {
    if (redis.status === 'ready') return Promise.resolve();
    if (!pending) {
      pending = new Promise<void>((resolve, reject) => {
        const onReady = () => { cleanup(); resolve(); };
        const onError = (err: unknown) => { cleanup(); reject(err instanceof Error ? err : new Error(String(err))); };
        const timer = setTimeout(() => { cleanup(); reject(new Error(`no connection to the broker within ${ms} ms`)); }, ms);
        function cleanup() {
          clearTimeout(timer);
          redis.removeListener('ready', onReady);
          redis.removeListener('error', onError);
        }
        redis.once('ready', onReady);
        redis.once('error', onError);
      }).finally(() => { pending = undefined; });
    }
    return pending;
  };
}

/** A log line per outage and per recovery, instead of ioredis printing every failed reconnect. */
export function watchOutages(redis: RedisLike, label: string, log: (level: 'warn' | 'info', message: string) => void): void {
  let down = false;
  redis.on('error', (err) => {
    if (!down) log('warn', `${label} unavailable: ${(err as Error)?.message ?? String(err)}`);
    down = true;
  });
  redis.on('ready', () => {
    if (down) log('info', `${label} connected again`);
    down = false;
  });
}
