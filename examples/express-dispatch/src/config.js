// Settings for the dispatch app, read once from the environment.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

export const DEFAULTS = Object.freeze({
  brokerUrl: 'redis://127.0.0.1:6379/0',
  resultBackend: 'redis://127.0.0.1:6379/1',
  queue: 'celery',
  host: '127.0.0.1',
  port: 3000,
  client: 'celery-ts',
  tokenTtl: 900,
  sessionTtl: 8 * 3600,
  authRateLimit: 20,
  pushserverPublicUrl: 'http://127.0.0.1:8000',
  readyTimeoutMs: 3000,
  publishTimeoutMs: 3000,
  mongoUrl: 'mongodb://127.0.0.1:27017',
  mongoDb: 'app',
  mongoWorkersDb: 'workers',
  mongoTimeoutMs: 3000,
  staticDir: path.resolve(here, '..', '..', 'react-client', 'dist'),
});

export class ConfigError extends Error {}

const CLIENTS = ['celery-ts', 'celery-node'];
const MIN_SECRET_BYTES = 32;

function integer(env, name, fallback, { min = 0, max = Number.MAX_SAFE_INTEGER } = {}) {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer between ${min} and ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

/** A JSON object (Celery transport options, as the workers and pushserver read them); unset or blank is `{}`. */
function jsonObject(env, name) {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return {};
  let value;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    throw new ConfigError(`${name} must be a JSON object (e.g. {"master_name": "mymaster"}): ${err.message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError(`${name} must be a JSON object (e.g. {"master_name": "mymaster"}), got ${Array.isArray(value) ? 'an array' : JSON.stringify(value)}`);
  }
  return value;
}

/** Refuse a sentinel:// URL whose transport options do not name the master, before anything connects. */
function checkSentinel(urlName, url, optionsName, options) {
  if (/^sentinel:\/\//i.test(url) && !(typeof options.master_name === 'string' && options.master_name)) {
    throw new ConfigError(`${urlName} is a sentinel:// URL: set ${optionsName}='{"master_name": "mymaster"}' (the master's name the sentinels monitor)`);
  }
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
  if (Buffer.byteLength(secret, 'utf8') < MIN_SECRET_BYTES) {
    throw new ConfigError(`PUSHSERVER_SECRET must be at least ${MIN_SECRET_BYTES} bytes (the pushserver refuses shorter ones): \`openssl rand -hex 32\``);
  }
  const client = text(env, 'CELERY_NODE_CLIENT', DEFAULTS.client);
  if (!CLIENTS.includes(client)) {
    throw new ConfigError(`CELERY_NODE_CLIENT must be one of ${CLIENTS.join(', ')}, got ${JSON.stringify(client)}`);
  }
  const mongoUrl = text(env, 'MONGO_URL', DEFAULTS.mongoUrl);
  if (!/^mongodb(\+srv)?:\/\//.test(mongoUrl)) {
    throw new ConfigError(`MONGO_URL must be a mongodb:// or mongodb+srv:// connection string, got ${JSON.stringify(mongoUrl)}`);
  }
  const ttlLimits = { min: 1, max: 7 * 24 * 3600 };
  const brokerUrl = text(env, 'CELERY_BROKER_URL', DEFAULTS.brokerUrl);
  const resultBackend = text(env, 'CELERY_RESULT_BACKEND', DEFAULTS.resultBackend);
  // The workers' and pushserver's JSON: Sentinel's master_name, sentinel_kwargs, ...
  const brokerTransportOptions = jsonObject(env, 'CELERY_BROKER_TRANSPORT_OPTIONS');
  const backendTransportOptions = jsonObject(env, 'CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS');
  checkSentinel('CELERY_BROKER_URL', brokerUrl, 'CELERY_BROKER_TRANSPORT_OPTIONS', brokerTransportOptions);
  checkSentinel('CELERY_RESULT_BACKEND', resultBackend, 'CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS', backendTransportOptions);
  return {
    client,
    brokerUrl,
    resultBackend,
    brokerTransportOptions,
    backendTransportOptions,
    queue: text(env, 'CELERY_QUEUE', DEFAULTS.queue),
    host: text(env, 'HOST', DEFAULTS.host),
    port: integer(env, 'PORT', DEFAULTS.port, { max: 65535 }),
    secret,
    // TOKEN_TTL is the older name of TOKEN_TTL_SECONDS.
    tokenTtl: integer(env, 'TOKEN_TTL_SECONDS', integer(env, 'TOKEN_TTL', DEFAULTS.tokenTtl, ttlLimits), ttlLimits),
    sessionTtl: integer(env, 'SESSION_TTL_SECONDS', DEFAULTS.sessionTtl, ttlLimits),
    // Register/login calls per client address per minute.
    authRateLimit: integer(env, 'AUTH_RATE_LIMIT', DEFAULTS.authRateLimit, { min: 1 }),
    // Set COOKIE_SECURE=1 behind HTTPS so the session cookie never travels in clear.
    secureCookie: text(env, 'COOKIE_SECURE', '0') === '1',
    pushserverPublicUrl: text(env, 'PUSHSERVER_PUBLIC_URL', DEFAULTS.pushserverPublicUrl),
    readyTimeoutMs: integer(env, 'CELERY_READY_TIMEOUT_MS', DEFAULTS.readyTimeoutMs, { min: 1 }),
    publishTimeoutMs: integer(env, 'CELERY_PUBLISH_TIMEOUT_MS', DEFAULTS.publishTimeoutMs, { min: 1 }),
    // Users and task records in MONGO_DB; the workers' nightly reports are read from MONGO_WORKERS_DB.
    mongoUrl,
    mongoDb: text(env, 'MONGO_DB', DEFAULTS.mongoDb),
    mongoWorkersDb: text(env, 'MONGO_WORKERS_DB', DEFAULTS.mongoWorkersDb),
    mongoTimeoutMs: integer(env, 'MONGO_TIMEOUT_MS', DEFAULTS.mongoTimeoutMs, { min: 1 }),
    staticDir: path.resolve(text(env, 'STATIC_DIR', DEFAULTS.staticDir)),
  };
}
