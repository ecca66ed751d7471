// Entry point: `node src/server.js` (npm start). Settings come from the environment (see README).
import { once } from 'node:events';
import { pathToFileURL } from 'node:url';
import { ConfigError, readConfig } from './config.js';
import { createDispatcher } from '@celery-pushserver/node';
import { createApp } from './app.js';

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
    backendUrl: config.resultBackend,
    client: config.client,
    queue: config.queue,
    readyTimeoutMs: config.readyTimeoutMs,
    publishTimeoutMs: config.publishTimeoutMs,
    logger,
  });
  const app = createApp({ config, dispatcher, logger });
  const server = app.listen(config.port, config.host);
  await once(server, 'listening');
  const { address, port } = server.address();
  logger.info(`[dispatch] listening on http://${address}:${port} (${config.client}, queue ${config.queue}, pushserver ${config.pushserverPublicUrl})`);

  const stop = async () => {
    server.close();
    server.closeAllConnections?.();
    await dispatcher.close();
  };
  return { server, dispatcher, config, stop };
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
    console.error(`[dispatch] cannot start: ${err instanceof ConfigError ? err.message : err.stack ?? err}`);
    process.exit(err?.code === 'EADDRINUSE' ? 98 : 2);
  }
}
