// Unit tests for the allowlist and body validation: no Redis needed.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildTaskCall, summarizeArguments, TASKS, ValidationError } from '../src/tasks.js';
import { ConfigError, readConfig } from '../src/config.js';

const rejects = (name, body, pattern) => assert.throws(() => buildTaskCall(name, body), (err) => {
  assert.ok(err instanceof ValidationError, `expected ValidationError, got ${err}`);
  assert.match(err.message, pattern);
  return true;
});

test('every route maps to a task of workers.tasks', () => {
  assert.deepEqual(Object.fromEntries(Object.entries(TASKS).map(([k, v]) => [k, v.task])), {
    'welcome-email': 'workers.tasks.send_welcome_email',
    'resize-image': 'workers.tasks.resize_and_watermark',
    predict: 'workers.tasks.predict',
    webhooks: 'workers.tasks.fanout_webhooks',
    'demo-progress': 'workers.tasks.demo_progress',
    fail: 'workers.tasks.fail',
  });
});

test('unknown names are not dispatchable, even names of real Celery tasks', () => {
  assert.equal(buildTaskCall('workers.tasks.sleep', {}), null);
  assert.equal(buildTaskCall('__proto__', {}), null);
  assert.equal(buildTaskCall('constructor', {}), null);
});

test("welcome-email: always for the signed-in user, never a user id from the body", () => {
  assert.deepEqual(buildTaskCall('welcome-email', {}, { userId: 'u1' }),
    { task: 'workers.tasks.send_welcome_email', args: ['u1'], kwargs: {} });
  assert.deepEqual(buildTaskCall('welcome-email', { email: 'a@example.com' }, { userId: 'u1' }).kwargs, { email: 'a@example.com' });
  rejects('welcome-email', { user_id: 'someone-else' }, /unknown field 'user_id'; allowed: email/);
  rejects('welcome-email', { email: 'nope' }, /not a valid email/);
  rejects('welcome-email', { extra: 1 }, /unknown field 'extra'/);
});

test('arguments summary: short, readable, long strings elided', () => {
  assert.equal(summarizeArguments([[5.1, 3.5, 1.4, 0.2]], {}), '[5.1, 3.5, 1.4, 0.2]');
  assert.equal(summarizeArguments([], { width: 320, watermark: 'test' }), 'width=320, watermark="test"');
  assert.equal(summarizeArguments([], { image_b64: 'A'.repeat(5000), width: 10 }), 'image_b64=<5000 characters>, width=10');
  assert.equal(summarizeArguments([['http://a/1'], { payload: { event: 'ping' } }], {}), '["http://a/1"], {payload: {event: "ping"}}');
  const long = summarizeArguments(Array.from({ length: 100 }, (_, i) => i), {});
  assert.equal(long.length, 200);
  assert.ok(long.endsWith('…'));
  assert.equal(summarizeArguments([], {}), '');
});

test('resize-image: everything optional, ranges checked', () => {
  assert.deepEqual(buildTaskCall('resize-image', undefined), { task: 'workers.tasks.resize_and_watermark', args: [], kwargs: {} });
  assert.deepEqual(buildTaskCall('resize-image', { width: 320, watermark: '', steps_delay: 0.5, image_b64: 'aGk=' }).kwargs,
    { image_b64: 'aGk=', width: 320, watermark: '', steps_delay: 0.5 });
  rejects('resize-image', { width: 0 }, /'width' must be between 1 and 8192/);
  rejects('resize-image', { width: 10.5 }, /'width' must be an integer/);
  rejects('resize-image', { steps_delay: -1 }, /'steps_delay' must be between/);
  rejects('resize-image', { watermark: 'x'.repeat(101) }, /'watermark' must be a string of at most 100/);
});

test('predict takes exactly 4 finite numbers', () => {
  assert.deepEqual(buildTaskCall('predict', { features: [5.1, 3.5, 1.4, 0.2] }).args, [[5.1, 3.5, 1.4, 0.2]]);
  rejects('predict', { features: [1, 2, 3] }, /list of 4 numbers/);
  rejects('predict', { features: [1, 2, 3, '4'] }, /'features\[3\]' must be a finite number/);
  rejects('predict', {}, /list of 4 numbers/);
});

test('webhooks takes 1..20 http(s) URLs and an optional object payload', () => {
  assert.deepEqual(buildTaskCall('webhooks', { urls: ['https://example.com/hook'], payload: { a: 1 } }),
    { task: 'workers.tasks.fanout_webhooks', args: [['https://example.com/hook']], kwargs: { payload: { a: 1 } } });
  rejects('webhooks', { urls: [] }, /list of 1 to 20/);
  rejects('webhooks', { urls: ['ftp://example.com', 'https://ok.example'] }, /"ftp:\/\/example.com"/);
  rejects('webhooks', { urls: ['https://example.com'], payload: [1] }, /'payload' must be a JSON object/);
});

