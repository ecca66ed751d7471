// The Express app: dispatch endpoint, pushserver config for the browser, the built React client.
import fs from 'node:fs';
import path from 'node:path';
import express from 'express';
import { buildTaskCall, TASKS, ValidationError } from './tasks.js';
import { BrokerUnavailableError } from './dispatcher.js';
import { mintToken } from './tokens.js';

const JSON_LIMIT = '15mb'; // an uploaded image travels base64 in the body

function sendError(res, status, code, message) {
  res.status(status).json({ error: { code, message } });
}

// A stand-in for real authentication: a deployed app takes the user from its
// session. The id only ends up in the token's `sub` claim.
function userIdOf(req) {
  const raw = req.get('x-user-id');
  return raw && raw.length <= 128 ? raw : undefined;
}

/**
 * Build the app. `dispatcher` sends task messages (see CeleryDispatcher);
 * `config` is what readConfig() returns.
 */
export function createApp({ config, dispatcher, logger = console }) {
  const app = express();
  app.disable('x-powered-by');

  app.get('/healthz', (req, res) => res.json({ ok: true }));
  app.get('/readyz', (req, res) => {
    const queues = dispatcher.status();
    const ready = Object.values(queues).every((q) => q.broker === 'ready');
    res.status(ready ? 200 : 503).json({ ok: ready, queues });
  });

  // The React client reads the pushserver's address at run time, so one build
  // serves every environment.
  app.get('/config.json', (req, res) => {
    res.set('Cache-Control', 'no-store').json({ pushserverUrl: config.pushserverPublicUrl });
  });

  const api = express.Router();
  api.use(express.json({ limit: JSON_LIMIT }));

  api.get('/tasks', (req, res) => {
    res.json({ tasks: Object.entries(TASKS).map(([name, { task }]) => ({ name, task })) });
  });

  api.post('/tasks/:name', async (req, res) => {
    let call;
    try {
      call = buildTaskCall(req.params.name, req.body);
    } catch (err) {
      if (err instanceof ValidationError) return sendError(res, 400, 'bad_request', err.message);
      throw err;
    }
    if (!call) {
      return sendError(res, 404, 'not_found', `unknown task '${req.params.name}'; known: ${Object.keys(TASKS).join(', ')}`);
    }
    let taskId;
    try {
      taskId = await dispatcher.dispatch(call.task, call.args, call.kwargs);
    } catch (err) {
      if (err instanceof BrokerUnavailableError) {
        logger.warn(`[dispatch] 503 for ${call.task}: ${err.message}`);
        res.set('Retry-After', '5');
        return sendError(res, 503, 'broker_unavailable', 'the task queue is unavailable right now; try again shortly');
      }
      throw err;
    }
    const token = mintToken(config.secret, [taskId], { ttlSeconds: config.tokenTtl, sub: userIdOf(req) });
    res.status(202).json({ task_id: taskId, token });
  });

  // A local receiver for the webhook fan-out demo, so its deliveries succeed
  // without any outside service: it counts what it gets and answers 204.
  const sink = { received: 0, last: null };
  api.post('/webhook-sink{/:channel}', (req, res) => {
    sink.received += 1;
    sink.last = { channel: req.params.channel ?? null, at: new Date().toISOString() };
    res.status(204).end();
  });
  api.get('/webhook-sink', (req, res) => res.json(sink));

  api.use((req, res) => sendError(res, 404, 'not_found', `no route ${req.method} ${req.originalUrl}`));
  app.use('/api', api);

  const indexHtml = path.join(config.staticDir, 'index.html');
  if (fs.existsSync(indexHtml)) {
    app.use(express.static(config.staticDir, { index: 'index.html' }));
    // A client-side route reloaded in the browser still gets the app.
    app.get(/^\/(?!api\/).*/, (req, res) => res.sendFile(indexHtml));
  } else {
    logger.warn(`[dispatch] no React build at ${config.staticDir}: run \`npm run build\` in examples/react-client`);
    app.get('/', (req, res) => {
      res.status(503).type('text').send('The React client is not built yet: run `npm ci && npm run build` in examples/react-client.\n');
    });
  }

  // Malformed JSON, oversized bodies and anything unexpected: always JSON, never a stack trace.
  app.use((err, req, res, next) => {
    if (res.headersSent) return next(err);
    if (err.type === 'entity.parse.failed') return sendError(res, 400, 'bad_request', 'request body is not valid JSON');
    if (err.type === 'entity.too.large') return sendError(res, 413, 'too_large', `request body is larger than ${JSON_LIMIT}`);
    if (err.status >= 400 && err.status < 500) return sendError(res, err.status, 'bad_request', err.message);
    logger.error('[dispatch] unexpected error', err);
    return sendError(res, 500, 'internal', 'internal error');
  });

  return app;
}
