// createDispatcher: send Celery tasks from Node with celery-ts or celery-node, never crashing the process.
import { randomUUID } from 'node:crypto';
import { BrokerUnavailableError, DispatchArgumentError, DispatcherClosedError, UnsupportedUrlError } from './errors.js';
import { parseRedisUrl, redactUrl } from './redisUrl.js';
import { checkTransportOptions, isSentinelUrl, parseSentinelUrl, type TransportOptions } from './sentinelUrl.js';
import { readyWaiter, watchOutages, withTimeout } from './connection.js';
import { celeryNodeTransport, celeryTsTransport, type Transport } from './transports.js';

/** The Node Celery client that builds the messages. */
export type CeleryClientName = 'celery-ts' | 'celery-node';

/** Options of {@link createDispatcher}. */
export interface DispatcherOptions {
  /**
   * `redis://[user:password@]host[:port][/db]`, `rediss://…` (Celery's `ssl_cert_reqs` / `ssl_ca_certs`
   * understood), or Redis Sentinel: `sentinel://[:password@]host[:port][/db];sentinel://…` listing the
   * sentinels, with `master_name` in `brokerTransportOptions` (the first URL's password and db are the master's).
   */
  brokerUrl: string;
  /**
   * Celery's `broker_transport_options` (the workers' JSON): `master_name` and `sentinel_kwargs`
   * (`password`, `username`: the sentinels' own) are used; options that tune only the workers'
   * side (`visibility_timeout`, …) are ignored.
   */
  brokerTransportOptions?: TransportOptions;
  /**
   * Accepted for symmetry with the clients' own `createClient`, and checked, but no
   * connection is opened: dispatching never reads results (watch them through
   * celery-pushserver), which spares celery-ts's psubscribe to every result.
   */
  backendUrl?: string;
  /** Celery's `result_backend_transport_options`, checked like `brokerTransportOptions` (a sentinel:// backend needs `master_name`). */
  backendTransportOptions?: TransportOptions;
  /** Which Node Celery client builds the messages (default "celery-ts", the article's choice). */
  client?: CeleryClientName;
  /** The Celery queue (routing key) tasks go to (default "celery"). */
  queue?: string;
  /** How long `dispatch()` waits for a broker connection before rejecting (default 3000 ms). */
  readyTimeoutMs?: number;
  /** How long `dispatch()` waits for Redis to take the message (default 3000 ms). */
  publishTimeoutMs?: number;
  /** Where outage and recovery lines go (default: console). */
  logger?: Pick<Console, 'warn' | 'info'>;
}

/** What {@link Dispatcher.dispatch} resolves to. */
export interface DispatchResult {
  /** The task's Celery id, chosen before publishing: the id workers, events and tokens use. */
  taskId: string;
}

/** Options of one {@link Dispatcher.dispatch} call. */
export interface DispatchOptions {
  /** Use this task id instead of a fresh UUID (e.g. to mint its token before publishing). */
  taskId?: string;
}

/** Sends Celery task messages; see {@link createDispatcher}. */
export interface Dispatcher {
  /** The client building the messages. */
  readonly client: CeleryClientName;
  /** Resolve once the broker connection is up; reject with BrokerUnavailableError after `readyTimeoutMs`. */
  ready(): Promise<void>;
  /**
   * Publish task `name` with `args` / `kwargs` and resolve to its id once Redis holds the message.
   * Rejects with BrokerUnavailableError (never an unhandled rejection) when the broker cannot take it.
   */
  dispatch(name: string, args?: unknown[], kwargs?: Record<string, unknown>, options?: DispatchOptions): Promise<DispatchResult>;
  /** `"ready"` when connected, else ioredis's state (`"connecting"`, `"reconnecting"`, `"end"`, …). */
  status(): string;
  /** Drop the broker connection; later dispatches reject with DispatcherClosedError. */
  close(): Promise<void>;
}

