// End to end in a real browser: Debian's Chromium (via playwright-core) on the
// React client (built on @celery-pushserver/react) served by Express, live
// updates from a real pushserver fed by a real Celery worker (with Celery Beat
// embedded) through a private Redis, and one nx-27017 as the MongoDB of
// Express (users, task records) and the worker (the same records, the nightly
// report). Every process runs on a free loopback port and is stopped by PID
// when the suite ends.
//
// Express mints tokens that live TOKEN_TTL_SECONDS (a few seconds here) and the
// pushserver runs with no leeway, so tokens expire in the middle of tasks: the
// pushserver sends `token_expired`, the page's task client fetches a fresh token
// from GET /api/tasks/:id/token and subscribes again.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import {
  freePort, PrerequisiteError, REPO_ROOT, removeDir, requireExecutable, startExpress, startMongo, startPushserver,
  startRedis, startWorker, tempDir,
} from '../../test-support/stack.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const OUTPUT_DIR = path.resolve(here, '..', 'test-output');
const CLIENT_DIST = path.join(REPO_ROOT, 'examples', 'react-client', 'dist');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];
const SECRET = randomBytes(32).toString('hex');
const TOKEN_TTL_SECONDS = 4;
const USER = { username: `e2e-${randomBytes(3).toString('hex')}`, password: randomBytes(12).toString('hex') };

let redis; let mongo; let worker; let pushserver; let express; let context; let page; let userDataDir; let beatDir;
const websockets = [];
const pageErrors = [];
const tokenRequests = []; // {taskId, status} of GET /api/tasks/:id/token
const serverErrors = []; // pushserver:error payloads received by the page

function stackOutput() {
  return [worker, pushserver, express].filter(Boolean)
    .map((p) => `--- ${p.proc.name} ---\n${p.proc.tail(3000)}`).join('\n');
}

/** The card of the newest task of `kind` (the list is newest first). */
function newestCard(kind) {
  return page.locator(`[data-testid="task-card"][data-kind="${kind}"]`).first();
}

async function startFromPage(kind, buttonName) {
  const before = await page.locator(`[data-testid="task-card"][data-kind="${kind}"]`).count();
  await page.getByRole('button', { name: buttonName }).click();
  await page.waitForFunction(
    ([k, n]) => document.querySelectorAll(`[data-testid="task-card"][data-kind="${k}"]`).length > n,
    [kind, before], { timeout: 15_000 },
  );
  const card = newestCard(kind);
  return { card, id: await card.getAttribute('data-task-id') };
}

async function waitForState(card, state, timeout = 30_000) {
  try {
    await card.locator(`xpath=self::*[@data-state="${state}"]`).waitFor({ timeout });
  } catch (err) {
    const now = await card.getAttribute('data-state');
    throw new Error(`task stayed ${now}, expected ${state}: ${err.message}\n${stackOutput()}`);
  }
}

