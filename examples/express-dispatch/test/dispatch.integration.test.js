// The dispatch app against a real Redis and a real Celery worker from the repo's venv.
//
// Nothing here is skipped: without redis-server or the venv the suite fails
// with a message saying what to install.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { createClient } from 'redis';
import { CeleryDispatcher } from '../src/dispatcher.js';
import { verifyToken } from '../src/tokens.js';
import {
  freePort, removeDir, startExpress, startRedis, startWorker, tempDir, waitFor,
} from '../../test-support/stack.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const SECRET = randomBytes(16).toString('hex');
const QUEUE = `express-test-${process.pid}`;
const TERMINAL = new Set(['SUCCESS', 'FAILURE', 'REVOKED']);
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let redis; let worker; let express; let backendDb; let brokerDb; let staticDir; let env;

async function post(name, body, { raw, headers = {} } = {}) {
  const res = await fetch(`${express.url}/api/tasks/${name}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: raw ?? JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, json, text, headers: res.headers };
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
    env = {
      CELERY_BROKER_URL: redis.url(0),
      CELERY_RESULT_BACKEND: redis.url(1),
      PUSHSERVER_SECRET: SECRET,
      CELERY_QUEUE: QUEUE,
    };
    // fanout_webhooks starts its children on Celery's default queue: consume both.
    worker = await startWorker({
      env, queue: `${QUEUE},celery`, extraArgs: ['-I', 'celery_node_probe'], pythonPath: [path.join(here, 'fixtures')],
    });
    staticDir = tempDir('static');
    fs.writeFileSync(path.join(staticDir, 'index.html'), '<!doctype html><title>test build</title>');
    express = await startExpress({
      env: { ...env, TOKEN_TTL: '120', PUSHSERVER_PUBLIC_URL: 'http://127.0.0.1:8123', STATIC_DIR: staticDir },
    });
    backendDb = createClient({ url: redis.url(1) });
    brokerDb = createClient({ url: redis.url(0) });
    for (const client of [backendDb, brokerDb]) client.on('error', () => {});
    await Promise.all([backendDb.connect(), brokerDb.connect()]);
  });

  after(async () => {
    for (const client of [backendDb, brokerDb]) await client?.close?.().catch(() => {});
    await express?.stop();
    await worker?.stop();
    await redis?.stop();
    if (staticDir) removeDir(staticDir);
  });

  test('celery-node puts a protocol v2 message on the queue with only lang/task/id headers', async () => {
    const dispatcher = new CeleryDispatcher({ brokerUrl: redis.url(0), resultBackend: redis.url(1), queue: 'nobody-consumes-this' });
    try {
      assert.equal(dispatcher.clientFor('nobody-consumes-this'), dispatcher.clientFor('nobody-consumes-this'), 'one client per queue');
      const taskId = await dispatcher.dispatch('workers.tasks.predict', [[5.1, 3.5, 1.4, 0.2]], { extra: true });
      const [raw] = await brokerDb.lRange('nobody-consumes-this', 0, -1);
      const message = JSON.parse(raw);
      assert.equal(message['content-type'], 'application/json');
      assert.equal(message['content-encoding'], 'utf-8');
      // Protocol v2: task name and id travel in the headers, the body is [args, kwargs, embed].
      assert.deepEqual(message.headers, { lang: 'js', task: 'workers.tasks.predict', id: taskId });
      for (const header of ['root_id', 'parent_id', 'argsrepr', 'kwargsrepr', 'origin', 'retries', 'eta', 'expires', 'group', 'timelimit', 'shadow']) {
        assert.ok(!(header in message.headers), `celery-node unexpectedly sends header ${header}`);
      }
      const { properties } = message;
      assert.equal(properties.body_encoding, 'base64');
      assert.deepEqual(properties.delivery_info, { exchange: '', routing_key: 'nobody-consumes-this' });
      assert.equal(properties.delivery_mode, 2);
      assert.match(properties.delivery_tag, UUID_RE);
      // camelCase where Python clients write correlation_id / reply_to.
      assert.equal(properties.correlationId, taskId);
      assert.equal(properties.replyTo, '');
      assert.ok(!('correlation_id' in properties));
      const body = JSON.parse(Buffer.from(message.body, 'base64').toString('utf-8'));
      assert.deepEqual(body, [[[5.1, 3.5, 1.4, 0.2]], { extra: true }, {}]);
    } finally {
      await dispatcher.close();
    }
  });

  test('the worker accepts the message; the missing headers become None/empty on its side', async () => {
    const events = [];
    const subscriber = createClient({ url: redis.url(0) });
    subscriber.on('error', () => {});
    await subscriber.connect();
    // The same channel the pushserver's receiver listens on (kombu's Redis fanout).
    await subscriber.pSubscribe('/0.celeryev/*', (message) => {
      const envelope = JSON.parse(message);
      const body = envelope.properties?.body_encoding === 'base64'
        ? Buffer.from(envelope.body, 'base64').toString('utf-8') : envelope.body;
      const decoded = JSON.parse(body);
      events.push(...(Array.isArray(decoded) ? decoded : [decoded]));
    });
    const dispatcher = new CeleryDispatcher({ brokerUrl: redis.url(0), resultBackend: redis.url(1), queue: QUEUE });
    try {
      const taskId = await dispatcher.dispatch('probe.request_fields', [1, 'two'], { three: 3 });
      const meta = await resultOf(taskId);
      assert.equal(meta.status, 'SUCCESS', meta.traceback);
      const seen = meta.result;
      assert.equal(seen.id, taskId);
      assert.equal(seen.task, 'probe.request_fields');
      assert.equal(seen.lang, 'js');
      assert.deepEqual(seen.args, [1, 'two']);
      assert.deepEqual(seen.kwargs, { three: 3 });
      // What the worker makes of the headers celery-node leaves out:
      assert.equal(seen.root_id, null, 'root_id is None (a Python client sets it to the task id)');
      assert.equal(seen.parent_id, null);
      assert.equal(seen.group, null);
      assert.equal(seen.origin, null);
      assert.equal(seen.retries, 0);
      assert.equal(seen.argsrepr, '<missing>', 'argsrepr is not even an attribute of the request');
      assert.equal(seen.kwargsrepr, '<missing>');
      // correlationId/replyTo are camelCase, so the worker never maps them.
      assert.equal(seen.correlation_id, null);
      assert.equal(seen.reply_to, null);
      assert.equal(seen.properties.correlationId, taskId);
      assert.deepEqual(seen.delivery_info, { exchange: '', routing_key: QUEUE, priority: null, redelivered: false });

      // The task-received event (what the pushserver sees first: celery-node sends no task-sent).
      const received = await waitFor(() => events.find((e) => e.type === 'task-received' && e.uuid === taskId),
        { timeoutMs: 10_000, message: 'the task-received event' });
      assert.equal(received.name, 'probe.request_fields');
      assert.equal(received.args, '', 'args repr is empty: no argsrepr header');
      assert.equal(received.kwargs, '');
      assert.equal(received.root_id, null);
      assert.equal(received.parent_id, null);
      await waitFor(() => events.find((e) => e.type === 'task-succeeded' && e.uuid === taskId),
        { timeoutMs: 10_000, message: 'the task-succeeded event' });
      assert.ok(!events.some((e) => e.type === 'task-sent' && e.uuid === taskId), 'celery-node sends no task-sent event');
      assert.doesNotMatch(worker.proc.output, /Received (invalid|unregistered) task|WARNING|ERROR/);
    } finally {
      await dispatcher.close();
      await subscriber.close().catch(() => {});
    }
  });

  test('POST /api/tasks/demo-progress returns 202 {task_id, token} and the task completes', async () => {
    const before = Math.floor(Date.now() / 1000);
    const { task_id: taskId, token } = await dispatchThroughHttp('demo-progress', { steps: 3, delay: 0.05 });
    assert.match(taskId, UUID_RE);
    const claims = verifyToken(SECRET, token);
    assert.deepEqual(claims.tasks, [taskId]);
    assert.ok(claims.exp >= before + 120 && claims.exp <= before + 122, `exp ${claims.exp} is now + TOKEN_TTL`);
    assert.equal(claims.sub, undefined);
    const meta = await resultOf(taskId);
    assert.equal(meta.status, 'SUCCESS');
    assert.equal(meta.result, 3);
  });

  test('the token names the user given in X-User-Id', async () => {
    const { token } = await dispatchThroughHttp('demo-progress', { steps: 0, delay: 0 });
    assert.equal(verifyToken(SECRET, token).sub, undefined);
    const res = await post('demo-progress', { steps: 0, delay: 0 }, { headers: { 'x-user-id': 'alice' } });
    assert.equal(verifyToken(SECRET, res.json.token).sub, 'alice');
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
        dispatchThroughHttp('welcome-email', { user_id: 'ada', email: 'ada@example.com' }),
        dispatchThroughHttp('resize-image', { width: 320, watermark: 'test' }),
        dispatchThroughHttp('predict', { features: [5.1, 3.5, 1.4, 0.2] }),
        dispatchThroughHttp('webhooks', { urls: [`http://127.0.0.1:${hookPort}/a`, `http://127.0.0.1:${hookPort}/b`], payload: { event: 'ping' } }),
      ]);
      const emailMeta = await resultOf(email.task_id);
      assert.equal(emailMeta.status, 'SUCCESS', emailMeta.traceback);
      assert.equal(emailMeta.result.user_id, 'ada');
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
      ['welcome-email', { user_id: '' }, /'user_id'/],
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

  test("celery-node's own sendTask() crashes Node when Redis is down; the app's guard keeps it alive", async () => {
    const deadPort = await freePort();
    const script = path.join(here, 'fixtures', 'send-task-with-redis-down.mjs');
    const run = (mode) => new Promise((resolve) => {
      const child = spawn(process.execPath, [script, String(deadPort), mode], { stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout.on('data', (d) => { output += d; });
      child.stderr.on('data', (d) => { output += d; });
      child.on('exit', (code) => resolve({ code, output }));
    });
    const unguarded = await run('plain');
    assert.notEqual(unguarded.code, 0, `expected a crash, got: ${unguarded.output}`);
    assert.match(unguarded.output, /ECONNREFUSED/);
    assert.doesNotMatch(unguarded.output, /still alive/);
    const guarded = await run('guarded');
    assert.equal(guarded.code, 0, guarded.output);
    assert.match(guarded.output, /unhandled promise rejection \(kept running\)/);
    assert.match(guarded.output, /still alive after 1.5 s/);
  });

  test('Redis down: 503 JSON, the process stays up, and dispatch resumes when Redis is back', async () => {
    await redis.stop();
    const started = Date.now();
    const responses = await Promise.all(Array.from({ length: 12 }, () => post('demo-progress', { steps: 1, delay: 0 })));
    assert.ok(Date.now() - started < 8000, `503s took ${Date.now() - started} ms`);
    for (const res of responses) {
      assert.equal(res.status, 503, res.text);
      assert.equal(res.json.error.code, 'broker_unavailable');
      assert.equal(res.headers.get('retry-after'), '5');
    }
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