const TASK_NAME_RE = /^[A-Za-z_][\w.:-]{0,254}$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function checkArguments(name: unknown, args: unknown, kwargs: unknown, taskId: unknown): void {
  if (typeof name !== 'string' || !TASK_NAME_RE.test(name)) {
    throw new DispatchArgumentError(`task name must be a dotted Celery task name, got ${JSON.stringify(name)}`);
  }
  if (!Array.isArray(args)) throw new DispatchArgumentError('args must be an array');
  if (kwargs === null || typeof kwargs !== 'object' || Array.isArray(kwargs)) {
    throw new DispatchArgumentError('kwargs must be a plain object');
  }
  if (typeof taskId !== 'string' || !UUID_RE.test(taskId)) {
    throw new DispatchArgumentError(`taskId must be a UUID, got ${JSON.stringify(taskId)}`);
  }
}

function positive(value: number | undefined, fallback: number, what: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${what} must be a positive integer of milliseconds`);
  return value;
}

/**
 * Create a dispatcher over celery-ts or celery-node. It connects at once; a broker that
 * is down at start-up is not an error here, dispatches reject until it is back.
 * Throws UnsupportedUrlError for a URL it cannot use and ClientNotInstalledError when
 * the chosen client package is missing.
 */
export async function createDispatcher(options: DispatcherOptions): Promise<Dispatcher> {
  const client = options.client ?? 'celery-ts';
  if (client !== 'celery-ts' && client !== 'celery-node') {
    throw new UnsupportedUrlError(`client must be "celery-ts" or "celery-node", got ${JSON.stringify(client)}`);
  }
  const readyTimeoutMs = positive(options.readyTimeoutMs, 3000, 'readyTimeoutMs');
  const publishTimeoutMs = positive(options.publishTimeoutMs, 3000, 'publishTimeoutMs');
  const queue = options.queue ?? 'celery';
  const logger = options.logger ?? console;
  const failFast = { connectTimeoutMs: Math.min(readyTimeoutMs, 10_000) };
  const brokerTransportOptions = checkTransportOptions(options.brokerTransportOptions, 'broker');
  const backendTransportOptions = checkTransportOptions(options.backendTransportOptions, 'backend');
  const redis = isSentinelUrl(options.brokerUrl)
    ? parseSentinelUrl(options.brokerUrl, brokerTransportOptions, 'broker', failFast)
    : parseRedisUrl(options.brokerUrl, failFast);
  if (options.backendUrl !== undefined) {
    if (isSentinelUrl(options.backendUrl)) {
      parseSentinelUrl(options.backendUrl, backendTransportOptions, 'backend');
    } else {
      try {
        new URL(options.backendUrl);
      } catch {
        throw new UnsupportedUrlError(`backendUrl is not a URL: ${redactUrl(options.backendUrl)}`);
      }
    }
  }
  const make = client === 'celery-ts' ? celeryTsTransport : celeryNodeTransport;
  const transport: Transport = await make({ redis, queue });
  const label = `[celery-pushserver/node] broker ${redactUrl(options.brokerUrl)}`;
  watchOutages(transport.redis, label, (level, message) => logger[level](message));
  const waitReady = readyWaiter(transport.redis, readyTimeoutMs);
  let closed = false;

  return {
    client,
    async ready() {
      if (closed) throw new DispatcherClosedError();
      try {
        await waitReady();
      } catch (err) {
        throw new BrokerUnavailableError(`the broker is unavailable: ${(err as Error).message}`, { cause: err });
      }
    },
    async dispatch(name, args = [], kwargs = {}, { taskId = randomUUID() } = {}) {
      if (closed) throw new DispatcherClosedError();
      checkArguments(name, args, kwargs, taskId);
      try {
        await waitReady();
        await withTimeout(transport.publish(taskId, name, args, kwargs), publishTimeoutMs, 'publishing the task');
      } catch (err) {
        throw new BrokerUnavailableError(`could not send ${name} to the broker: ${(err as Error).message}`, { cause: err });
      }
      return { taskId };
    },
    status() {
      return transport.redis.status;
    },
    async close() {
      if (closed) return;
      closed = true;
      // quit() waits for a connection that may never come back; disconnect() does not.
      transport.redis.disconnect();
    },
  };
}
