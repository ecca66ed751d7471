// Turning a Celery-style redis:// or rediss:// broker URL into ioredis options, with fail-fast defaults.
import fs from 'node:fs';
import net from 'node:net';
import { UnsupportedUrlError } from './errors.js';

/** The ioredis settings that make a command fail at once while the connection keeps reconnecting. */
export interface FailFastSettings {
  connectTimeout: number;
  enableOfflineQueue: boolean;
  maxRetriesPerRequest: number;
  retryStrategy: (attempt: number) => number;
}

/** The ioredis options both Node Celery clients end up connecting with. */
export interface RedisConnectionOptions extends FailFastSettings {
  host: string;
  port: number;
  db: number;
  username?: string;
  password?: string;
  tls?: { servername?: string; rejectUnauthorized: boolean; ca?: string };
}

/** Timeouts that decide how fast a dispatch fails while the broker is away. */
export interface FailFastOptions {
  connectTimeoutMs: number;
}

const KNOWN_PARAMS = ['ssl_cert_reqs', 'ssl_ca_certs'];
const CERT_NONE = new Set(['none', 'cert_none']);
const CERT_REQUIRED = new Set(['required', 'cert_required', 'optional', 'cert_optional']);

/**
 * ioredis normally queues commands while disconnected and retries each 20 times,
 * so a publish during an outage hangs for seconds and then rejects wherever nobody
 * awaits it; with these, commands fail at once while the connection keeps reconnecting.
 */
export function failFastSettings(connectTimeoutMs: number): FailFastSettings {
  return {
    connectTimeout: connectTimeoutMs,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy: (attempt: number) => Math.min(attempt * 200, 2000),
  };
}

/** The URL (or `;`-separated URL list) with every password hidden, for error messages and logs. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^@/;]*)@/g, (_, auth: string) => `//${auth.includes(':') ? `${auth.split(':')[0]}:***` : '***'}@`);
}

/**
 * Parse `redis://[user:password@]host[:port][/db]` or `rediss://…` (TLS, Celery's
 * `ssl_cert_reqs` and `ssl_ca_certs` parameters understood) into fail-fast ioredis options.
 */
export function parseRedisUrl(raw: string, { connectTimeoutMs }: FailFastOptions = { connectTimeoutMs: 2000 }): RedisConnectionOptions {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    // Not echoed: an unparseable URL may still hold a password.
    throw new UnsupportedUrlError('the broker URL is not a URL (e.g. redis://127.0.0.1:6379/0)');
  }
  const scheme = url.protocol.slice(0, -1).toLowerCase();
  if (scheme === 'sentinel') {
    throw new UnsupportedUrlError(`a sentinel:// URL is read by parseSentinelUrl, with the master's name from the transport options (createDispatcher does both)`);
  }
  if (scheme !== 'redis' && scheme !== 'rediss') {
    throw new UnsupportedUrlError(
      `unsupported broker URL scheme '${scheme}://' in ${redactUrl(raw)}: @celery-pushserver/node dispatches through redis://, rediss:// or sentinel:// brokers`,
    );
  }
  if (!url.hostname) throw new UnsupportedUrlError(`the broker URL has no host: ${redactUrl(raw)}`);
  const port = url.port === '' ? 6379 : Number(url.port);
  const dbText = url.pathname.replace(/^\//, '');
  const db = dbText === '' ? 0 : Number(dbText);
  if (!/^\d*$/.test(dbText) || !Number.isInteger(db) || db < 0) {
    throw new UnsupportedUrlError(`the database in ${redactUrl(raw)} must be a number (e.g. /0), got '${dbText}'`);
  }
  const unknown = [...url.searchParams.keys()].filter((key) => !KNOWN_PARAMS.includes(key));
  if (unknown.length) {
    throw new UnsupportedUrlError(`unknown broker URL parameter(s) ${unknown.join(', ')}; known: ${KNOWN_PARAMS.join(', ')}`);
  }
  const hostname = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const options: RedisConnectionOptions = {
    host: hostname,
    port,
    db,
    ...failFastSettings(connectTimeoutMs),
  };
  if (url.username) options.username = decodeURIComponent(url.username);
  if (url.password) options.password = decodeURIComponent(url.password);
  const certReqs = url.searchParams.get('ssl_cert_reqs');
  const caFile = url.searchParams.get('ssl_ca_certs');
  if (scheme === 'redis') {
    if (certReqs !== null || caFile !== null) {
      throw new UnsupportedUrlError(`ssl_cert_reqs / ssl_ca_certs need a rediss:// URL, got ${redactUrl(raw)}`);
    }
    return options;
  }
  let rejectUnauthorized = true;
  if (certReqs !== null) {
    const value = certReqs.toLowerCase();
    if (CERT_NONE.has(value)) rejectUnauthorized = false;
    else if (!CERT_REQUIRED.has(value)) {
      throw new UnsupportedUrlError(`ssl_cert_reqs must be required, optional or none, got '${certReqs}'`);
    }
  }
  // SNI carries host names only (RFC 6066); for an IP the certificate is checked against the IP.
  options.tls = net.isIP(hostname) ? { rejectUnauthorized } : { servername: hostname, rejectUnauthorized };
  if (caFile !== null) {
    try {
      options.tls.ca = fs.readFileSync(caFile, 'utf8');
    } catch (err) {
      throw new UnsupportedUrlError(`cannot read ssl_ca_certs file ${caFile}: ${(err as Error).message}`);
    }
  }
  return options;
}
