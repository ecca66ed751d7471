// Turning Celery's `sentinel://` URL lists and transport options into ioredis Sentinel options.
import { UnsupportedUrlError } from './errors.js';
import { failFastSettings, redactUrl, type FailFastOptions, type FailFastSettings } from './redisUrl.js';

/** Celery's transport options, as the workers take them (`broker_transport_options`, JSON in env vars). */
export type TransportOptions = Record<string, unknown>;

/** The ioredis options for a master found through Redis Sentinel. */
export interface SentinelConnectionOptions extends FailFastSettings {
  sentinels: { host: string; port: number }[];
  /** The master's name the sentinels monitor (Celery's `master_name`). */
  name: string;
  db: number;
  /** The master's credentials: the first URL's, as Celery reads them. */
  username?: string;
  password?: string;
  /** The sentinels' own credentials (Celery's `sentinel_kwargs`). */
  sentinelUsername?: string;
  sentinelPassword?: string;
  /** Bounds a sentinel that accepts the connection but never answers. */
  sentinelCommandTimeout: number;
  /** Reconnect as soon as a sentinel announces `+switch-master`, not at the next failed command. */
  failoverDetector: boolean;
  /** A master demoted to replica answers READONLY: reconnect (through the sentinels) instead of failing forever. */
  reconnectOnError: (err: Error) => boolean;
}

// What the dispatcher reads from the transport options, and what only concerns the workers' side.
const USED = ['master_name', 'sentinel_kwargs'];
const IGNORED = [
  'min_other_sentinels', 'visibility_timeout', 'polling_interval', 'fanout_prefix', 'fanout_patterns',
  'socket_timeout', 'socket_connect_timeout', 'socket_keepalive', 'socket_keepalive_options', 'retry_on_timeout',
  'health_check_interval', 'max_connections', 'priority_steps', 'sep', 'queue_order_strategy', 'unacked_key',
  'unacked_index_key', 'unacked_mutex_key', 'unacked_mutex_expire', 'unacked_restore_limit', 'max_retries',
  'interval_start', 'interval_step', 'interval_max', 'client_name',
];
const SENTINEL_KWARGS = ['password', 'username'];
const DEFAULT_SENTINEL_PORT = 26379;

/**
 * Check Celery transport options for the `role` ("broker" or "backend") and return them.
 * Options that only tune the workers' side are accepted and ignored; `global_keyprefix`
 * is refused (the workers would read prefixed queues the dispatcher never writes to).
 */
export function checkTransportOptions(options: unknown, role: 'broker' | 'backend'): TransportOptions {
  const what = `${role}TransportOptions`;
  if (options === undefined || options === null) return {};
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw new UnsupportedUrlError(`${what} must be an object (Celery's ${role}_transport_options), got ${Array.isArray(options) ? 'an array' : typeof options}`);
  }
  const record = options as TransportOptions;
  if ('global_keyprefix' in record) {
    throw new UnsupportedUrlError(`${what}.global_keyprefix is not supported: tasks would go to queues the workers do not read`);
  }
  const unknown = Object.keys(record).filter((key) => !USED.includes(key) && !IGNORED.includes(key));
  if (unknown.length) {
    throw new UnsupportedUrlError(`unknown ${what} key(s) ${unknown.join(', ')}; understood: ${USED.join(', ')} (and Celery's worker-side ${IGNORED.join(', ')})`);
  }
  if ('master_name' in record && (typeof record.master_name !== 'string' || record.master_name === '')) {
    throw new UnsupportedUrlError(`${what}.master_name must be a non-empty string`);
  }
  const kwargs = record.sentinel_kwargs;
  if (kwargs !== undefined) {
    if (kwargs === null || typeof kwargs !== 'object' || Array.isArray(kwargs)) {
      throw new UnsupportedUrlError(`${what}.sentinel_kwargs must be an object (e.g. {"password": "..."})`);
    }
    for (const [key, value] of Object.entries(kwargs)) {
      if (!SENTINEL_KWARGS.includes(key)) {
        throw new UnsupportedUrlError(`unknown ${what}.sentinel_kwargs key ${key}; understood: ${SENTINEL_KWARGS.join(', ')}`);
      }
      // Not echoed: it may be the sentinels' password.
      if (typeof value !== 'string') throw new UnsupportedUrlError(`${what}.sentinel_kwargs.${key} must be a string`);
    }
  }
  return record;
}