test('demo-progress is bounded in total duration', () => {
  rejects('demo-progress', { steps: 1000, delay: 1 }, /at most 600 seconds, got 1000/);
  assert.deepEqual(buildTaskCall('demo-progress', { steps: 10, delay: 60 }).args, [10, 60]);
});

test('demo-progress and fail', () => {
  assert.deepEqual(buildTaskCall('demo-progress', { steps: 3, delay: 0.1 }).args, [3, 0.1]);
  rejects('demo-progress', { steps: 3 }, /'delay' must be a number/);
  assert.deepEqual(buildTaskCall('fail', { message: 'boom' }).args, ['boom']);
  rejects('fail', { message: '' }, /'message' must be a non-empty string/);
});

test('a body that is not an object is refused', () => {
  rejects('predict', [1, 2, 3, 4], /request body must be a JSON object, got a list/);
  rejects('predict', null, /got null/);
});

test('config: secret required and >= 32 bytes, defaults, bad values named', () => {
  const secret = 'a'.repeat(64);
  assert.throws(() => readConfig({}), (err) => err instanceof ConfigError && /PUSHSERVER_SECRET/.test(err.message));
  assert.throws(() => readConfig({ PUSHSERVER_SECRET: 'change-me' }), /at least 32 bytes/);
  const config = readConfig({ PUSHSERVER_SECRET: secret });
  assert.equal(config.brokerUrl, 'redis://127.0.0.1:6379/0');
  assert.equal(config.resultBackend, 'redis://127.0.0.1:6379/1');
  assert.equal(config.port, 3000);
  assert.equal(config.host, '127.0.0.1');
  assert.equal(config.queue, 'celery');
  assert.equal(config.client, 'celery-ts', "the article's client is the default");
  assert.equal(config.tokenTtl, 900);
  assert.equal(config.sessionTtl, 8 * 3600);
  assert.equal(config.authRateLimit, 20);
  assert.equal(config.secureCookie, false);
  assert.equal(config.pushserverPublicUrl, 'http://127.0.0.1:8000');
  assert.equal(readConfig({ PUSHSERVER_SECRET: secret, CELERY_NODE_CLIENT: 'celery-node' }).client, 'celery-node');
  assert.throws(() => readConfig({ PUSHSERVER_SECRET: secret, CELERY_NODE_CLIENT: 'node-celery-ts' }), /CELERY_NODE_CLIENT must be one of celery-ts, celery-node/);
  assert.throws(() => readConfig({ PUSHSERVER_SECRET: secret, PORT: 'abc' }), /PORT must be an integer/);
  // During a rotation the server accepts "new,old"; tokens are signed with the first.
  assert.equal(readConfig({ PUSHSERVER_SECRET: `${secret}, ${'b'.repeat(64)}` }).secret, secret);
  assert.throws(() => readConfig({ PUSHSERVER_SECRET: ' , ' }), /PUSHSERVER_SECRET/);
  assert.equal(readConfig({ PUSHSERVER_SECRET: secret, TOKEN_TTL_SECONDS: '5' }).tokenTtl, 5);
  assert.equal(readConfig({ PUSHSERVER_SECRET: secret, TOKEN_TTL: '7' }).tokenTtl, 7, 'the older name still works');
  assert.throws(() => readConfig({ PUSHSERVER_SECRET: secret, TOKEN_TTL_SECONDS: '0' }), /TOKEN_TTL_SECONDS/);
  assert.equal(readConfig({ PUSHSERVER_SECRET: secret, COOKIE_SECURE: '1' }).secureCookie, true);
});