describe('task console in Chromium', () => {
  before(async () => {
    requireExecutable(CHROMIUM, 'Install it with `apt-get update && apt-get install -y chromium` (or set CHROMIUM_PATH).');
    if (!fs.existsSync(path.join(CLIENT_DIST, 'index.html'))) {
      throw new PrerequisiteError(`${CLIENT_DIST}/index.html is missing: run \`npm ci && npm run build\` in examples/react-client first.`);
    }
    [redis, mongo] = await Promise.all([startRedis(), startMongo()]);
    const env = { CELERY_BROKER_URL: redis.url(0), CELERY_RESULT_BACKEND: redis.url(1), MONGO_URL: mongo.url() };
    const expressPort = await freePort();
    beatDir = tempDir('beat');
    [worker, pushserver] = await Promise.all([
      // The webhook demo posts to Express on loopback, which the task refuses unless allowed.
      // Beat runs inside the worker (-B), with the nightly report every few seconds.
      startWorker({
        env: { ...env, WEBHOOK_ALLOWED_NETWORKS: '127.0.0.1/32', NIGHTLY_REPORT_EVERY: '4' },
        extraArgs: ['-B', '-s', path.join(beatDir, 'beat-schedule')],
      }),
      startPushserver({ env: { ...env, PUSHSERVER_TOKEN_LEEWAY: '0' }, secret: SECRET, cors: [`http://127.0.0.1:${expressPort}`] }),
    ]);
    express = await startExpress({
      port: expressPort,
      env: {
        ...env, PUSHSERVER_SECRET: SECRET, PUSHSERVER_PUBLIC_URL: pushserver.url, STATIC_DIR: CLIENT_DIST,
        TOKEN_TTL_SECONDS: String(TOKEN_TTL_SECONDS),
      },
    });

    userDataDir = tempDir('chromium-profile');
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1360, height: 1000 },
    });
    page = context.pages()[0] ?? await context.newPage();
    page.on('websocket', (ws) => {
      const entry = { url: ws.url(), closed: false };
      websockets.push(entry);
      ws.on('close', () => { entry.closed = true; });
      ws.on('framereceived', ({ payload }) => {
        // Socket.IO event frames: 42["pushserver:error",{...}]
        const text = String(payload);
        if (!text.startsWith('42["pushserver:error"')) return;
        try { serverErrors.push(JSON.parse(text.slice(2))[1]); } catch { /* not JSON */ }
      });
    });
    page.on('response', (res) => {
      const match = /\/api\/tasks\/([^/]+)\/token$/.exec(new URL(res.url()).pathname);
      if (match) tokenRequests.push({ taskId: decodeURIComponent(match[1]), status: res.status() });
    });
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await page.goto(express.url);
    // No session yet: the page asks to sign in. Create the account from the form.
    await page.getByTestId('sign-in').waitFor({ timeout: 20_000 });
    await page.getByLabel('Username').fill(USER.username);
    await page.getByLabel('Password').fill(USER.password);
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByTestId('signed-in-as').waitFor({ timeout: 10_000 });
    assert.equal(await page.getByTestId('signed-in-as').textContent(), USER.username);
    await page.locator('[data-testid="connection"][data-status="connected"]').waitFor({ timeout: 20_000 });
    // Set once: a reload would wipe it, so it proves the page was never reloaded.
    await page.evaluate(() => { window.__loadedOnce = true; });
  });

  after(async () => {
    await context?.close().catch(() => {});
    if (userDataDir) removeDir(userDataDir);
    await express?.stop();
    await pushserver?.stop();
    await worker?.stop();
    await mongo?.stop();
    await redis?.stop();
    if (beatDir) removeDir(beatDir);
  });

  test('registering dispatched the welcome email: it is listed from MongoDB and finishes', async () => {
    const card = newestCard('welcome-email');
    await card.waitFor({ timeout: 10_000 });
    await waitForState(card, 'SUCCESS');
    assert.match(await card.getByTestId('result').textContent(), new RegExp(`Welcome email for ${USER.username}`));
  });

  test('resize image: the progress bar advances and the task ends in SUCCESS', async () => {
    await page.getByTestId('steps-delay').fill('0.7');
    const { card } = await startFromPage('resize-image', 'Resize image');
    const seen = new Set();
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const [state, value, message] = await Promise.all([
        card.getAttribute('data-state'),
        card.getByRole('progressbar').getAttribute('aria-valuenow'),
        card.getByTestId('progress-message').textContent(),
      ]);
      if (value !== null && state === 'PROGRESS') {
        if (seen.size === 1) {
          fs.mkdirSync(OUTPUT_DIR, { recursive: true });
          await card.screenshot({ path: path.join(OUTPUT_DIR, 'task-in-progress.png') });
        }
        seen.add(`${value}% ${message}`);
      }
      if (state === 'SUCCESS') break;
      await sleep(100);
    }
    await waitForState(card, 'SUCCESS', 1000);
    const percents = [...seen].map((s) => Number.parseFloat(s));
    assert.ok(percents.length >= 3, `saw progress ${JSON.stringify([...seen])}`);
    assert.deepEqual(percents, [...percents].sort((a, b) => a - b), 'progress only moves forward');
    assert.ok(percents.some((p) => p > 0 && p < 100), `an intermediate value: ${JSON.stringify([...seen])}`);
    assert.equal(await card.getByTestId('progress-percent').textContent(), '100%');
    assert.match(await card.getByTestId('result').textContent(), /Image resized to 640 × 400 px/);
    assert.equal(await card.getByTestId('state-badge').textContent(), 'Succeeded');
  });

  test('offline mid-task and back online: the page still ends in SUCCESS without a reload', async () => {
    await page.getByTestId('steps-delay').fill('0.8');
    const { card } = await startFromPage('resize-image', 'Resize image');
    await waitForState(card, 'PROGRESS', 20_000);
    const socketsBefore = websockets.length;

    await context.setOffline(true);
    await page.locator('[data-testid="connection"][data-status="offline"]').waitFor({ timeout: 5000 });
    // Stay away long enough for the task to finish on the worker (5 steps × 0.8 s).
    await sleep(5000);
    const stateWhileOffline = await card.getAttribute('data-state');
    await context.setOffline(false);

    await page.locator('[data-testid="connection"][data-status="connected"]').waitFor({ timeout: 20_000 });
    await waitForState(card, 'SUCCESS', 20_000);
    assert.equal(await page.evaluate(() => window.__loadedOnce), true, 'the page was not reloaded');
    assert.ok(websockets.length > socketsBefore, 'the socket reconnected with a new WebSocket');
    assert.notEqual(stateWhileOffline, 'SUCCESS', 'no update reached the page while it was offline');
    assert.match(await card.getByTestId('result').textContent(), /Image resized/);
  });

  test('a token that expires mid-task is refreshed, and the page still sees every step and SUCCESS', async () => {
    // 6 steps of 1.2 s: the 4-second token expires around the middle.
    await page.getByTestId('steps-delay').fill('1.2');
    const started = Date.now();
    const { card, id } = await startFromPage('resize-image', 'Resize image');
    const percents = [];
    while (Date.now() - started < 40_000) {
      const [state, value] = await Promise.all([
        card.getAttribute('data-state'),
        card.getByRole('progressbar').getAttribute('aria-valuenow').catch(() => null),
      ]);
      if (state === 'PROGRESS' && value !== null && percents.at(-1) !== Number(value)) percents.push(Number(value));
      if (state === 'SUCCESS') break;
      await sleep(100);
    }
    await waitForState(card, 'SUCCESS', 1000);
    const expired = serverErrors.filter((e) => e?.code === 'token_expired' && e.task_ids?.includes(id));
    assert.ok(expired.length >= 1, `the pushserver said token_expired for ${id}: ${JSON.stringify(serverErrors)}`);
    const refreshed = tokenRequests.filter((r) => r.taskId === id);
    assert.ok(refreshed.length >= 1 && refreshed.every((r) => r.status === 200), `fresh tokens fetched: ${JSON.stringify(refreshed)}`);
    assert.ok(Date.now() - started > TOKEN_TTL_SECONDS * 1000, 'the task outlived its first token');
    assert.deepEqual(percents, [...percents].sort((a, b) => a - b), 'progress only moves forward');
    assert.ok(percents.length >= 3, `saw progress ${JSON.stringify(percents)}`);
    assert.match(await card.getByTestId('result').textContent(), /Image resized to 640 × 400 px/);
    assert.equal(await card.locator('.task-card__warning').count(), 0, 'no "live updates stopped" warning');
  });

  test('another user gets no token for my task (404), and my page is not affected', async () => {
    const [mine] = await page.locator('[data-testid="task-card"]').evaluateAll((cards) => cards.map((c) => c.dataset.taskId));
    // A second, independent session through Node's fetch: register, then ask for my task's token.
    const register = await fetch(`${express.url}/api/register`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: `${USER.username}-b`, password: USER.password }),
    });
    assert.equal(register.status, 201);
    const cookie = register.headers.get('set-cookie').split(';')[0];
    const res = await fetch(`${express.url}/api/tasks/${mine}/token`, { headers: { cookie } });
    assert.equal(res.status, 404);
    assert.equal((await res.json()).error.code, 'not_found');
  });

  test('a failing task shows its error', async () => {
    await page.getByLabel('Error message').fill('Disk quota exceeded on /media');
    const { card } = await startFromPage('fail', 'Run failing task');
    await waitForState(card, 'FAILURE');
    const error = await card.getByTestId('error').textContent();
    assert.match(error, /RuntimeError/);
    assert.match(error, /Disk quota exceeded on \/media/);
    assert.equal(await card.getByTestId('state-badge').textContent(), 'Failed');
  });

  test('the other use cases complete from their buttons', async () => {
    const started = [];
    for (const [kind, button] of [['welcome-email', 'Send welcome email'], ['predict', 'Classify'], ['webhooks', 'Fan out webhooks']]) {
      started.push({ kind, ...(await startFromPage(kind, button)) });
    }
    for (const { card } of started) await waitForState(card, 'SUCCESS', 60_000);
    assert.match(await newestCard('predict').getByTestId('result').textContent(), /Iris setosa/);
    assert.match(await newestCard('webhooks').getByTestId('result').textContent(), /Dispatched 2 webhook deliveries/);
    // The fan-out card follows the dispatching task and its 2 deliveries as one workflow: one bar, a dot each.
    const fanout = newestCard('webhooks').getByTestId('fanout');
    await fanout.and(page.locator('[data-state="SUCCESS"]')).waitFor({ timeout: 30_000 });
    assert.equal(await fanout.getByTestId('fanout-caption').textContent(), '3 of 3 tasks finished');
    assert.equal(await fanout.getByTestId('fanout-progress').getAttribute('aria-valuenow'), '100');
    assert.deepEqual(await fanout.locator('.fanout__dot').evaluateAll((dots) => dots.map((d) => d.dataset.state)),
      ['SUCCESS', 'SUCCESS', 'SUCCESS']);
    assert.match(await newestCard('welcome-email').getByTestId('result').textContent(), new RegExp(`Welcome email for ${USER.username}`));
  });

  test('an uploaded image travels base64 to the worker', async () => {
    // A 1×1 PNG: the worker scales it up to the requested width.
    const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64');
    await page.getByTestId('image-input').setInputFiles({ name: 'dot.png', mimeType: 'image/png', buffer: png });
    await page.getByTestId('steps-delay').fill('0');
    await page.getByLabel('Width (px)').fill('320');
    const { card } = await startFromPage('resize-image', 'Resize image');
    await waitForState(card, 'SUCCESS');
    assert.match(await card.getByTestId('result').textContent(), /Image resized to 320 × 320 px/);
  });

  test('after a reload the list comes back and each task catches up from its snapshot', async () => {
    const before = await page.locator('[data-testid="task-card"]').evaluateAll(
      (cards) => cards.map((c) => [c.dataset.taskId, c.dataset.state]),
    );
    await page.reload();
    await page.locator('[data-testid="connection"][data-status="connected"]').waitFor({ timeout: 20_000 });
    await page.waitForFunction(
      (expected) => {
        const cards = [...document.querySelectorAll('[data-testid="task-card"]')];
        return cards.length === expected.length
          && cards.every((c, i) => c.dataset.taskId === expected[i][0] && c.dataset.state === expected[i][1]);
      },
      before, { timeout: 20_000 },
    );
  });

  test('dispatch, reload mid-task: the task comes back from MongoDB and the page still sees it finish', async () => {
    await page.getByTestId('steps-delay').fill('1');
    const { card, id } = await startFromPage('resize-image', 'Resize image');
    await waitForState(card, 'PROGRESS', 20_000);
    const tokensBefore = tokenRequests.filter((r) => r.taskId === id).length;
    await page.evaluate(() => { window.__beforeReload = true; });
    await page.reload();
    assert.equal(await page.evaluate(() => window.__beforeReload), undefined, 'the page really was reloaded');
    const reloaded = page.locator(`[data-testid="task-card"][data-task-id="${id}"]`);
    await reloaded.waitFor({ timeout: 20_000 });
    assert.notEqual(await reloaded.getAttribute('data-state'), 'SUCCESS', 'still running when the page came back');
    await waitForState(reloaded, 'SUCCESS', 30_000);
    assert.match(await reloaded.getByTestId('result').textContent(), /Image resized to 640 × 400 px/);
    // The reloaded page held no token for it: Express minted one, after checking ownership in MongoDB.
    const after = tokenRequests.filter((r) => r.taskId === id).slice(tokensBefore);
    assert.ok(after.length >= 1 && after.every((r) => r.status === 200), `tokens after the reload: ${JSON.stringify(after)}`);
  });

  test("the nightly report (Celery Beat, aggregated in MongoDB) shows the day's tasks", async () => {
    const report = page.getByTestId('nightly-report');
    const deadline = Date.now() + 30_000;
    let rows = [];
    while (Date.now() < deadline) {
      await report.getByRole('button', { name: 'Refresh' }).click();
      await sleep(500);
      rows = await report.locator('tbody tr').evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
      // Four resizes succeeded before this test (more may still be counted by a later report).
      if (rows.some(([task, state, count]) => task === 'resize_and_watermark' && state === 'SUCCESS' && Number(count) >= 4)) break;
      await sleep(1000);
    }
    const resized = rows.find(([task, state]) => task === 'resize_and_watermark' && state === 'SUCCESS');
    assert.ok(resized, `a resize_and_watermark SUCCESS row in ${JSON.stringify(rows)}`);
    assert.ok(Number(resized[2]) >= 4, `the resizes this suite ran are counted: ${resized}`);
    assert.ok(rows.some(([task, state]) => task === 'fail' && state === 'FAILURE'), JSON.stringify(rows));
    assert.match(await report.getByTestId('report-summary').textContent(), /tasks in the day before .*; 0 old records archived/);
  });

  test('sign out, then sign in again: the session API works from the form and the list is still there', async () => {
    const count = await page.locator('[data-testid="task-card"]').count();
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByTestId('sign-in').waitFor({ timeout: 10_000 });
    const me = await page.evaluate(async () => (await fetch('/api/me')).status);
    assert.equal(me, 401, 'the session cookie is gone');
    await page.getByLabel('Username').fill(USER.username);
    await page.getByLabel('Password').fill('not-the-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: /wrong username or password/ }).waitFor({ timeout: 10_000 });
    await page.getByLabel('Password').fill(USER.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByTestId('signed-in-as').waitFor({ timeout: 10_000 });
    // The list comes from Express (MongoDB) once signed in.
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid="task-card"]').length === n, count, { timeout: 10_000 });
    await page.locator('[data-testid="connection"][data-status="connected"]').waitFor({ timeout: 20_000 });
  });

  test('a screenshot of the finished page is saved', async () => {
    fs.mkdirSync(OUTPUT_DIR, { recursive: true });
    const file = path.join(OUTPUT_DIR, 'task-console.png');
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: file, fullPage: true, animations: 'disabled' });
    assert.ok(fs.statSync(file).size > 10_000);
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  });
});
