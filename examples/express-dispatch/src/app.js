// The Express app: dispatch endpoint, pushserver config for the browser, the built React client.
import fs from 'node:fs';
import path from 'node:path';
import express from 'express';
import { BrokerUnavailableError, mintToken, verifyToken } from '@celery-pushserver/node';
import { randomUUID } from 'node:crypto';
import { buildTaskCall, summarizeArguments, TASKS, ValidationError } from './tasks.js';
import { AccountError, UserStore, validateCredentials } from './users.js';
import { SessionStore } from './sessions.js';
import { TaskRecords } from './taskRecords.js';
import { WindowLimiter } from './ratelimit.js';
import { isOutage } from './db.js';

const JSON_LIMIT = '15mb'; // an uploaded image travels base64 in the body
const ACCOUNT_ERROR_STATUS = { bad_request: 400, conflict: 409 };

function sendError(res, status, code, message) {
  res.status(status).json({ error: { code, message } });
}

/**
 * Build the app. `dispatcher` comes from @celery-pushserver/node's
 * createDispatcher; `database` from openDatabase(); `config` is what readConfig() returns.
 */
export function createApp({
  config, dispatcher, database, logger = console,
  users = new UserStore({ collection: database.users }),
  records = new TaskRecords({ collection: database.tasks }),
  sessions = new SessionStore({ ttlSeconds: config.sessionTtl, secureCookie: config.secureCookie }),
  signInLimiter = new WindowLimiter({ limit: config.authRateLimit }),
}) {
  const app = express();
  app.disable('x-powered-by');

  app.get('/healthz', (req, res) => res.json({ ok: true }));
  app.get('/readyz', async (req, res) => {
    const broker = dispatcher.status();
    const mongo = await database.status();
    const ready = broker === 'ready' && mongo === 'ready';
    res.status(ready ? 200 : 503).json({ ok: ready, broker, client: dispatcher.client, database: mongo });
  });

  // A token for `taskId`, for the signed-in `userId`; `expires_at` is its exp (Unix seconds).
  function tokenFor(taskId, userId) {
    const token = mintToken({ secret: config.secret, tasks: [taskId], sub: userId, ttlSeconds: config.tokenTtl });
    return { task_id: taskId, token, expires_at: verifyToken(config.secret, token).exp };
  }

  // Publish `call` (route `kind`) for `user`, recording it in MongoDB first; resolves to the task id.
  // Throws BrokerUnavailableError (the record is then removed again) or a MongoDB error.
  async function dispatchFor(user, kind, call) {
    const taskId = randomUUID();
    await records.add({
      taskId, owner: user.id, kind, task: call.task, argsSummary: summarizeArguments(call.args, call.kwargs),
    });
    try {
      await dispatcher.dispatch(call.task, call.args, call.kwargs, { taskId });
    } catch (err) {
      // Never published: the user's list must not show a task that will never run.
      await records.remove(taskId).catch((removeErr) => logger.warn(`[dispatch] could not remove record ${taskId}: ${removeErr.message}`));
      throw err;
    }
    return taskId;
  }

  // Dispatch and token refresh need a signed-in user; the user is never taken from the client's say-so.
  async function requireUser(req, res, next) {
    const userId = sessions.userIdOf(req);
    const user = userId && await users.byId(userId);
    if (!user) return sendError(res, 401, 'unauthorized', 'sign in first (POST /api/login)');
    req.user = user;
    return next();
  }

  // The React client reads the pushserver's address at run time, so one build
  // serves every environment.
  app.get('/config.json', (req, res) => {
    res.set('Cache-Control', 'no-store').json({ pushserverUrl: config.pushserverPublicUrl });
  });

  const api = express.Router();
  api.use(express.json({ limit: JSON_LIMIT }));
  // Indexes are created at start-up; if MongoDB was down then, the first request that needs it retries.
  const withDatabase = async (req, res, next) => {
    await database.ensureIndexes();
    next();
  };

  // Each sign-in attempt costs a deliberately slow hash: limit them per address.
  const accountRoute = (status, action) => async (req, res) => {
    const retryAfter = signInLimiter.take(req.ip);
    if (retryAfter) {
      res.set('Retry-After', String(retryAfter));
      return sendError(res, 429, 'too_many', `too many sign-in attempts from your address; try again in ${retryAfter} s`);
    }
    try {
      const outcome = await action(validateCredentials(req.body ?? null));
      if (!outcome) return sendError(res, 401, 'unauthorized', 'wrong username or password');
      sessions.start(res, outcome.user.id);
      return res.status(status).json(outcome);
    } catch (err) {
      if (err instanceof AccountError) return sendError(res, ACCOUNT_ERROR_STATUS[err.code] ?? 400, err.code, err.message);
      throw err;
    }
  };
  // Registration stores the user, then dispatches their welcome email and answers at once. A broker
  // outage does not undo the account: `welcome_task` is then null and the reason is logged.
  api.post('/register', withDatabase, accountRoute(201, async ({ username, password }) => {
    const user = await users.register(username, password);
    let welcomeTask = null;
    try {
      const call = buildTaskCall('welcome-email', {}, { userId: user.id });
      welcomeTask = tokenFor(await dispatchFor(user, 'welcome-email', call), user.id);
    } catch (err) {
      if (!(err instanceof BrokerUnavailableError) && !isOutage(err)) throw err;
      logger.warn(`[dispatch] registered ${user.username} without a welcome email: ${err.message}`);
    }
    return { user, welcome_task: welcomeTask };
  }));
  api.post('/login', withDatabase, accountRoute(200, async ({ username, password }) => {
    const user = await users.authenticate(username, password);
    return user && { user };
  }));
  api.post('/logout', (req, res) => {
    sessions.end(req, res);
    res.status(204).end();
  });
  api.get('/me', withDatabase, requireUser, (req, res) => res.json({ user: req.user }));

  // The kinds of task the page may start (route name → Celery task name).
  api.get('/task-kinds', (req, res) => {
    res.json({ kinds: Object.entries(TASKS).map(([name, { task }]) => ({ name, task })) });
  });

  // The signed-in user's tasks from MongoDB, newest first: the page's list after a reload.
  api.get('/tasks', withDatabase, requireUser, async (req, res) => {
    res.set('Cache-Control', 'no-store').json({ tasks: await records.listFor(req.user.id) });
  });

  // The newest nightly report the workers wrote (Celery Beat runs it), or null before the first.
  api.get('/reports/latest', withDatabase, requireUser, async (req, res) => {
    const report = await database.reports.find({}, { projection: { _id: 0 } }).sort({ generated_at: -1 }).limit(1).next();
    res.set('Cache-Control', 'no-store').json({ report: report ?? null });
  });

  api.post('/tasks/:name', withDatabase, requireUser, async (req, res) => {
    let call;
    try {
      call = buildTaskCall(req.params.name, req.body, { userId: req.user.id });
    } catch (err) {
      if (err instanceof ValidationError) return sendError(res, 400, 'bad_request', err.message);
      throw err;
    }
    if (!call) {
      return sendError(res, 404, 'not_found', `unknown task '${req.params.name}'; known: ${Object.keys(TASKS).join(', ')}`);
    }
    let taskId;
    try {
      taskId = await dispatchFor(req.user, req.params.name, call);
    } catch (err) {
      if (err instanceof BrokerUnavailableError) {
        logger.warn(`[dispatch] 503 for ${call.task}: ${err.message}`);
        res.set('Retry-After', '5');
        return sendError(res, 503, 'broker_unavailable', 'the task queue is unavailable right now; try again shortly');
      }
      throw err;
    }
    res.status(202).json(tokenFor(taskId, req.user.id));
  });

  // A fresh token for a task this user dispatched (the browser calls it when
  // its token expires). Anyone else's task, or an unknown id, is the same 404.
  api.get('/tasks/:id/token', withDatabase, requireUser, async (req, res) => {
    if (!await records.owns(req.user.id, req.params.id)) {
      return sendError(res, 404, 'not_found', `no task ${req.params.id} dispatched by you`);
    }
    return res.set('Cache-Control', 'no-store').json(tokenFor(req.params.id, req.user.id));
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
    if (isOutage(err)) {
      logger.warn(`[dispatch] 503 for ${req.method} ${req.originalUrl}: MongoDB unavailable (${err.message})`);
      res.set('Retry-After', '5');
      return sendError(res, 503, 'database_unavailable', 'the database is unavailable right now; try again shortly');
    }
    logger.error('[dispatch] unexpected error', err);
    return sendError(res, 500, 'internal', 'internal error');
  });

  return app;
}