/** True for a Celery `sentinel://` URL (or `;`-separated list of them). */
export function isSentinelUrl(raw: string): boolean {
  return /^sentinel:\/\//i.test(raw.trim());
}

/**
 * Parse `sentinel://[user:password@]host[:port][/db];sentinel://…` with `master_name`
 * (and `sentinel_kwargs`) from the transport options, the way Celery and kombu read them:
 * the first URL's password, user and database are the master's; `sentinel_kwargs` holds
 * the sentinels' own credentials.
 */
export function parseSentinelUrl(
  raw: string,
  transportOptions: TransportOptions,
  role: 'broker' | 'backend' = 'broker',
  { connectTimeoutMs }: FailFastOptions = { connectTimeoutMs: 2000 },
): SentinelConnectionOptions {
  const parts = raw.split(';').map((part) => part.trim()).filter(Boolean);
  if (!parts.length) throw new UnsupportedUrlError(`the ${role} URL lists no sentinel`);
  const parsed = parts.map((part) => {
    let url: URL;
    try {
      url = new URL(part);
    } catch {
      throw new UnsupportedUrlError(`the ${role} URL is not a list of sentinel:// URLs (e.g. sentinel://10.0.0.1:26379/0;sentinel://10.0.0.2:26379/0)`);
    }
    const scheme = url.protocol.slice(0, -1).toLowerCase();
    if (scheme !== 'sentinel') {
      throw new UnsupportedUrlError(`a sentinel:// ${role} URL list cannot mix in '${scheme}://' (${redactUrl(part)})`);
    }
    if (!url.hostname) throw new UnsupportedUrlError(`a sentinel in the ${role} URL has no host: ${redactUrl(part)}`);
    if ([...url.searchParams.keys()].length) {
      throw new UnsupportedUrlError(`sentinel:// ${role} URLs take no parameters, got ${redactUrl(part)}`);
    }
    const dbText = url.pathname.replace(/^\//, '');
    const db = dbText === '' ? 0 : Number(dbText);
    if (!/^\d*$/.test(dbText) || !Number.isInteger(db) || db < 0) {
      throw new UnsupportedUrlError(`the database in ${redactUrl(part)} must be a number (e.g. /0), got '${dbText}'`);
    }
    return { url, db };
  });
  const masterName = transportOptions.master_name;
  if (typeof masterName !== 'string' || masterName === '') {
    throw new UnsupportedUrlError(`a sentinel:// ${role} URL needs the master's name: pass ${role}TransportOptions {"master_name": "mymaster"}`);
  }
  const first = parsed[0]!;
  const options: SentinelConnectionOptions = {
    sentinels: parsed.map(({ url }) => ({
      host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: url.port === '' ? DEFAULT_SENTINEL_PORT : Number(url.port),
    })),
    name: masterName,
    db: first.db,
    ...failFastSettings(connectTimeoutMs),
    sentinelCommandTimeout: connectTimeoutMs,
    failoverDetector: true,
    reconnectOnError: (err: Error) => /^READONLY\b/.test(err.message),
  };
  if (first.url.username) options.username = decodeURIComponent(first.url.username);
  if (first.url.password) options.password = decodeURIComponent(first.url.password);
  const kwargs = (transportOptions.sentinel_kwargs ?? {}) as Record<string, string>;
  if (kwargs.username !== undefined) options.sentinelUsername = kwargs.username;
  if (kwargs.password !== undefined) options.sentinelPassword = kwargs.password;
  return options;
}
