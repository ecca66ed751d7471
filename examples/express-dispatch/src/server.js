// Entry point: `node src/server.js` (npm start). Settings come from the environment (see README).
import { once } from 'node:events';
import { pathToFileURL } from 'node:url';
import { ConfigError, readConfig } from './config.js';
import { CeleryDispatcher } from './dispatcher.js';
import { createApp } from './app.js';

/**
 * A dependency's stray promise (celery-node's own sendTask does this) must
 * not take the whole web server down: log it and keep serving.
 */
export function installProcessGuards(logger = console) {
  process.on('unhandledRejection', (reason) => {
    logger.error('[dispatch] unhandled promise rejection (kept running):', reason);
  });
}

export async function start({ env = process.env, logger = console } = {}) {
  const config = readConfig(env);
  const dispatcher = new CeleryDispatcher({ ...config, queue: config.queue, logger });
  // Connect at start-up so the first request does not pay for it; an
  // unreachable broker is only logged here, requests then get 503s.
  dispatcher.clientFor(config.queue);
  const app = createApp({ config, dispatcher, logger });
  const server = app.listen(config.port, config.host);
  await once(server, 'listening');
  const { address, port } = server.address();
  logger.info(`[dispatch] listening on http://${address}:${port} (queue ${config.queue}, pushserver ${config.pushserverPublicUrl})`);

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
