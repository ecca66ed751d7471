// Entry point: `node src/server.js` (npm start). Settings come from the environment (see README).
import { once } from 'node:events';
import { pathToFileURL } from 'node:url';
import { ConfigError, readConfig } from './config.js';
import { createDispatcher, UnsupportedUrlError } from '@celery-pushserver/node';
import { createApp } from './app.js';
import { openDatabase } from './db.js';

/**
 * A last line of defence: @celery-pushserver/node guards both Celery
 * clients' stray promises, but if anything still slips through, log it loudly
 * and keep serving rather than drop every open request.
 */
export function installProcessGuards(logger = console) {
  process.on('unhandledRejection', (reason) => {
    logger.error('[dispatch] unhandled promise rejection (kept running):', reason);
  });
}

export async function start({ env = process.env, logger = console } = {}) {
  const config = readConfig(env);
  // Connects at once; an unreachable broker is only logged, requests then get 503s.
  const dispatcher = await createDispatcher({
    brokerUrl: config.brokerUrl,
    brokerTransportOptions: config.brokerTransportOptions,
    backendUrl: config.resultBackend,
    backendTransportOptions: config.backendTransportOptions,
    client: config.client,
    queue: config.queue,
    readyTimeoutMs: config.readyTimeoutMs,
    publishTimeoutMs: config.publishTimeoutMs,
    logger,
  });
  const database = openDatabase({
    url: config.mongoUrl, dbName: config.mongoDb, workersDbName: config.mongoWorkersDb,
    timeoutMs: config.mongoTimeoutMs, logger,
  });
  // Indexes at start-up; MongoDB being down is only logged: its routes answer 503 until it is back.
  database.ensureIndexes().catch((err) => {
    logger.warn(`[dispatch] MongoDB unavailable at start-up (${err.message}); retrying on the next request`);
  });
  const app = createApp({ config, dispatcher, database, logger });
  const server = app.listen(config.port, config.host);
  await once(server, 'listening');
  const { address, port } = server.address();
  logger.info(`[dispatch] listening on http://${address}:${port} (${config.client}, queue ${config.queue}, pushserver ${config.pushserverPublicUrl}, MongoDB database ${config.mongoDb})`);

  const stop = async () => {
    server.close();
    server.closeAllConnections?.();
    await dispatcher.close();
    await database.close();
  };
  return { server, dispatcher, database, config, stop };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  installProcessGuards();
  try {
    const { stop } = await start();
    for (const signal of ['SIGINT', 'SIGTERM']) {
      process.once(signal, async () => {
        console.info(`[dispatch] ${signal}: shutting down`);
        await stop();
        process.exit(0);
      });
    }
  } catch (err) {
    // A setting we can name gets one line; anything else its stack.
    const named = err instanceof ConfigError || err instanceof UnsupportedUrlError;
    console.error(`[dispatch] cannot start: ${named ? err.message : err.stack ?? err}`);
    process.exit(err?.code === 'EADDRINUSE' ? 98 : 2);
  }
}
