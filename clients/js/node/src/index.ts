// @celery-pushserver/node: dispatch Celery tasks from Node and mint celery-pushserver tokens.
export { createDispatcher } from './dispatcher.js';
export type { CeleryClientName, Dispatcher, DispatcherOptions, DispatchOptions, DispatchResult } from './dispatcher.js';
export { mintToken, verifyToken, MIN_SECRET_BYTES, DEFAULT_TTL_SECONDS } from './tokens.js';
export type { MintTokenOptions, TokenClaims } from './tokens.js';
export { parseRedisUrl, redactUrl } from './redisUrl.js';
export type { RedisConnectionOptions } from './redisUrl.js';
export { parseSentinelUrl } from './sentinelUrl.js';
export type { SentinelConnectionOptions, TransportOptions } from './sentinelUrl.js';
export {
  BrokerUnavailableError, CeleryPushserverError, ClientNotInstalledError, DispatchArgumentError,
  DispatcherClosedError, TokenOptionsError, UnsupportedUrlError,
} from './errors.js';
