// The dispatch app against a real Redis, a real nx-27017 (MongoDB's wire protocol) and a real Celery
// worker from the repo's venv, Express and the worker sharing the one MongoDB.
//
// Nothing here is skipped: without redis-server or the venv the suite fails
// with a message saying what to install.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { createClient } from 'redis';
import { MongoClient } from 'mongodb';
import { verifyToken } from '@celery-pushserver/node';
import {
  freePort, removeDir, startExpress, startMongo, startRedis, startWorker, tempDir, waitFor,
} from '../../test-support/stack.js';

const SECRET = randomBytes(32).toString('hex');
const QUEUE = `express-test-${process.pid}`;
const TERMINAL = new Set(['SUCCESS', 'FAILURE', 'REVOKED']);
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let redis; let mongo; let mongoClient; let worker; let express; let backendDb; let brokerDb; let staticDir; let env;
let alice; // the signed-in user most tests dispatch as: {user, cookie}

async function call(method, route, { body, raw, cookie, headers = {}, app = express } = {}) {
  const res = await fetch(`${app.url}${route}`, {
    method,
    headers: { 'content-type': 'application/json', ...(cookie ? { cookie } : {}), ...headers },
    body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, json, text, headers: res.headers };
}

/** POST /api/tasks/:name as `as` (alice by default; null for no session). */
async function post(name, body, { raw, headers = {}, as = alice, app = express } = {}) {
  return call('POST', `/api/tasks/${name}`, { body, raw, headers, cookie: as?.cookie, app });
}

/** Register `username` and return {user, cookie} from the session cookie set. */
async function register(username, password = 'a long enough password', app = express) {
  const res = await call('POST', '/api/register', { body: { username, password }, app });
  assert.equal(res.status, 201, res.text);
  return { user: res.json.user, cookie: sessionCookie(res) };
}

function sessionCookie(res) {
  const setCookie = res.headers.get('set-cookie') ?? '';
  const match = /(?:^|,\s*)sid=([^;]*)/.exec(setCookie);
  assert.ok(match && match[1], `a sid cookie in ${setCookie}`);
  return `sid=${match[1]}`;
}

/** Poll celery-task-meta-<id> in the result backend until the task is terminal. */
async function resultOf(taskId, timeoutMs = 30_000) {
  return waitFor(async () => {
    const raw = await backendDb.get(`celery-task-meta-${taskId}`);
    const meta = raw && JSON.parse(raw);
    return meta && TERMINAL.has(meta.status) ? meta : null;
  }, { timeoutMs, message: `task ${taskId} to finish\n--- worker output ---\n${worker?.proc.tail(2000)}` });
}

async function dispatchThroughHttp(name, body) {
  const res = await post(name, body);
  assert.equal(res.status, 202, `POST ${name}: ${res.text}`);
  return res.json;
}

describe('express-dispatch against Redis and a Celery worker', () => {
  before(async () => {
    redis = await startRedis();
    mongo = await startMongo();
    mongoClient = new MongoClient(mongo.url(), { serverSelectionTimeoutMS: 5000 });
    env = {
      CELERY_BROKER_URL: redis.url(0),
      CELERY_RESULT_BACKEND: redis.url(1),
      PUSHSERVER_SECRET: SECRET,
      CELERY_QUEUE: QUEUE,
      // Express and the worker: the same MongoDB, Express's database 'app', the workers' 'workers'.
      MONGO_URL: mongo.url(),
    };
    // fanout_webhooks starts its children on Celery's default queue: consume both.
    // The local hook server below is on loopback: allowed explicitly, the way the demo allows its sink.
    worker = await startWorker({ env: { ...env, WEBHOOK_ALLOWED_NETWORKS: '127.0.0.0/8' }, queue: `${QUEUE},celery` });
    staticDir = tempDir('static');
    fs.writeFileSync(path.join(staticDir, 'index.html'), '<!doctype html><title>test build</title>');
    express = await startExpress({
      env: { ...env, TOKEN_TTL_SECONDS: '120', PUSHSERVER_PUBLIC_URL: 'http://127.0.0.1:8123', STATIC_DIR: staticDir },
    });
    backendDb = createClient({ url: redis.url(1) });
    brokerDb = createClient({ url: redis.url(0) });
    for (const client of [backendDb, brokerDb]) client.on('error', () => {});
    await Promise.all([backendDb.connect(), brokerDb.connect()]);
    alice = await register('alice');
  });

  after(async () => {
    for (const client of [backendDb, brokerDb]) await client?.close?.().catch(() => {});
    await express?.stop();
    await worker?.stop();
    await mongoClient?.close();
    await mongo?.stop();
    await redis?.stop();
    if (staticDir) removeDir(staticDir);
  });

  test('POST /api/tasks/demo-progress returns 202 {task_id, token} and the task completes', async () => {
    const before = Math.floor(Date.now() / 1000);
    const { task_id: taskId, token } = await dispatchThroughHttp('demo-progress', { steps: 3, delay: 0.05 });
    assert.match(taskId, UUID_RE);
    const claims = verifyToken(SECRET, token);
    assert.deepEqual(claims.tasks, [taskId]);
    assert.ok(claims.exp >= before + 120 && claims.exp <= before + 122, `exp ${claims.exp} is now + TOKEN_TTL`);
    assert.equal(claims.sub, alice.user.id, "the token's sub is the signed-in user");
    const meta = await resultOf(taskId);
    assert.equal(meta.status, 'SUCCESS');
    assert.equal(meta.result, 3);
  });

  test('register, login, me, logout: the session cookie is httpOnly and SameSite=Lax', async () => {
    const reg = await call('POST', '/api/register', { body: { username: 'grace', password: 'hopper-1906-cobol' } });
    assert.equal(reg.status, 201, reg.text);
    assert.equal(reg.json.user.username, 'grace');
    assert.deepEqual(Object.keys(reg.json.user).sort(), ['id', 'username']);
    const setCookie = reg.headers.get('set-cookie');
    assert.match(setCookie, /HttpOnly/i);
    assert.match(setCookie, /SameSite=Lax/i);
    assert.match(setCookie, /Path=\//);
    const cookie = sessionCookie(reg);
    assert.deepEqual((await call('GET', '/api/me', { cookie })).json, { user: reg.json.user });

    const taken = await call('POST', '/api/register', { body: { username: 'Grace', password: 'another-password' } });
    assert.equal(taken.status, 409);
    assert.equal(taken.json.error.code, 'conflict');
    const badInput = await call('POST', '/api/register', { body: { username: 'g', password: 'x' } });
    assert.equal(badInput.status, 400);
    assert.equal(badInput.json.error.code, 'bad_request');

    const wrong = await call('POST', '/api/login', { body: { username: 'grace', password: 'not-her-password' } });
    assert.equal(wrong.status, 401);
    assert.deepEqual(wrong.json, { error: { code: 'unauthorized', message: 'wrong username or password' } });
    assert.equal(wrong.headers.get('set-cookie'), null);
    const unknown = await call('POST', '/api/login', { body: { username: 'nobody', password: 'not-her-password' } });
    assert.deepEqual(unknown.json, wrong.json, 'an unknown user reads exactly like a wrong password');

    const login = await call('POST', '/api/login', { body: { username: 'grace', password: 'hopper-1906-cobol' } });
    assert.equal(login.status, 200);
    assert.deepEqual(login.json, { user: reg.json.user });
    const second = sessionCookie(login);
    assert.notEqual(second, cookie, 'each sign-in gets a fresh session id');
    const logout = await call('POST', '/api/logout', { cookie: second });
    assert.equal(logout.status, 204);
    assert.match(logout.headers.get('set-cookie'), /sid=;/);
    assert.equal((await call('GET', '/api/me', { cookie: second })).status, 401);
    assert.equal((await call('GET', '/api/me', { cookie })).status, 200, 'the other session lives on');
  });

  test('sign-in attempts are limited per address: 429 with Retry-After', async () => {
    const limited = await startExpress({ name: 'express-limited', env: { ...env, AUTH_RATE_LIMIT: '3', STATIC_DIR: staticDir } });
    try {
      const statuses = [];
      for (let i = 0; i < 5; i += 1) {
        const res = await call('POST', '/api/login', { body: { username: 'nobody', password: 'wrong password' }, app: limited });
        statuses.push(res.status);
        if (res.status === 429) {
          assert.equal(res.json.error.code, 'too_many');
          assert.ok(Number(res.headers.get('retry-after')) >= 1);
        }
      }
      assert.deepEqual(statuses, [401, 401, 401, 429, 429]);
      const register = await call('POST', '/api/register', { body: { username: 'late', password: 'long enough' }, app: limited });
      assert.equal(register.status, 429, 'registration shares the limit');
    } finally {
      await limited.stop();
    }
  });

  test('dispatch needs a session: 401 JSON without one, X-User-Id is ignored, nothing is queued', async () => {
    const queuedBefore = await brokerDb.lLen(QUEUE);
    for (const [as, headers] of [[null, {}], [null, { 'x-user-id': alice.user.id }], [{ cookie: 'sid=forged' }, {}]]) {
      const res = await post('demo-progress', { steps: 0, delay: 0 }, { as, headers });
      assert.equal(res.status, 401, res.text);
      assert.equal(res.json.error.code, 'unauthorized');
    }
    assert.equal((await call('GET', '/api/me')).status, 401);
    assert.equal(await brokerDb.lLen(QUEUE), queuedBefore);
  });

  test("GET /api/tasks/:id/token: a fresh token for the user's own task, 404 for anyone else's", async () => {
    const { task_id: taskId, token: first } = await dispatchThroughHttp('demo-progress', { steps: 0, delay: 0 });
    const route = `/api/tasks/${taskId}/token`;
    const mine = await call('GET', route, { cookie: alice.cookie });
    assert.equal(mine.status, 200, mine.text);
    assert.equal(mine.json.task_id, taskId);
    assert.equal(mine.headers.get('cache-control'), 'no-store');
    const claims = verifyToken(SECRET, mine.json.token);
    assert.deepEqual(claims.tasks, [taskId]);
    assert.equal(claims.sub, alice.user.id);
    assert.equal(mine.json.expires_at, claims.exp);
    assert.ok(claims.exp >= verifyToken(SECRET, first).exp);

    const mallory = await register('mallory');
    const theirs = await call('GET', route, { cookie: mallory.cookie });
    assert.equal(theirs.status, 404);
    assert.equal(theirs.json.error.code, 'not_found');
    const unknown = await call('GET', '/api/tasks/00000000-0000-4000-8000-000000000000/token', { cookie: mallory.cookie });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json.error.code, theirs.json.error.code, "another user's task reads like one that does not exist");
    const anonymous = await call('GET', route);
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.json.error.code, 'unauthorized');
  });

  test('registration stores the user in MongoDB and dispatches their welcome email at once', async () => {
    const res = await call('POST', '/api/register', { body: { username: 'Hedy', password: 'frequency-hopping' } });
    assert.equal(res.status, 201, res.text);
    const { user, welcome_task: welcome } = res.json;
    const stored = await mongoClient.db('app').collection('users').findOne({ _id: user.id });
    assert.equal(stored.username, 'Hedy');
    assert.ok(!JSON.stringify(stored).includes('frequency-hopping'), 'only a hash is stored');
    assert.deepEqual(verifyToken(SECRET, welcome.token).tasks, [welcome.task_id]);
    const meta = await resultOf(welcome.task_id);
    assert.equal(meta.status, 'SUCCESS', meta.traceback);
    assert.deepEqual([meta.result.user_id, meta.result.username], [user.id, 'Hedy']);
    assert.match(fs.readFileSync(meta.result.delivered_to, 'utf8'), /Hello Hedy,/);
    const cookie = sessionCookie(res);
    const { json } = await call('GET', '/api/tasks', { cookie });
    assert.deepEqual(json.tasks.map((t) => [t.id, t.kind, t.task]), [[welcome.task_id, 'welcome-email', 'workers.tasks.send_welcome_email']]);
  });

  test("GET /api/tasks: the user's own tasks from MongoDB, newest first, with the worker's state", async () => {
    const lin = await register('lin');
    const first = (await post('predict', { features: [5.1, 3.5, 1.4, 0.2] }, { as: lin })).json;
    const second = (await post('fail', { message: 'on purpose' }, { as: lin })).json;
    const list = await waitFor(async () => {
      const res = await call('GET', '/api/tasks', { cookie: lin.cookie });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.headers.get('cache-control'), 'no-store');
      const mine = res.json.tasks.filter((t) => t.kind !== 'welcome-email');
      return mine.every((t) => ['SUCCESS', 'FAILURE'].includes(t.state)) ? mine : null;
    }, { timeoutMs: 60_000, message: "the worker to record both tasks' final states" });
    assert.deepEqual(list.map((t) => [t.id, t.kind, t.task, t.state]), [
      [second.task_id, 'fail', 'workers.tasks.fail', 'FAILURE'],
      [first.task_id, 'predict', 'workers.tasks.predict', 'SUCCESS'],
    ]);
    assert.equal(list[0].args_summary, '"on purpose"');
    assert.equal(list[1].args_summary, '[5.1, 3.5, 1.4, 0.2]');
    assert.ok(Date.parse(list[0].created_at) >= Date.parse(list[1].created_at));
    const others = await call('GET', '/api/tasks', { cookie: alice.cookie });
    assert.ok(!others.json.tasks.some((t) => t.id === first.task_id), "nobody else's list shows them");
    assert.equal((await call('GET', '/api/tasks')).status, 401);
    const kinds = await call('GET', '/api/task-kinds');
    assert.deepEqual(kinds.json.kinds.find((k) => k.name === 'predict'), { name: 'predict', task: 'workers.tasks.predict' });
  });

  test('resize-image: the worker records the output metadata on the task document', async () => {
    const { task_id: taskId } = await dispatchThroughHttp('resize-image', { width: 96, watermark: 'mern' });
    const meta = await resultOf(taskId);
    assert.equal(meta.status, 'SUCCESS', meta.traceback);
    const record = await waitFor(async () => {
      const doc = await mongoClient.db('app').collection('tasks').findOne({ _id: taskId });
      return doc?.output && doc.state === 'SUCCESS' ? doc : null;
    }, { message: 'the output on the task document' });
    assert.equal(record.owner, alice.user.id);
    assert.deepEqual({ ...record.output, watermark: undefined }, { ...meta.result, watermark: undefined });
    assert.equal(record.output.watermark, 'mern');
  });

  test('another Express process sees the same users and tasks: ownership comes from MongoDB', async () => {
    const { task_id: taskId } = await dispatchThroughHttp('demo-progress', { steps: 0, delay: 0 });
    const other = await startExpress({ name: 'express-second', env: { ...env, STATIC_DIR: staticDir } });
    try {
      const login = await call('POST', '/api/login', { body: { username: 'alice', password: 'a long enough password' }, app: other });
      assert.equal(login.status, 200, login.text);
      const cookie = sessionCookie(login);
      const token = await call('GET', `/api/tasks/${taskId}/token`, { cookie, app: other });
      assert.equal(token.status, 200, token.text);
      assert.deepEqual(verifyToken(SECRET, token.json.token).tasks, [taskId]);
      const list = await call('GET', '/api/tasks', { cookie, app: other });
      assert.ok(list.json.tasks.some((t) => t.id === taskId));
    } finally {
      await other.stop();
    }
  });

  test('GET /api/reports/latest: the newest nightly report the workers saved', async () => {
    const reports = mongoClient.db('workers').collection('reports');
    await reports.deleteMany({});
    assert.deepEqual((await call('GET', '/api/reports/latest', { cookie: alice.cookie })).json, { report: null });
    const at = (s) => new Date(Date.UTC(2026, 0, 1, 0, 0, s));
    await reports.insertMany([
      { generated_at: at(1), counts: [], total: 0, archived: 0 },
      { generated_at: at(3), counts: [{ task: 'workers.tasks.fail', state: 'FAILURE', count: 2 }], total: 2, archived: 5 },
      { generated_at: at(2), counts: [], total: 0, archived: 1 },
    ]);
    const { status, json } = await call('GET', '/api/reports/latest', { cookie: alice.cookie });
    assert.equal(status, 200);
    assert.deepEqual(json.report, {
      generated_at: at(3).toISOString(), counts: [{ task: 'workers.tasks.fail', state: 'FAILURE', count: 2 }], total: 2, archived: 5,
    });
    assert.equal((await call('GET', '/api/reports/latest')).status, 401);
  });

  test('each use case runs to completion on the worker', async () => {
    const hits = [];
    const hookServer = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => { hits.push({ url: req.url, body: JSON.parse(body) }); res.end('ok'); });
    });
    const hookPort = await freePort();
    await new Promise((resolve) => hookServer.listen(hookPort, '127.0.0.1', resolve));
    try {
      const [email, image, prediction, webhooks] = await Promise.all([
        dispatchThroughHttp('welcome-email', { email: 'ada@example.com' }),
        dispatchThroughHttp('resize-image', { width: 320, watermark: 'test' }),
        dispatchThroughHttp('predict', { features: [5.1, 3.5, 1.4, 0.2] }),
        dispatchThroughHttp('webhooks', { urls: [`http://127.0.0.1:${hookPort}/a`, `http://127.0.0.1:${hookPort}/b`], payload: { event: 'ping' } }),
      ]);
      const emailMeta = await resultOf(email.task_id);
      assert.equal(emailMeta.status, 'SUCCESS', emailMeta.traceback);
      assert.equal(emailMeta.result.user_id, alice.user.id, 'the signed-in user, read from MongoDB by the worker');
      assert.equal(emailMeta.result.username, 'alice');
      assert.ok(fs.existsSync(emailMeta.result.delivered_to), 'the .eml file was written');
      assert.ok(emailMeta.result.delivered_to.startsWith(worker.workDir));

      const imageMeta = await resultOf(image.task_id);
      assert.equal(imageMeta.status, 'SUCCESS', imageMeta.traceback);
      assert.equal(imageMeta.result.width, 320);
      assert.ok(fs.statSync(imageMeta.result.path).size > 0);

      const predictionMeta = await resultOf(prediction.task_id, 60_000);
      assert.equal(predictionMeta.status, 'SUCCESS', predictionMeta.traceback);
      assert.equal(predictionMeta.result.label, 'setosa');

      const webhooksMeta = await resultOf(webhooks.task_id);
      assert.equal(webhooksMeta.status, 'SUCCESS', webhooksMeta.traceback);
      assert.equal(webhooksMeta.result.task_ids.length, 2);
      await waitFor(() => hits.length === 2, { timeoutMs: 20_000, message: 'both webhooks to arrive' });
      assert.deepEqual(hits.map((h) => h.url).sort(), ['/a', '/b']);
      assert.deepEqual(hits[0].body, { event: 'ping' });
    } finally {
      hookServer.close();
    }
  });

  test('webhooks to link-local or private addresses are refused by the worker, loopback allowance or not', async () => {
    const { task_id: taskId } = await dispatchThroughHttp('webhooks', {
      urls: ['http://169.254.169.254/latest/meta-data/', 'http://10.0.0.1/hook'],
    });
    const meta = await resultOf(taskId);
    assert.equal(meta.status, 'SUCCESS', meta.traceback);
    for (const childId of meta.result.task_ids) {
      const child = await resultOf(childId);
      assert.equal(child.status, 'FAILURE');
      assert.equal(child.result.exc_type, 'WebhookAddressError');
      assert.match(child.result.exc_message[0], /not allowed/);
    }
  });

  test('CELERY_NODE_CLIENT picks the Node Celery client: celery-ts by default, celery-node on request', async () => {
    const readyz = await (await fetch(`${express.url}/readyz`)).json();
    assert.deepEqual(readyz, { ok: true, broker: 'ready', client: 'celery-ts', database: 'ready' });
    const other = await startExpress({
      name: 'express-celery-node',
      env: { ...env, CELERY_NODE_CLIENT: 'celery-node', STATIC_DIR: staticDir },
    });
    try {
      assert.equal((await (await fetch(`${other.url}/readyz`)).json()).client, 'celery-node');
      const bob = await register('bob', 'a long enough password', other);
      const res = await post('demo-progress', { steps: 2, delay: 0 }, { as: bob, app: other });
      assert.equal(res.status, 202, res.text);
      const meta = await resultOf(res.json.task_id);
      assert.equal(meta.status, 'SUCCESS');
      assert.equal(meta.result, 2);
      assert.equal(verifyToken(SECRET, res.json.token).sub, bob.user.id);
    } finally {
      await other.stop();
    }
  });

  test('a failing task ends in FAILURE with its error in the backend', async () => {
    const { task_id: taskId } = await dispatchThroughHttp('fail', { message: 'deliberate failure' });
    const meta = await resultOf(taskId);
    assert.equal(meta.status, 'FAILURE');
    assert.equal(meta.result.exc_type, 'RuntimeError');
    assert.deepEqual(meta.result.exc_message, ['deliberate failure']);
  });

  test('bad requests get 400 JSON errors and nothing is queued', async () => {
    const queuedBefore = await brokerDb.lLen(QUEUE);
    for (const [name, body, pattern] of [
      ['predict', { features: [1, 2] }, /list of 4 numbers/],
      ['welcome-email', { user_id: 'someone-else' }, /unknown field 'user_id'/],
      ['webhooks', { urls: ['javascript:alert(1)'] }, /not http\(s\) URLs/],
      ['resize-image', { width: 'wide' }, /'width' must be an integer/],
      ['demo-progress', { steps: 1, delay: 0, extra: 1 }, /unknown field 'extra'/],
    ]) {
      const res = await post(name, body);
      assert.equal(res.status, 400, `${name} ${JSON.stringify(body)}`);
      assert.equal(res.json.error.code, 'bad_request');
      assert.match(res.json.error.message, pattern);
    }
    const malformed = await post('predict', null, { raw: '{"features": [1,' });
    assert.equal(malformed.status, 400);
    assert.deepEqual(malformed.json, { error: { code: 'bad_request', message: 'request body is not valid JSON' } });
    const unknown = await post('workers.tasks.sleep', { seconds: 1 });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json.error.code, 'not_found');
    const tooLarge = await post('resize-image', { image_b64: 'A'.repeat(16 * 1024 * 1024) });
    assert.equal(tooLarge.status, 413);
    assert.equal(tooLarge.json.error.code, 'too_large');
    assert.equal(await brokerDb.lLen(QUEUE), queuedBefore);
  });

  test('serves /config.json and the built client, with a fallback for client routes', async () => {
    const config = await (await fetch(`${express.url}/config.json`)).json();
    assert.deepEqual(config, { pushserverUrl: 'http://127.0.0.1:8123' });
    for (const route of ['/', '/tasks/some-client-route']) {
      const res = await fetch(`${express.url}${route}`);
      assert.equal(res.status, 200);
      assert.match(await res.text(), /test build/);
    }
    const sink = await fetch(`${express.url}/api/webhook-sink/orders`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}',
    });
    assert.equal(sink.status, 204);
    const api404 = await fetch(`${express.url}/api/nope`);
    assert.equal(api404.status, 404);
    assert.equal((await api404.json()).error.code, 'not_found');
  });

  test('Redis down: 503 JSON, the process stays up, and dispatch resumes when Redis is back', async () => {
    const aliceRecords = () => mongoClient.db('app').collection('tasks').countDocuments({ owner: alice.user.id });
    const recordsBefore = await aliceRecords();
    await redis.stop();
    const started = Date.now();
    const responses = await Promise.all(Array.from({ length: 12 }, () => post('demo-progress', { steps: 1, delay: 0 })));
    assert.ok(Date.now() - started < 8000, `503s took ${Date.now() - started} ms`);
    for (const res of responses) {
      assert.equal(res.status, 503, res.text);
      assert.equal(res.json.error.code, 'broker_unavailable');
      assert.equal(res.headers.get('retry-after'), '5');
    }
    assert.equal(await aliceRecords(), recordsBefore, 'the records of unpublished tasks were removed again');
    const readyz = await fetch(`${express.url}/readyz`);
    assert.equal(readyz.status, 503);
    // Let ioredis fail a few reconnect attempts: still no crash.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    assert.ok(express.proc.running, `express died:\n${express.proc.tail()}`);
    assert.equal((await fetch(`${express.url}/healthz`)).status, 200);
    assert.doesNotMatch(express.proc.output, /unhandled promise rejection/);

    redis = await startRedis({ port: redis.port });
    const accepted = await waitFor(async () => {
      const res = await post('demo-progress', { steps: 1, delay: 0 });
      return res.status === 202 ? res.json : null;
    }, { timeoutMs: 20_000, intervalMs: 500, message: 'dispatch to work again after Redis restarted' });
    const meta = await resultOf(accepted.task_id, 60_000);
    assert.equal(meta.status, 'SUCCESS');
    assert.ok(express.proc.running);
  });
});
