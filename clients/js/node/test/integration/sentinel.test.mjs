// sentinel:// with both clients against real Redis Sentinel (a master, a replica, three redis-sentinels,
// passwords on the master and on the sentinels), a real Celery worker and a real pushserver configured
// the same way: tasks succeed and are pushed, a demoted master and a killed one are followed, dispatch
// rejects cleanly in between.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { io } from 'socket.io-client';
import { BrokerUnavailableError, createDispatcher, mintToken } from '@celery-pushserver/node';
import { startPushserver, startWorker, waitFor } from '../../../../../examples/test-support/stack.js';
import { redisCommand, startSentinelSet } from './sentinelSet.mjs';

const CLIENTS = ['celery-ts', 'celery-node'];
const QUEUE = 'sentinel';
const PASSWORD = 'master-p@ss';
const SENTINEL_PASSWORD = 'sentinel-secret';
const OPTIONS = { master_name: 'mymaster', sentinel_kwargs: { password: SENTINEL_PASSWORD } };

const SECRET = randomBytes(32).toString('hex');

let set; let worker; let pushserver;
const dispatchers = {};
const logs = [];
const stray = [];
const onStray = (reason) => stray.push(reason);

before(async () => {
  process.on('unhandledRejection', onStray);
  process.on('uncaughtException', onStray);
  set = await startSentinelSet({ password: PASSWORD, sentinelPassword: SENTINEL_PASSWORD });
  // The workers, pushserver and the dispatchers all get the same URLs and transport options.
  const env = {
    CELERY_BROKER_URL: set.url(0),
    CELERY_RESULT_BACKEND: set.url(1),
    CELERY_BROKER_TRANSPORT_OPTIONS: JSON.stringify(OPTIONS),
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS: JSON.stringify(OPTIONS),
  };
  [worker, pushserver] = await Promise.all([
    startWorker({ queue: QUEUE, name: 'sentinel-worker', env }),
    startPushserver({ env, secret: SECRET, name: 'sentinel-pushserver' }),
  ]);
  for (const client of CLIENTS) {
    dispatchers[client] = await createDispatcher({
      brokerUrl: set.url(0),
      brokerTransportOptions: OPTIONS,
      backendUrl: set.url(1),
      backendTransportOptions: OPTIONS,
      client,
      queue: QUEUE,
      readyTimeoutMs: 2000,
      publishTimeoutMs: 2000,
      logger: { warn: (m) => logs.push(`${client} warn ${m}`), info: (m) => logs.push(`${client} info ${m}`) },
    });
  }
});

after(async () => {
  for (const dispatcher of Object.values(dispatchers)) await dispatcher.close();
  await Promise.all([worker?.stop(), pushserver?.stop()]);
  await set?.stop();
  process.removeListener('unhandledRejection', onStray);
  process.removeListener('uncaughtException', onStray);
});

/** The task's final meta in the result backend (DB 1 of whichever server the sentinels now call master). */
async function resultOf(taskId, timeoutMs = 30_000) {
  return waitFor(async () => {
    const master = await set.currentMasterPort();
    if (master === null) return null;
    const reply = await redisCommand(master, ['GET', `celery-task-meta-${taskId}`], { password: PASSWORD, database: 1 });
    if (typeof reply !== 'string') return null;
    const meta = JSON.parse(reply);
    return meta.status === 'SUCCESS' || meta.status === 'FAILURE' ? meta : null;
  }, { timeoutMs, intervalMs: 200, message: `a result for ${taskId}` });
}

