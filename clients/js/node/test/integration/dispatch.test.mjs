// @celery-pushserver/node against a real Redis, a real Celery worker and a real `pushserver serve`,
// with each Node Celery client; each guard is shown against the client's own unguarded API too.
//
// Nothing is skipped: without redis-server or the repo's venv the suite fails saying what to install.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { io } from 'socket.io-client';
import { createClient } from 'redis';
import {
  BrokerUnavailableError, createDispatcher, mintToken,
} from '@celery-pushserver/node';
import {
  startPushserver, startRedis, startWorker, waitFor,
} from '../../../../../examples/test-support/stack.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const SECRET = randomBytes(32).toString('hex');
const CLIENTS = ['celery-ts', 'celery-node'];
const TERMINAL = new Set(['SUCCESS', 'FAILURE', 'REVOKED']);
const quiet = { warn() {}, info() {} };

let redis; let worker; let pushserver; let db;

/** Subscribe to `taskId` on the pushserver and resolve with its terminal TaskState (and every state seen). */
function watchUntilDone(taskId, token, timeoutMs = 30_000) {
  return new Promise((resolve, reject) => {
    const socket = io(pushserver.url, { transports: ['websocket'], reconnection: false });
    const seen = [];
    const timer = setTimeout(() => { socket.close(); reject(new Error(`no terminal state for ${taskId}; saw ${JSON.stringify(seen.map((s) => s.state))}`)); }, timeoutMs);
    const take = (state) => {
      seen.push(state);
      if (TERMINAL.has(state.state)) { clearTimeout(timer); socket.close(); resolve({ final: state, seen }); }
    };
    socket.on('task:update', (state) => { if (state.task_id === taskId) take(state); });
    socket.on('connect_error', (err) => { clearTimeout(timer); reject(err); });
    socket.on('connect', () => socket.emit('subscribe', { task_id: taskId, token }, (ack) => {
      if (!ack?.ok) { clearTimeout(timer); socket.close(); reject(new Error(`subscribe refused: ${JSON.stringify(ack)}`)); return; }
      take(ack.tasks[0]);
    }));
  });
}

/** A child Node process running fixtures/outage-child.mjs, driven line by line. */
function startChild(client, brokerUrl, mode) {
  const proc = spawn(process.execPath, [path.join(here, 'fixtures', 'outage-child.mjs'), client, brokerUrl, mode], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const lines = [];
  let output = '';
  let exit;
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => { exit = { code, signal }; resolve(exit); }));
  readline.createInterface({ input: proc.stdout }).on('line', (line) => {
    output += `${line}\n`;
    try { lines.push(JSON.parse(line)); } catch { /* not ours */ }
  });
  proc.stderr.on('data', (chunk) => { output += chunk; });
  return {
    get running() { return exit === undefined; },
    get output() { return output; },
    exited,
    async command(cmd, timeoutMs = 15_000) {
      const before = lines.length;
      proc.stdin.write(`${cmd}\n`);
      return waitFor(() => {
        if (exit) throw new Error(`child exited (${exit.code ?? exit.signal}):\n${output}`);
        return lines.length > before ? lines[before] : null;
      }, { timeoutMs, intervalMs: 20, message: `an answer to ${cmd}` });
    },
    async ready() {
      await waitFor(() => {
        if (exit) throw new Error(`child exited:\n${output}`);
        return lines.some((l) => l.ready);
      }, { timeoutMs: 15_000, intervalMs: 20, message: 'the child to be ready' });
    },
    kill() { if (exit === undefined) proc.kill('SIGKILL'); return exited; },
  };
}

