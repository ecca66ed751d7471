// Settings for the dispatch app, read once from the environment.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isRedisFamily, redisConnection, RedisUrlError } from './redisConnection.js';

const here = path.dirname(fileURLToPath(import.meta.url));

export const DEFAULTS = Object.freeze({
  brokerUrl: 'redis://127.0.0.1:6379/0',
  resultBackend: 'redis://127.0.0.1:6379/1',
  queue: 'celery',
  host: '127.0.0.1',
  port: 3000,
  tokenTtl: 900,
  pushserverPublicUrl: 'http://127.0.0.1:8000',
  readyTimeoutMs: 3000,
  publishTimeoutMs: 3000,
  staticDir: path.resolve(here, '..', '..', 'react-client', 'dist'),
});

export class ConfigError extends Error {}

function integer(env, name, fallback, { min = 0, max = Number.MAX_SAFE_INTEGER } = {}) {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer between ${min} and ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function jsonObject(env, name) {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return {};
  let value;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    throw new ConfigError(`${name} must be a JSON object, e.g. {"master_name": "mymaster"} (${err.message})`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError(`${name} must be a JSON object, e.g. {"master_name": "mymaster"}`);
  }
  return value;
}

function text(env, name, fallback) {
  const raw = env[name];
  return raw === undefined || raw.trim() === '' ? fallback : raw.trim();
}

/**
 * Read the app's settings from `env` (process.env by default).
 * Throws ConfigError naming the variable when a value is unusable.
 */
export function readConfig(env = process.env) {
  // PUSHSERVER_SECRET may be a comma list during a rotation (the server
  // accepts each); tokens are always signed with the first.
  const secret = (env.PUSHSERVER_SECRET ?? '').split(',').map((s) => s.trim()).find(Boolean);
  if (!secret) {
    // Tokens signed with an empty or made-up secret would all be refused by
    // the pushserver: better to stop here than serve a page that never updates.
    throw new ConfigError('PUSHSERVER_SECRET is required (the same secret the pushserver verifies tokens with)');
  }
  const brokerUrl = text(env, 'CELERY_BROKER_URL', DEFAULTS.brokerUrl);
  const resultBackend = text(env, 'CELERY_RESULT_BACKEND', DEFAULTS.resultBackend);
  const brokerTransportOptions = jsonObject(env, 'CELERY_BROKER_TRANSPORT_OPTIONS');
  const backendTransportOptions = jsonObject(env, 'CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS');
  // A rediss:// URL without ssl_cert_reqs, or a sentinel:// one without master_name, fails here, not later.
  for (const [name, url, options] of [['CELERY_BROKER_URL', brokerUrl, brokerTransportOptions],
    ['CELERY_RESULT_BACKEND', resultBackend, backendTransportOptions]]) {
    try {
      if (isRedisFamily(url)) redisConnection(url, options, name);
    } catch (err) {
      if (err instanceof RedisUrlError) throw new ConfigError(err.message);
      throw new ConfigError(`${name} is not a valid URL`);
    }
  }
  return {
    brokerUrl,
    resultBackend,
    brokerTransportOptions,
    backendTransportOptions,
    queue: text(env, 'CELERY_QUEUE', DEFAULTS.queue),
    host: text(env, 'HOST', DEFAULTS.host),
    port: integer(env, 'PORT', DEFAULTS.port, { max: 65535 }),
    secret,
    tokenTtl: integer(env, 'TOKEN_TTL', DEFAULTS.tokenTtl, { min: 1, max: 7 * 24 * 3600 }),
    pushserverPublicUrl: text(env, 'PUSHSERVER_PUBLIC_URL', DEFAULTS.pushserverPublicUrl),
    readyTimeoutMs: integer(env, 'CELERY_READY_TIMEOUT_MS', DEFAULTS.readyTimeoutMs, { min: 1 }),
    publishTimeoutMs: integer(env, 'CELERY_PUBLISH_TIMEOUT_MS', DEFAULTS.publishTimeoutMs, { min: 1 }),
    staticDir: path.resolve(text(env, 'STATIC_DIR', DEFAULTS.staticDir)),
  };
}