/** Subscribe to `taskId` on the pushserver and resolve with its state once it is SUCCESS or FAILURE. */
function pushedFinalState(taskId, timeoutMs = 30_000) {
  const token = mintToken({ secret: SECRET, tasks: [taskId] });
  return new Promise((resolve, reject) => {
    const socket = io(pushserver.url, { transports: ['websocket'], reconnection: false });
    const timer = setTimeout(() => { socket.close(); reject(new Error(`pushserver sent no final state for ${taskId}`)); }, timeoutMs);
    const take = (state) => {
      if (state?.task_id === taskId && (state.state === 'SUCCESS' || state.state === 'FAILURE')) {
        clearTimeout(timer); socket.close(); resolve(state);
      }
    };
    socket.on('task:update', take);
    socket.on('connect_error', (err) => { clearTimeout(timer); reject(err); });
    socket.on('connect', () => socket.emit('subscribe', { task_id: taskId, token }, (ack) => {
      if (!ack?.ok) { clearTimeout(timer); socket.close(); reject(new Error(`subscribe refused: ${JSON.stringify(ack)}`)); return; }
      take(ack.tasks[0]);
    }));
  });
}

/** Dispatch one task per client under an id chosen first, watched through the pushserver; resolve with what it pushed. */
async function dispatchAndWatch() {
  return Promise.all(CLIENTS.map(async (client) => {
    const taskId = randomUUID();
    const pushed = pushedFinalState(taskId);
    const result = await dispatchers[client].dispatch('workers.tasks.demo_progress', [1, 0], {}, { taskId });
    assert.equal(result.taskId, taskId);
    return { client, taskId, state: await pushed };
  }));
}

async function dispatchEach() {
  const ids = {};
  for (const client of CLIENTS) ids[client] = (await dispatchers[client].dispatch('workers.tasks.demo_progress', [1, 0])).taskId;
  return ids;
}

test('both clients dispatch through Sentinel (passwords on the master and the sentinels); the worker runs the tasks and pushserver pushes SUCCESS', async () => {
  const ids = await dispatchEach();
  for (const client of CLIENTS) {
    const meta = await resultOf(ids[client]);
    assert.equal(meta.status, 'SUCCESS', `${client}: ${JSON.stringify(meta)}`);
    assert.equal(meta.result, 1);
  }
  for (const { client, state } of await dispatchAndWatch()) {
    assert.equal(state.state, 'SUCCESS', `${client}: ${JSON.stringify(state)}`);
    assert.equal(String(state.result), '1');
  }
});

/**
 * Dispatch with both clients every 100 ms until `done()`; every attempt either resolves or rejects
 * with BrokerUnavailableError. Returns the accepted tasks, the rejections, and the accepted tasks
 * whose result never came.
 */
async function dispatchThrough(done, timeoutMs) {
  const resolved = [];
  const rejected = { 'celery-ts': 0, 'celery-node': 0 };
  const deadline = Date.now() + timeoutMs;
  while (!(await done(resolved))) {
    assert.ok(Date.now() < deadline, `not done within ${timeoutMs} ms; resolved ${resolved.length}, rejected ${JSON.stringify(rejected)}`);
    await Promise.all(CLIENTS.map(async (client) => {
      try {
        const { taskId } = await dispatchers[client].dispatch('workers.tasks.demo_progress', [1, 0]);
        resolved.push({ client, taskId, at: Date.now() });
      } catch (err) {
        assert.ok(err instanceof BrokerUnavailableError, `${client}: ${err?.stack ?? err}`);
        rejected[client] += 1;
      }
    }));
    await sleep(100);
  }
  const lost = [];
  for (const item of resolved) {
    const meta = await resultOf(item.taskId, lost.length ? 2000 : 30_000).catch(() => null);
    if (meta?.status !== 'SUCCESS') lost.push(item);
  }
  return { resolved, rejected, lost };
}

