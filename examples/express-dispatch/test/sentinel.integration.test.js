// The dispatch app configured for Redis Sentinel the way the workers are (sentinel:// URL lists and
// CELERY_*_TRANSPORT_OPTIONS JSON), one app per Node client, against real redis-sentinels and a real
// Celery worker: tasks succeed, a killed master gives 503s (the app stays up), the promoted one 202s.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { startExpress, startWorker, waitFor } from '../../test-support/stack.js';
import { redisCommand, startSentinelSet } from '../../../clients/js/node/test/integration/sentinelSet.mjs';

const CLIENTS = ['celery-ts', 'celery-node'];
const QUEUE = `express-sentinel-${process.pid}`;
const PASSWORD = 'master-secret';
const OPTIONS = JSON.stringify({ master_name: 'mymaster' });

let set; let worker;
const apps = {};

before(async () => {
  set = await startSentinelSet({ password: PASSWORD });
  const celery = {
    CELERY_BROKER_URL: set.url(0),
    CELERY_RESULT_BACKEND: set.url(1),
    CELERY_BROKER_TRANSPORT_OPTIONS: OPTIONS,
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS: OPTIONS,
  };
  worker = await startWorker({ env: celery, queue: QUEUE, name: 'express-sentinel-worker' });
  for (const client of CLIENTS) {
    const express = await startExpress({
      name: `express-${client}`,
      env: {
        ...celery, CELERY_NODE_CLIENT: client, CELERY_QUEUE: QUEUE, PUSHSERVER_SECRET: randomBytes(32).toString('hex'),
        CELERY_READY_TIMEOUT_MS: '2000', CELERY_PUBLISH_TIMEOUT_MS: '2000',
      },
    });
    const res = await fetch(`${express.url}/api/register`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: 'a long enough password' }),
    });
    assert.equal(res.status, 201, await res.text());
    const cookie = /sid=[^;]*/.exec(res.headers.get('set-cookie'))[0];
    apps[client] = { express, cookie };
  }
});

after(async () => {
  for (const { express } of Object.values(apps)) await express.stop();
  await worker?.stop();
  await set?.stop();
});

async function post(client) {
  const { express, cookie } = apps[client];
  const res = await fetch(`${express.url}/api/tasks/demo-progress`, {
    method: 'POST', headers: { 'content-type': 'application/json', cookie }, body: JSON.stringify({ steps: 1, delay: 0 }),
    signal: AbortSignal.timeout(15_000),
  });
  return { status: res.status, json: await res.json() };
}

async function succeeded(taskId) {
  return waitFor(async () => {
    const master = await set.currentMasterPort();
    const raw = master && await redisCommand(master, ['GET', `celery-task-meta-${taskId}`], { password: PASSWORD, database: 1 });
    return typeof raw === 'string' && JSON.parse(raw).status === 'SUCCESS';
  }, { timeoutMs: 30_000, intervalMs: 200, message: `task ${taskId} to succeed\n--- worker ---\n${worker.proc.tail(2000)}` });
}

test('each client dispatches through Sentinel from the env the workers use', async () => {
  for (const client of CLIENTS) {
    const { status, json } = await post(client);
    assert.equal(status, 202, JSON.stringify(json));
    await succeeded(json.task_id);
  }
});

test('the master is killed: 503 broker_unavailable while Sentinel promotes, the apps stay up, then 202 again', async () => {
  const killedAt = Date.now();
  await set.master.proc.stop('SIGKILL');
  const seen = Object.fromEntries(CLIENTS.map((c) => [c, { 503: 0, 202: [] }]));
  let promotedAt;
  const deadline = Date.now() + 60_000;
  // A plain loop, not waitFor: a wrong answer must fail at once, not be retried.
  while (!(promotedAt !== undefined && CLIENTS.every((c) => seen[c][202].some((r) => r.at > promotedAt)))) {
    assert.ok(Date.now() < deadline, `not back within 60 s: ${JSON.stringify(seen)}`);
    if (promotedAt === undefined && (await set.currentMasterPort()) === set.replica.port) promotedAt = Date.now();
    for (const client of CLIENTS) {
      assert.ok(apps[client].express.proc.running, `${client} app exited:\n${apps[client].express.proc.tail()}`);
      const { status, json } = await post(client);
      assert.ok(status === 202 || (status === 503 && json.error?.code === 'broker_unavailable'), `${client}: ${status} ${JSON.stringify(json)}`);
      if (status === 202) seen[client][202].push({ id: json.task_id, at: Date.now() });
      else seen[client][503] += 1;
    }
    await sleep(100);
  }
  console.log(`# express through Sentinel: promoted after ${promotedAt - killedAt} ms; `
    + CLIENTS.map((c) => `${c}: ${seen[c][503]} × 503, ${seen[c][202].length} × 202`).join('; '));
  for (const client of CLIENTS) {
    assert.ok(seen[client][503] >= 1, `${client}: the outage was never seen`);
    for (const { id } of seen[client][202]) await succeeded(id);
    assert.ok(apps[client].express.proc.running);
    assert.ok(!apps[client].express.proc.output.includes(PASSWORD), 'the password never reaches the logs');
  }
});
