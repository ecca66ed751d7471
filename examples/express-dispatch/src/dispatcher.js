// Sending Celery task messages from Node with celery-node, guarded against its weak points.
//
// celery-node's `client.sendTask()` publishes in a promise it never returns
// or catches: with Redis down the publish rejects unhandled (which kills a
// Node >= 15 process) and the caller has already been told the task was sent.
// So we build the very same protocol-v2 message with the client's own
// `createTaskMessage` and await `broker.publish` ourselves, after awaiting the
// client's readiness, each under a timeout. What reaches the worker is exactly
// what `sendTask` would have sent.
import { randomUUID } from 'node:crypto';
import celery from 'celery-node';
import { isRedisFamily, redisConnection } from './redisConnection.js';

export class BrokerUnavailableError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = 'BrokerUnavailableError';
  }
}

// ioredis defaults queue commands while disconnected and retry each one 20
// times, so a request would hang for seconds before failing. Fail fast
// instead; the connection itself keeps reconnecting in the background.
const REDIS_OPTIONS = Object.freeze({
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  connectTimeout: 2000,
  retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
});

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Dispatches task messages to Celery through one celery-node client per queue. */
export class CeleryDispatcher {
  constructor({
    brokerUrl, resultBackend, brokerTransportOptions = {}, backendTransportOptions = {}, queue = 'celery',
    readyTimeoutMs = 3000, publishTimeoutMs = 3000, logger = console,
  }) {
    this.brokerUrl = brokerUrl;
    this.resultBackend = resultBackend;
    // TLS, passwords and Sentinel, from the same URLs and transport options Celery takes (redisConnection.js).
    this.brokerConnection = isRedisFamily(brokerUrl) ? redisConnection(brokerUrl, brokerTransportOptions, 'CELERY_BROKER_URL') : null;
    this.backendConnection = isRedisFamily(resultBackend)
      ? redisConnection(resultBackend, backendTransportOptions, 'CELERY_RESULT_BACKEND') : null;
    this.defaultQueue = queue;
    this.readyTimeoutMs = readyTimeoutMs;
    this.publishTimeoutMs = publishTimeoutMs;
    this.logger = logger;
    this.clients = new Map();
    this.pendingReady = new Map();
    this.closed = false;
  }

  /** The celery-node client for `queue`, created (and connected) on first use. */
  clientFor(queue = this.defaultQueue) {
    let client = this.clients.get(queue);
    if (!client) {
      if (this.closed) throw new BrokerUnavailableError('dispatcher is closed');
      client = celery.createClient(this.brokerConnection?.url ?? this.brokerUrl, this.backendConnection?.url ?? this.resultBackend, queue);
      if (this.brokerConnection) client.conf.CELERY_BROKER_OPTIONS = { ...REDIS_OPTIONS, ...this.brokerConnection.options };
      if (this.backendConnection) client.conf.CELERY_BACKEND_OPTIONS = { ...REDIS_OPTIONS, ...this.backendConnection.options };
      this.watchConnection(client.broker, `broker (queue ${queue})`);
      this.watchConnection(client.backend, 'result backend');
      this.clients.set(queue, client);
    }
    return client;
  }

  // Without an 'error' listener ioredis prints every failed reconnect attempt;
  // log each outage once and its end once.
  watchConnection(side, label) {
    const redis = side.redis;
    if (!redis || typeof redis.on !== 'function') return;
    let down = false;
    redis.on('error', (err) => {
      if (!down) this.logger.warn(`[dispatch] ${label} unavailable: ${err.message}`);
      down = true;
    });
    redis.on('ready', () => {
      if (down) this.logger.info(`[dispatch] ${label} connected again`);
      down = false;
    });
  }

  // celery-node's isReady() adds listeners on each call while disconnected;
  // share one pending check per client so a burst of requests adds one.
  ready(queue, client) {
    let pending = this.pendingReady.get(queue);
    if (!pending) {
      pending = withTimeout(client.isReady(), this.readyTimeoutMs, 'waiting for the broker')
        .finally(() => this.pendingReady.delete(queue));
      this.pendingReady.set(queue, pending);
    }
    return pending;
  }

  /**
   * Send task `task` with `args`/`kwargs` to `queue` under `taskId` (a fresh
   * UUID by default) and resolve to the task id once the broker has it.
   * Rejects with BrokerUnavailableError when the broker cannot take it.
   */
  async dispatch(task, args = [], kwargs = {}, { taskId = randomUUID(), queue = this.defaultQueue } = {}) {
    const client = this.clientFor(queue);
    try {
      await this.ready(queue, client);
      const { headers, properties, body } = client.createTaskMessage(taskId, task, args, kwargs);
      await withTimeout(
        client.broker.publish(body, '', client.conf.CELERY_QUEUE, headers, properties),
        this.publishTimeoutMs,
        'publishing the task',
      );
    } catch (err) {
      throw new BrokerUnavailableError(`could not send ${task} to the broker: ${err.message}`, { cause: err });
    }
    return taskId;
  }

  /** Connection status of every client, for a readiness probe. */
  status() {
    const queues = {};
    for (const [queue, client] of this.clients) {
      queues[queue] = { broker: client.broker.redis?.status ?? 'unknown', backend: client.backend.redis?.status ?? 'unknown' };
    }
    return queues;
  }

  /** Close every client's connections. */
  async close() {
    this.closed = true;
    const clients = [...this.clients.values()];
    this.clients.clear();
    await Promise.allSettled(clients.map(async (client) => {
      for (const side of [client.broker, client.backend]) {
        // quit() waits for a connection that may never come back; disconnect() does not.
        if (side.redis?.disconnect) side.redis.disconnect();
        else await side.disconnect();
      }
    }));
  }
}