// A demoted master keeps taking writes until the sentinels reconfigure it as a replica (about a second
// after the promotion), and Redis then drops them in the resync: acknowledged writes lost in a failover
// are Redis's documented limit (min-replicas-to-write narrows it). Here the worker still runs the tasks
// sent in that second, but their results go to the demoted master and vanish. What the dispatcher owes:
// no crash, clean rejections, and every task accepted once the sentinels name the new master is delivered.
test('a master demoted by SENTINEL FAILOVER is left for the new one; every task accepted after the switch succeeds', async () => {
  assert.equal(await set.currentMasterPort(), set.master.port);
  const started = Date.now();
  assert.equal(await set.sentinelCommand(['SENTINEL', 'FAILOVER', set.masterName]), 'OK');
  let switchedAt;
  const { resolved, rejected, lost } = await dispatchThrough(async (ok) => {
    if (switchedAt === undefined && (await set.currentMasterPort()) === set.replica.port) switchedAt = Date.now();
    return switchedAt !== undefined && CLIENTS.every((c) => ok.filter((r) => r.client === c && r.at > switchedAt + 1000).length >= 3);
  }, 60_000);
  const after = resolved.filter((r) => r.at > switchedAt + 1000);
  const lostAfter = lost.filter((r) => r.at > switchedAt + 1000);
  console.log(`# SENTINEL FAILOVER: switched after ${switchedAt - started} ms; accepted ${resolved.length} (results lost by Redis in the switch: `
    + `${lost.length}, at ${JSON.stringify(lost.map((l) => l.at - switchedAt))} ms from the switch; of them run by the worker, `
    + `result written to the demoted master: ${lost.filter((l) => worker.proc.output.includes(`${l.taskId}] succeeded`)).length}), rejected ${JSON.stringify(rejected)}; `
    + `accepted more than 1 s after the switch: expected ${after.length} delivered ${after.length - lostAfter.length}`);
  assert.deepEqual(lostAfter, []);
  for (const { client, state } of await dispatchAndWatch()) assert.equal(state.state, 'SUCCESS', `${client} after the switch, via pushserver`);
  assert.deepEqual(stray, []);
});

test('the master is killed: dispatch rejects with BrokerUnavailableError, Node stays up, then works on the promoted server', async () => {
  const masterPort = await set.currentMasterPort();
  const [dying, heir] = masterPort === set.master.port ? [set.master, set.replica] : [set.replica, set.master];
  assert.equal(masterPort, dying.port);
  // The heir must be a synced replica before the kill, or Sentinel has nobody to promote.
  await waitFor(async () => /master_link_status:up/.test(String(await redisCommand(heir.port, ['INFO', 'replication'], { password: PASSWORD }))),
    { timeoutMs: 30_000, message: 'the heir to be a synced replica' });
  const killedAt = Date.now();
  await dying.proc.stop('SIGKILL');
  let promotedAt;
  const { resolved, rejected, lost } = await dispatchThrough(async (ok) => {
    if (promotedAt === undefined && (await set.currentMasterPort()) === heir.port) promotedAt = Date.now();
    return promotedAt !== undefined && CLIENTS.every((c) => ok.some((r) => r.client === c && r.at > promotedAt));
  }, 60_000);
  const firstOk = Object.fromEntries(CLIENTS.map((c) => [c, resolved.find((r) => r.client === c).at - killedAt]));
  console.log(`# master killed: promoted after ${promotedAt - killedAt} ms; first dispatch accepted after ${JSON.stringify(firstOk)} ms; `
    + `rejected ${JSON.stringify(rejected)}; accepted: expected ${resolved.length} delivered ${resolved.length - lost.length}`);
  // A dead master takes nothing: every task accepted during and after the failover is delivered.
  assert.deepEqual(lost, []);
  for (const client of CLIENTS) {
    assert.ok(rejected[client] >= 1, `${client}: the outage was never seen (${JSON.stringify(rejected)})`);
    assert.ok(logs.some((l) => l.startsWith(`${client} warn`) && /unavailable/.test(l)), `${client}: no outage line in ${JSON.stringify(logs)}`);
    assert.equal(dispatchers[client].status(), 'ready');
  }
  for (const { client, state } of await dispatchAndWatch()) assert.equal(state.state, 'SUCCESS', `${client} after the promotion, via pushserver`);
  assert.deepEqual(stray, []);
  // Nothing the dispatchers print carries a password.
  assert.ok(logs.every((l) => !l.includes(PASSWORD) && !l.includes(encodeURIComponent(PASSWORD)) && !l.includes(SENTINEL_PASSWORD)), logs.join('\n'));
});