describe('@celery-pushserver/node with a real Redis, Celery worker and pushserver', () => {
  before(async () => {
    redis = await startRedis();
    const env = { CELERY_BROKER_URL: redis.url(0), CELERY_RESULT_BACKEND: redis.url(1) };
    [worker, pushserver] = await Promise.all([
      startWorker({ env, queue: 'celery', extraArgs: ['-I', 'celery_node_probe'], pythonPath: [path.join(here, 'fixtures')] }),
      startPushserver({ env, secret: SECRET }),
    ]);
    db = createClient({ url: redis.url(0) });
    db.on('error', () => {});
    await db.connect();
  });

  after(async () => {
    await db?.close?.().catch(() => {});
    await pushserver?.stop();
    await worker?.stop();
    await redis?.stop();
  });

  for (const client of CLIENTS) {
    test(`${client}: dispatch → the worker runs it → pushserver pushes SUCCESS for the same task id`, async () => {
      const dispatcher = await createDispatcher({ brokerUrl: redis.url(0), backendUrl: redis.url(1), client, logger: quiet });
      try {
        await dispatcher.ready();
        const { taskId } = await dispatcher.dispatch('workers.tasks.demo_progress', [2, 0.05]);
        assert.match(taskId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
        const { final, seen } = await watchUntilDone(taskId, mintToken({ secret: SECRET, tasks: [taskId], sub: 'tester' }));
        assert.equal(final.state, 'SUCCESS', JSON.stringify(final));
        assert.equal(final.task_id, taskId, 'the id dispatch() returned is the id the worker ran');
        assert.equal(final.name, 'workers.tasks.demo_progress');
        assert.equal(final.result, 2, 'the JSON value, not its repr');
        assert.equal(final.result_format, 'json');
        assert.ok(seen.length >= 1);
        // The worker stored the result under that same id.
        const backend = createClient({ url: redis.url(1) });
        await backend.connect();
        const meta = JSON.parse(await backend.get(`celery-task-meta-${taskId}`));
        await backend.close();
        assert.equal(meta.status, 'SUCCESS');
        assert.equal(meta.task_id, taskId);
      } finally {
        await dispatcher.close();
      }
    });

    test(`${client}: a caller-chosen task id is the id that runs (a token can be minted before publishing)`, async () => {
      const dispatcher = await createDispatcher({ brokerUrl: redis.url(0), client, logger: quiet });
      try {
        const chosen = randomUUID();
        const token = mintToken({ secret: SECRET, tasks: [chosen] });
        const { taskId } = await dispatcher.dispatch('workers.tasks.demo_progress', [1, 0], {}, { taskId: chosen });
        assert.equal(taskId, chosen);
        assert.equal((await watchUntilDone(chosen, token)).final.state, 'SUCCESS');
      } finally {
        await dispatcher.close();
      }
    });

    test(`${client}: dispatch resolves once Redis holds the message, without waiting for any result`, async () => {
      const queue = `nobody-consumes-${client}-${process.pid}`;
      const dispatcher = await createDispatcher({ brokerUrl: redis.url(0), client, queue, logger: quiet });
      try {
        const started = Date.now();
        const { taskId } = await dispatcher.dispatch('workers.tasks.demo_progress', [1, 0]);
        assert.ok(Date.now() - started < 2000);
        const [raw] = await db.lRange(queue, 0, -1);
        const message = JSON.parse(raw);
        assert.equal(message.headers.id, taskId);
        assert.equal(message.headers.task, 'workers.tasks.demo_progress');
        assert.equal(message.properties.delivery_info.routing_key, queue);
      } finally {
        await dispatcher.close();
        await db.del(queue);
      }
    });
  }

  test("what the worker makes of each client's message (request fields, events)", async () => {
    const backend = createClient({ url: redis.url(1) });
    await backend.connect();
    const seen = {};
    try {
      for (const client of CLIENTS) {
        const dispatcher = await createDispatcher({ brokerUrl: redis.url(0), client, logger: quiet });
        try {
          const { taskId } = await dispatcher.dispatch('probe.request_fields', [1, 'two'], { three: 3 });
          const meta = await waitFor(async () => {
            const raw = await backend.get(`celery-task-meta-${taskId}`);
            const parsed = raw && JSON.parse(raw);
            return parsed && TERMINAL.has(parsed.status) ? parsed : null;
          }, { timeoutMs: 30_000, message: `probe task of ${client}` });
          assert.equal(meta.status, 'SUCCESS', meta.traceback);
          seen[client] = { taskId, fields: meta.result };
        } finally {
          await dispatcher.close();
        }
      }
    } finally {
      await backend.close();
    }
    for (const client of CLIENTS) {
      const { taskId, fields } = seen[client];
      assert.equal(fields.id, taskId);
      assert.equal(fields.task, 'probe.request_fields');
      assert.deepEqual(fields.args, [1, 'two']);
      assert.deepEqual(fields.kwargs, { three: 3 });
      assert.equal(fields.retries, 0);
    }
    // celery-ts sends the headers a Python client sends.
    const ts = seen['celery-ts'];
    assert.equal(ts.fields.lang, 'py');
    assert.equal(ts.fields.root_id, ts.taskId);
    assert.equal(ts.fields.correlation_id, ts.taskId);
    assert.equal(ts.fields.argsrepr, "[1,\"two\"]");
    // celery-node sends only lang/task/id, with camelCase properties the worker never maps.
    const node = seen['celery-node'];
    assert.equal(node.fields.lang, 'js');
    assert.equal(node.fields.root_id, null, 'root_id is None (a Python client sets it to the task id)');
    assert.equal(node.fields.parent_id, null);
    assert.equal(node.fields.origin, null);
    assert.equal(node.fields.argsrepr, '<missing>', 'argsrepr is not even an attribute of the request');
    assert.equal(node.fields.correlation_id, null);
    assert.equal(node.fields.properties.correlationId, node.taskId);
    assert.doesNotMatch(worker.proc.output, /Received (invalid|unregistered) task/);
  });

  test("celery-ts: the message is the one celery-ts's own applyAsync() sends (same headers and properties)", async () => {
    const { createClient: createCeleryTs } = (await import('celery-ts')).default;
    const queue = `compare-${process.pid}`;
    const own = createCeleryTs({ brokerUrl: redis.url(0) });
    // applyAsync starts a result read at once; without a backend that read rejects unhandled and
    // kills Node, so this reference client gets a backend whose read never settles.
    own.backend = { get: () => new Promise(() => {}), disconnect: async () => {}, end: async () => {} };
    const dispatcher = await createDispatcher({ brokerUrl: redis.url(0), client: 'celery-ts', queue, logger: quiet });
    try {
      const task = own.createTask('workers.tasks.demo_progress');
      task.queue = queue;
      const theirs = task.applyAsync({ args: [1, 0], kwargs: { a: 1 } });
      const ours = await dispatcher.dispatch('workers.tasks.demo_progress', [1, 0], { a: 1 });
      const messages = await waitFor(async () => {
        const list = (await db.lRange(queue, 0, -1)).map((m) => JSON.parse(m));
        return list.length === 2 ? list : null;
      }, { timeoutMs: 5000, message: 'both messages' });
      const byId = Object.fromEntries(messages.map((m) => [m.headers.id, m]));
      const mine = byId[ours.taskId];
      const reference = byId[theirs.taskId];
      assert.ok(mine && reference, 'both messages are on the queue, each under its own id');
      const normalise = (m) => ({
        ...m,
        headers: { ...m.headers, id: 'ID', root_id: 'ID', origin: 'ORIGIN' },
        properties: { ...m.properties, correlation_id: 'ID', reply_to: 'APP' },
      });
      assert.deepEqual(normalise(mine), normalise(reference));
      assert.equal(mine.headers.root_id, ours.taskId);
      assert.equal(mine.properties.correlation_id, ours.taskId);
    } finally {
      await own.disconnect().catch(() => {});
      await dispatcher.close();
      await db.del(queue);
    }
  });

  test('no psubscribe per result: the dispatcher adds no pattern subscription, where celery-ts with a backend does', async () => {
    const numpat = async () => Number((await db.sendCommand(['PUBSUB', 'NUMPAT'])));
    const baseline = await numpat();
    const dispatcher = await createDispatcher({ brokerUrl: redis.url(0), backendUrl: redis.url(1), client: 'celery-ts', logger: quiet });
    try {
      for (let i = 0; i < 10; i += 1) await dispatcher.dispatch('workers.tasks.demo_progress', [0, 0]);
      assert.equal(await numpat(), baseline, 'no PSUBSCRIBE from the dispatcher');
    } finally {
      await dispatcher.close();
    }
    // The measure can see one: celery-ts's own client with a result backend psubscribes celery-task-meta-*.
    // (In a child process: its connections are not all closed by its own disconnect().)
    const child = spawn(process.execPath, [path.join(here, 'fixtures', 'celery-ts-with-backend.mjs'), redis.url(0), redis.url(1)], { stdio: 'ignore' });
    try {
      await waitFor(async () => (await numpat()) > baseline, { timeoutMs: 10_000, message: "celery-ts's psubscribe" });
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('ready() and dispatch() reject with BrokerUnavailableError when nothing listens, quickly', async () => {
    for (const client of CLIENTS) {
      const dispatcher = await createDispatcher({ brokerUrl: 'redis://127.0.0.1:1/0', client, readyTimeoutMs: 1500, logger: quiet });
      try {
        const started = Date.now();
        await assert.rejects(dispatcher.ready(), BrokerUnavailableError);
        await assert.rejects(dispatcher.dispatch('workers.tasks.demo_progress', [0, 0]), (err) => {
          assert.ok(err instanceof BrokerUnavailableError, String(err));
          assert.equal(err.code, 'broker_unavailable');
          assert.match(err.message, /could not send workers\.tasks\.demo_progress to the broker/);
          return true;
        });
        assert.ok(Date.now() - started < 4000, `${client} took ${Date.now() - started} ms`);
      } finally {
        await dispatcher.close();
      }
    }
  });
});

describe('a Redis outage under a running Node process', () => {
  // Each client's own API kills Node within ~10 s of an outage; through the dispatcher, dispatch
  // rejects and the process lives on, then dispatches again once Redis is back.
  const OBSERVE_MS = 12_000; // longer than celery-ts's ~10 s of ioredis retries before its crash

  for (const client of CLIENTS) {
    test(`${client}: raw API crashes Node; the dispatcher rejects with BrokerUnavailableError and Node lives`, async () => {
      const outageRedis = await startRedis();
      const url = outageRedis.url(0);
      const raw = startChild(client, url, 'raw');
      const guarded = startChild(client, url, 'guarded');
      let restarted;
      try {
        await Promise.all([raw.ready(), guarded.ready()]);
        assert.equal((await raw.command('dispatch')).ok, true);
        assert.equal((await guarded.command('dispatch')).ok, true);

        await outageRedis.stop();
        const started = Date.now();
        const refused = await guarded.command('dispatch');
        assert.equal(refused.ok, false);
        assert.equal(refused.name, 'BrokerUnavailableError');
        assert.equal(refused.code, 'broker_unavailable');
        assert.ok(Date.now() - started < 5000, `the rejection took ${Date.now() - started} ms`);

        // The client's own API answers as if all were well, then its stray promise kills the process.
        const answered = await raw.command('dispatch').catch((err) => ({ crashedBeforeAnswer: err.message }));
        await Promise.race([raw.exited, new Promise((resolve) => setTimeout(resolve, OBSERVE_MS))]);
        assert.equal(raw.running, false, `the unguarded ${client} process should have crashed; it said ${JSON.stringify(answered)}`);
        assert.match(raw.output, /MaxRetriesPerRequestError|ECONNREFUSED|Connection is closed|Stream isn't writeable/);
        // The guarded one is alive after the same window, and still answers.
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, OBSERVE_MS - (Date.now() - started))));
        assert.ok(guarded.running, `guarded process died:\n${guarded.output}`);
        assert.equal(await guarded.command('ping'), 'pong');
        assert.doesNotMatch(guarded.output, /Unhandled|unhandled/);

        restarted = await startRedis({ port: outageRedis.port });
        const back = await waitFor(async () => {
          const answer = await guarded.command('dispatch');
          return answer.ok ? answer : null;
        }, { timeoutMs: 20_000, intervalMs: 300, message: 'dispatch to work again after Redis restarted' });
        const check = createClient({ url });
        await check.connect();
        const queued = (await check.lRange('celery', 0, -1)).map((m) => JSON.parse(m).headers.id);
        await check.close();
        assert.ok(queued.includes(back.taskId), 'the message after recovery is on the queue');
      } finally {
        await raw.kill();
        await guarded.kill();
        await (restarted ?? outageRedis).stop();
      }
    });
  }
});
