// The two Node Celery clients behind one small interface: build their own message, publish it awaited.
import { ClientNotInstalledError } from './errors.js';
import type { RedisConnectionOptions } from './redisUrl.js';
import type { SentinelConnectionOptions } from './sentinelUrl.js';
import type { RedisLike } from './connection.js';

/** Sends one task message; implemented over celery-ts or celery-node. */
export interface Transport {
  /** The ioredis connection the messages go through. */
  readonly redis: RedisLike;
  /** Put the message for task `name` with `taskId` on the broker; resolves once Redis has it. */
  publish(taskId: string, name: string, args: unknown[], kwargs: Record<string, unknown>): Promise<void>;
}

/** What a transport is built from. */
export interface TransportSetup {
  /** A single Redis server, or the master the sentinels name. */
  redis: RedisConnectionOptions | SentinelConnectionOptions;
  queue: string;
}

function isSentinel(redis: TransportSetup['redis']): redis is SentinelConnectionOptions {
  return 'sentinels' in redis;
}

async function load(name: 'celery-ts' | 'celery-node'): Promise<Record<string, unknown>> {
  try {
    const mod = (await import(name)) as Record<string, unknown>;
    return (mod.default ?? mod) as Record<string, unknown>;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') throw new ClientNotInstalledError(name, { cause: err });
    throw err;
  }
}

// celery-ts internals this module uses; they exist at run time but are private in its types.
interface CeleryTsModule {
  RedisTcpOptions: new (options: object) => object;
  RedisSentinelOptions: new (options: object) => object;
  RedisBroker: new (options: object) => { connection: RedisLike; publish(message: object): Promise<unknown> };
  Client: new (options: { brokers: object[]; id: string }) => { createTask(name: string): CeleryTsTask };
  Task: {
    createPacker(serializer: string, compressor: string): [{ pack(value: unknown): string }, string];
    packBody(options: { args: unknown[]; kwargs: object; packer: { pack(value: unknown): string } }): string;
    getEncodingMime(encoding: string): string;
    getContentTypeMime(serializer: string): string;
  };
  Serializer: { Json: string };
  Compressor: { Identity: string };
}
interface CeleryTsTask {
  createHeaders(options: object): object;
  createProperties(options: object): object;
  getDeliveryMode(): number;
}

/**
 * celery-ts (the article's "node-celery-ts"). Its `applyAsync()` picks the id
 * itself, hides it from TypeScript, publishes without awaiting (a Redis outage
 * then kills Node), and starts a result read that needs a backend (none: crash;
 * Redis: a psubscribe to every result, kept a day per task). So no Result and no
 * backend: the same message is built with celery-ts's own Task helpers, under an
 * id we choose, and the publish is awaited.
 */
export async function celeryTsTransport({ redis, queue }: TransportSetup): Promise<Transport> {
  const ts = (await load('celery-ts')) as unknown as CeleryTsModule;
  const options = isSentinel(redis) ? new ts.RedisSentinelOptions({ ...redis }) : new ts.RedisTcpOptions({ ...redis });
  const broker = new ts.RedisBroker(options);
  const client = new ts.Client({ brokers: [broker], id: crypto.randomUUID() });
  const serializer = ts.Serializer.Json;
  const compression = ts.Compressor.Identity;
  return {
    redis: broker.connection,
    async publish(id, name, args, kwargs) {
      const task = client.createTask(name);
      const [packer, encoding] = ts.Task.createPacker(serializer, compression);
      await broker.publish({
        body: ts.Task.packBody({ args, kwargs, packer }),
        'content-encoding': ts.Task.getEncodingMime(encoding),
        'content-type': ts.Task.getContentTypeMime(serializer),
        headers: task.createHeaders({ args, compression, eta: null, expires: null, id, kwargs }),
        properties: task.createProperties({ deliveryMode: task.getDeliveryMode(), encoding, id, priority: 0, queue }),
      });
    },
  };
}

interface CeleryNodeClient {
  conf: Record<string, unknown>;
  broker: { redis: RedisLike; publish(body: unknown, exchange: string, routingKey: string, headers: object, properties: object): Promise<unknown> };
  createTaskMessage(taskId: string, name: string, args: unknown[], kwargs: object): { headers: object; properties: object; body: unknown };
}

/**
 * celery-node. Its `sendTask()` publishes in a promise nobody awaits (a Redis
 * outage kills Node), and `isReady()` waits for the result backend as well.
 * So the message comes from its own `createTaskMessage` and is published
 * awaited; the backend connection is never opened.
 */
export async function celeryNodeTransport({ redis, queue }: TransportSetup): Promise<Transport> {
  const celery = (await load('celery-node')) as unknown as { createClient(broker: string, backend: string, queue: string): CeleryNodeClient };
  // Credentials, TLS and the sentinels travel in the options; the URL only picks celery-node's
  // Redis broker (ioredis lets the URL win over the options, so it carries nothing else).
  const bare = isSentinel(redis)
    ? `redis://127.0.0.1/${redis.db}` // ioredis asks the sentinels instead of connecting here
    : `${redis.tls ? 'rediss' : 'redis'}://${redis.host.includes(':') ? `[${redis.host}]` : redis.host}:${redis.port}/${redis.db}`;
  const client = celery.createClient(bare, bare, queue);
  client.conf.CELERY_BROKER_OPTIONS = { ...redis };
  const { broker } = client;
  return {
    redis: broker.redis,
    async publish(id, name, args, kwargs) {
      const { headers, properties, body } = client.createTaskMessage(id, name, args, kwargs);
      await broker.publish(body, '', queue, headers, properties);
    },
  };
}
