// The app's MongoDB side with the official `mongodb` driver against a real nx-27017 (MongoDB's wire
// protocol over SQLite): the stores, the start-up indexes, and a MongoDB outage seen from HTTP.
//
// nx-27017 serves everything the app uses here (createIndex with unique, insertOne, duplicate-key
// errors with code 11000, find with sort/limit/projection, deleteOne, ping). It does not evaluate
// field paths inside a compound `$group` _id nor keep a datetime given to `$set` as a date; the
// app's code (and the workers') only uses forms that real MongoDB and nx-27017 both handle.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { openDatabase } from '../src/db.js';
import { AccountError, UserStore } from '../src/users.js';
import { TaskRecords } from '../src/taskRecords.js';
import { freePort, startExpress, startMongo, startRedis, waitFor } from '../../test-support/stack.js';

const SECRET = randomBytes(32).toString('hex');
const quiet = { info() {}, warn() {}, error() {} };

describe('the MongoDB stores against nx-27017', () => {
  let mongo; let database;

  before(async () => {
    mongo = await startMongo();
    database = openDatabase({ url: mongo.url(), dbName: 'app_stores', workersDbName: 'workers_stores', logger: quiet });
    await database.ensureIndexes();
  });

  after(async () => {
    await database?.close();
    await mongo?.stop();
  });

  test('indexes are created at start-up, and creating them again changes nothing', async () => {
    await database.ensureIndexes();
    const keys = async (name) => (await database.client.db('app_stores').collection(name).listIndexes().toArray())
      .map((index) => JSON.stringify(index.key)).sort();
    // Index names differ between servers (nx-27017 names its own way): compare keys only.
    assert.ok((await keys('users')).includes('{"username_lower":1}'));
    // nx-27017 also reports a descending key as ascending (-1 comes back as 1): compare the fields.
    const fields = (await keys('tasks')).filter((k) => k !== '{"_id":1}').map((k) => Object.keys(JSON.parse(k)).join(','));
    assert.deepEqual(fields, ['created_at', 'owner,created_at']);
    await database.users.insertOne({ _id: 'x1', username_lower: 'same' });
    await assert.rejects(database.users.insertOne({ _id: 'x2', username_lower: 'same' }), (err) => err.code === 11000,
      'the unique index on username_lower holds');
    await database.users.deleteOne({ _id: 'x1' });
  });

  test('users: salted scrypt hashes in MongoDB, case-insensitive names, the same answer for a wrong password or user', async () => {
    const users = new UserStore({ collection: database.users });
    const ada = await users.register('Ada', 'correct horse battery');
    assert.deepEqual(Object.keys(ada).sort(), ['id', 'username'], 'no hash leaves the store');
    const stored = await database.users.findOne({ _id: ada.id });
    assert.equal(stored.username, 'Ada');
    assert.equal(stored.username_lower, 'ada');
    assert.ok(stored.created_at instanceof Date);
    assert.match(stored.password_hash, /^scrypt\$32768\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    const bob = await users.register('bob', 'correct horse battery');
    assert.notEqual((await database.users.findOne({ _id: bob.id })).password_hash, stored.password_hash, 'different salts');
    assert.deepEqual(await users.authenticate('ada', 'correct horse battery'), ada);
    assert.equal(await users.authenticate('ada', 'wrong password!'), null);
    assert.equal(await users.authenticate('nobody', 'correct horse battery'), null);
    assert.deepEqual(await users.byId(bob.id), bob);
    assert.equal(await users.byId('no-such-id'), undefined);
    await assert.rejects(users.register('ADA', 'another password'), (err) => err instanceof AccountError && err.code === 'conflict');
    // Two registrations of one name at once: the unique index lets exactly one in.
    const race = await Promise.allSettled([users.register('twin', 'password-1'), users.register('TWIN', 'password-2')]);
    assert.deepEqual(race.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
    assert.equal(await database.users.countDocuments({ username_lower: 'twin' }), 1);
  });

  test('task records: owner, kind, name, arguments summary, created time; listed newest first per owner', async () => {
    const records = new TaskRecords({ collection: database.tasks });
    const [one, two, other] = [randomUUID(), randomUUID(), randomUUID()];
    await records.add({ taskId: one, owner: 'u1', kind: 'predict', task: 'workers.tasks.predict', argsSummary: '[1, 2, 3, 4]', createdAt: new Date(Date.now() - 2000) });
    await records.add({ taskId: two, owner: 'u1', kind: 'fail', task: 'workers.tasks.fail', argsSummary: '"boom"' });
    await records.add({ taskId: other, owner: 'u2', kind: 'fail', task: 'workers.tasks.fail', argsSummary: '"x"' });
    const list = await records.listFor('u1');
    assert.deepEqual(list.map((t) => t.id), [two, one]);
    assert.deepEqual(Object.keys(list[1]).sort(), ['args_summary', 'created_at', 'id', 'kind', 'state', 'task']);
    assert.equal(list[1].args_summary, '[1, 2, 3, 4]');
    assert.equal(list[1].state, 'PENDING');
    assert.ok(!Number.isNaN(Date.parse(list[1].created_at)));
    assert.ok(await records.owns('u1', one));
    assert.ok(!await records.owns('u2', one));
    assert.ok(!await records.owns(undefined, one));
    await records.remove(two);
    assert.deepEqual((await records.listFor('u1')).map((t) => t.id), [one]);
    for (let i = 0; i < 60; i += 1) {
      await records.add({ taskId: randomUUID(), owner: 'many', kind: 'fail', task: 'workers.tasks.fail', argsSummary: '' });
    }
    assert.equal((await records.listFor('many')).length, 50, 'the list is bounded');
  });
});

describe('Express and a MongoDB outage', () => {
  let redis; let mongo; let express;

  const call = async (method, route, { body, cookie } = {}) => {
    const res = await fetch(`${express.url}${route}`, {
      method,
      headers: { 'content-type': 'application/json', ...(cookie ? { cookie } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    let json;
    try { json = JSON.parse(text); } catch { json = undefined; }
    return { status: res.status, json, text, headers: res.headers };
  };

  const assertUnavailable = (res) => {
    assert.equal(res.status, 503, res.text);
    assert.deepEqual(res.json, { error: { code: 'database_unavailable', message: 'the database is unavailable right now; try again shortly' } });
    assert.equal(res.headers.get('retry-after'), '5');
  };

  before(async () => {
    redis = await startRedis();
    // MongoDB is not up yet: Express must start anyway and create its indexes once it is.
    const port = await freePort();
    mongo = { port };
    express = await startExpress({
      env: {
        CELERY_BROKER_URL: redis.url(0), CELERY_RESULT_BACKEND: redis.url(1), PUSHSERVER_SECRET: SECRET,
        MONGO_URL: `mongodb://127.0.0.1:${port}`, MONGO_TIMEOUT_MS: '1000', CELERY_QUEUE: `mongo-outage-${process.pid}`,
      },
    });
  });

  after(async () => {
    await express?.stop();
    await mongo?.stop?.();
    await redis?.stop();
  });

  test('503 JSON while MongoDB is down, no crash, and everything works once it is up', async () => {
    const down = await Promise.all([
      call('POST', '/api/register', { body: { username: 'early', password: 'long enough pw' } }),
      call('POST', '/api/login', { body: { username: 'early', password: 'long enough pw' } }),
      call('GET', '/api/tasks', { cookie: 'sid=whatever' }),
    ]);
    down.forEach(assertUnavailable);
    const readyz = await call('GET', '/readyz');
    assert.equal(readyz.status, 503);
    assert.equal(readyz.json.database, 'unavailable');
    assert.equal(readyz.json.broker, 'ready');
    assert.ok(express.proc.running, `express died:\n${express.proc.tail()}`);
    assert.equal((await call('GET', '/healthz')).status, 200);

    mongo = await startMongo({ port: mongo.port });
    const reg = await waitFor(async () => {
      const res = await call('POST', '/api/register', { body: { username: 'grace', password: 'hopper-1906-cobol' } });
      return res.status === 201 ? res : null;
    }, { timeoutMs: 20_000, intervalMs: 500, message: 'register to work once MongoDB is up' });
    const cookie = /sid=[^;]+/.exec(reg.headers.get('set-cookie'))[0];
    assert.equal((await call('GET', '/readyz')).json.database, 'ready');
    // The unique index was created after all: a second 'Grace' is a conflict.
    const twice = await call('POST', '/api/register', { body: { username: 'Grace', password: 'another-password' } });
    assert.equal(twice.status, 409, twice.text);

    // Down again, with a session: the token route and the list answer 503, not 404 or 401.
    await mongo.stop();
    const taskId = randomUUID();
    assertUnavailable(await call('GET', `/api/tasks/${taskId}/token`, { cookie }));
    assertUnavailable(await call('GET', '/api/tasks', { cookie }));
    assertUnavailable(await call('POST', '/api/tasks/demo-progress', { body: { steps: 1, delay: 0 }, cookie }));
    assert.ok(express.proc.running);
    assert.doesNotMatch(express.proc.output, /unhandled promise rejection|internal error/);
  });
});
