// Unit tests for the allowlist and body validation: no Redis needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildTaskCall, TASKS, ValidationError } from '../src/tasks.js';
import { mintToken, verifyToken } from '../src/tokens.js';
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

test('welcome-email', () => {
  assert.deepEqual(buildTaskCall('welcome-email', { user_id: 'u1' }),
    { task: 'workers.tasks.send_welcome_email', args: ['u1'], kwargs: {} });
  assert.deepEqual(buildTaskCall('welcome-email', { user_id: 'u1', email: 'a@example.com' }).kwargs, { email: 'a@example.com' });
  rejects('welcome-email', {}, /'user_id' must be a non-empty string/);
  rejects('welcome-email', { user_id: 'a\nb' }, /single line/);
  rejects('welcome-email', { user_id: 'u', email: 'nope' }, /not a valid email/);
  rejects('welcome-email', { user_id: 'u', extra: 1 }, /unknown field 'extra'/);
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

test('tokens carry tasks, sub and a short exp, HS256', () => {
  const token = mintToken('s3cret', ['t-1'], { ttlSeconds: 60, sub: 'alice' });
  const [header] = token.split('.');
  assert.equal(JSON.parse(Buffer.from(header, 'base64url')).alg, 'HS256');
  const claims = verifyToken('s3cret', token);
  assert.deepEqual(claims.tasks, ['t-1']);
  assert.equal(claims.sub, 'alice');
  assert.equal(claims.exp - claims.iat, 60);
  assert.throws(() => verifyToken('other', token), /invalid signature/);
  assert.equal(verifyToken('s3cret', mintToken('s3cret', ['t'])).sub, undefined);
});

test('config: secret required, defaults from DESIGN.md, bad numbers named', () => {
  assert.throws(() => readConfig({}), (err) => err instanceof ConfigError && /PUSHSERVER_SECRET/.test(err.message));
  const config = readConfig({ PUSHSERVER_SECRET: 'x' });
  assert.equal(config.brokerUrl, 'redis://127.0.0.1:6379/0');
  assert.equal(config.resultBackend, 'redis://127.0.0.1:6379/1');
  assert.equal(config.port, 3000);
  assert.equal(config.host, '127.0.0.1');
  assert.equal(config.queue, 'celery');
  assert.equal(config.tokenTtl, 900);
  assert.equal(config.pushserverPublicUrl, 'http://127.0.0.1:8000');
  assert.throws(() => readConfig({ PUSHSERVER_SECRET: 'x', PORT: 'abc' }), /PORT must be an integer/);
  // During a rotation the server accepts "new,old"; tokens are signed with the first.
  assert.equal(readConfig({ PUSHSERVER_SECRET: 'new-secret, old-secret' }).secret, 'new-secret');
  assert.throws(() => readConfig({ PUSHSERVER_SECRET: ' , ' }), /PUSHSERVER_SECRET/);
  assert.throws(() => readConfig({ PUSHSERVER_SECRET: 'x', TOKEN_TTL: '0' }), /TOKEN_TTL/);
});