test('config: MongoDB connection string and database names', () => {
  const secret = 'a'.repeat(64);
  const config = readConfig({ PUSHSERVER_SECRET: secret });
  assert.equal(config.mongoUrl, 'mongodb://127.0.0.1:27017');
  assert.equal(config.mongoDb, 'app');
  assert.equal(config.mongoWorkersDb, 'workers');
  assert.equal(config.mongoTimeoutMs, 3000);
  const set = readConfig({
    PUSHSERVER_SECRET: secret, MONGO_URL: 'mongodb://express:pw@mongo:27017/app?authSource=app',
    MONGO_DB: 'shop', MONGO_WORKERS_DB: 'jobs', MONGO_TIMEOUT_MS: '500',
  });
  assert.deepEqual([set.mongoUrl, set.mongoDb, set.mongoWorkersDb, set.mongoTimeoutMs],
    ['mongodb://express:pw@mongo:27017/app?authSource=app', 'shop', 'jobs', 500]);
  assert.equal(readConfig({ PUSHSERVER_SECRET: secret, MONGO_URL: 'mongodb+srv://c.example.net/' }).mongoUrl, 'mongodb+srv://c.example.net/');
  assert.throws(() => readConfig({ PUSHSERVER_SECRET: secret, MONGO_URL: 'redis://127.0.0.1:6379' }), /MONGO_URL must be a mongodb:\/\//);
  assert.throws(() => readConfig({ PUSHSERVER_SECRET: secret, MONGO_TIMEOUT_MS: '0' }), /MONGO_TIMEOUT_MS/);
});

test('config: Celery transport options as JSON; a sentinel:// URL needs master_name', () => {
  const secret = 'a'.repeat(64);
  const sentinels = 'sentinel://:pw@10.0.0.1:26379/0;sentinel://:pw@10.0.0.2:26379/0';
  assert.deepEqual(readConfig({ PUSHSERVER_SECRET: secret }).brokerTransportOptions, {});
  const config = readConfig({
    PUSHSERVER_SECRET: secret,
    CELERY_BROKER_URL: sentinels,
    CELERY_RESULT_BACKEND: sentinels.replaceAll('/0', '/1'),
    CELERY_BROKER_TRANSPORT_OPTIONS: '{"master_name": "mymaster", "sentinel_kwargs": {"password": "s"}}',
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS: ' {"master_name": "mymaster"} ',
  });
  assert.deepEqual(config.brokerTransportOptions, { master_name: 'mymaster', sentinel_kwargs: { password: 's' } });
  assert.deepEqual(config.backendTransportOptions, { master_name: 'mymaster' });
  assert.throws(() => readConfig({ PUSHSERVER_SECRET: secret, CELERY_BROKER_TRANSPORT_OPTIONS: "{master_name: 'm'}" }),
    (err) => err instanceof ConfigError && /^CELERY_BROKER_TRANSPORT_OPTIONS must be a JSON object .*: .*JSON/.test(err.message));
  assert.throws(() => readConfig({ PUSHSERVER_SECRET: secret, CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS: '["mymaster"]' }),
    /CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS must be a JSON object .*got an array/);
  assert.throws(() => readConfig({ PUSHSERVER_SECRET: secret, CELERY_BROKER_URL: sentinels }),
    (err) => err instanceof ConfigError && err.message.includes(`CELERY_BROKER_URL is a sentinel:// URL: set CELERY_BROKER_TRANSPORT_OPTIONS='{"master_name": "mymaster"}'`)
      && !err.message.includes('pw'));
  assert.throws(() => readConfig({
    PUSHSERVER_SECRET: secret, CELERY_BROKER_URL: sentinels, CELERY_BROKER_TRANSPORT_OPTIONS: '{"master_name": "m"}', CELERY_RESULT_BACKEND: sentinels,
  }), /CELERY_RESULT_BACKEND is a sentinel:\/\/ URL: set CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS/);
});

test('server: a sentinel:// broker without master_name, or bad JSON, stops the start with exit 2 and one line', async () => {
  const server = fileURLToPath(new URL('../src/server.js', import.meta.url));
  const base = { ...process.env, PUSHSERVER_SECRET: 'a'.repeat(64), PORT: '0' };
  const cases = [
    [{ CELERY_BROKER_URL: 'sentinel://127.0.0.1:1/0;sentinel://127.0.0.1:2/0' }, /CELERY_BROKER_URL is a sentinel:\/\/ URL: set CELERY_BROKER_TRANSPORT_OPTIONS/],
    [{ CELERY_BROKER_TRANSPORT_OPTIONS: '{"master_name": ' }, /CELERY_BROKER_TRANSPORT_OPTIONS must be a JSON object/],
    // Caught by @celery-pushserver/node, still one line.
    [{ CELERY_BROKER_TRANSPORT_OPTIONS: '{"global_keyprefix": "x"}' }, /global_keyprefix is not supported/],
  ];
  for (const [env, pattern] of cases) {
    const result = spawnSync(process.execPath, [server], { env: { ...base, ...env }, encoding: 'utf8', timeout: 20_000 });
    assert.equal(result.status, 2, result.stderr);
    const lines = result.stderr.trim().split('\n');
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0], /^\[dispatch\] cannot start: /);
    assert.match(lines[0], pattern);
  }
});
