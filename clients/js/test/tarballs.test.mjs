// The three packages as a user gets them: `npm pack` each one, install the tarballs (plus the
// socket.io-client peer) into a fresh folder, and from a plain ESM script in that folder dispatch a
// task with each Node Celery client and `await client.wait(taskId)` its SUCCESS, against a real
// Redis, a real Celery worker and a real `pushserver serve`.
//
// The script imports only the installed packages' public API; nothing resolves into this repo.
// Nothing is skipped: without redis-server or the repo's venv the suite fails saying what to install.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import {
  removeDir, startPushserver, startRedis, startWorker, tempDir,
} from '../../../examples/test-support/stack.js';

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const WORKSPACE = path.resolve(here, '..');
const PACKAGES = ['client', 'react', 'node'];
const CLIENTS = ['celery-ts', 'celery-node'];
const SECRET = randomBytes(32).toString('hex');
const npmEnv = { ...process.env, npm_config_fund: 'false', npm_config_audit: 'false', npm_config_update_notifier: 'false' };

// What a user's Express-side script looks like: dispatch, mint a token, wait for the end.
const APP = `
import { createDispatcher, mintToken } from '@celery-pushserver/node';
import { createTaskClient } from '@celery-pushserver/client';

const [client, brokerUrl, backendUrl, url] = process.argv.slice(2);
const dispatcher = await createDispatcher({ brokerUrl, backendUrl, client });
let tasks;
try {
  await dispatcher.ready();
  const { taskId } = await dispatcher.dispatch('workers.tasks.demo_progress', [3, 0.05]);
  const token = mintToken({ secret: process.env.PUSHSERVER_SECRET, tasks: [taskId], sub: 'tarball-user' });
  tasks = createTaskClient({ url, token });
  const final = await tasks.wait(taskId, { timeout: 30_000 });
  console.log(JSON.stringify({ taskId, final }));
} finally {
  tasks?.close();
  await dispatcher.close();
}
`;

let packDir; let project; let redis; let worker; let pushserver;
const packed = {};

describe('the npm tarballs, installed into a fresh folder', () => {
  before(async () => {
    packDir = tempDir('celery-pushserver-packs');
    project = tempDir('celery-pushserver-user');
    // Pack the packages one after the other (each prepack builds with tsc), while the stack starts.
    const packing = (async () => {
      for (const pkg of PACKAGES) {
        const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', packDir],
          { cwd: path.join(WORKSPACE, pkg), env: npmEnv, maxBuffer: 16 << 20 });
        const [info] = JSON.parse(stdout);
        packed[pkg] = { ...info, tarball: path.join(packDir, info.filename) };
      }
      fs.writeFileSync(path.join(project, 'package.json'),
        JSON.stringify({ name: 'tarball-user', private: true, type: 'module' }, null, 2));
      fs.writeFileSync(path.join(project, 'app.mjs'), APP);
      // One install for both Node clients; peers come from the registry (npm's cache when warm).
      await run('npm', ['install', '--prefer-offline', '--no-progress',
        ...PACKAGES.map((pkg) => packed[pkg].tarball), 'socket.io-client@^4.7.0'],
      { cwd: project, env: npmEnv, maxBuffer: 16 << 20, timeout: 240_000 });
    })();
    redis = await startRedis();
    const env = { CELERY_BROKER_URL: redis.url(0), CELERY_RESULT_BACKEND: redis.url(1) };
    [worker, pushserver] = await Promise.all([
      startWorker({ env, name: 'tarballs-worker' }),
      startPushserver({ env, secret: SECRET }),
      packing,
    ]);
  });

  after(async () => {
    await pushserver?.stop();
    await worker?.stop();
    await redis?.stop();
    if (packDir) removeDir(packDir);
    if (project) removeDir(project);
  });

  test('each tarball ships its JavaScript and its .d.ts, and installs with them', () => {
    for (const pkg of PACKAGES) {
      const { name, files } = packed[pkg];
      const paths = files.map((f) => f.path);
      assert.ok(paths.includes('dist/index.js'), `${name}: ${paths.join(', ')}`);
      assert.ok(paths.includes('dist/index.d.ts'), `${name} has no dist/index.d.ts: ${paths.join(', ')}`);
      assert.ok(!paths.some((p) => p.startsWith('src/') || p.startsWith('test/')), `${name} ships sources or tests`);
      const installed = path.join(project, 'node_modules', ...name.split('/'));
      const manifest = JSON.parse(fs.readFileSync(path.join(installed, 'package.json'), 'utf8'));
      assert.ok(fs.existsSync(path.join(installed, manifest.types)), `${name}: types ${manifest.types} not installed`);
    }
  });

  for (const client of CLIENTS) {
    test(`${client}: the fresh folder dispatches demo_progress and awaits its SUCCESS through the pushserver`, async () => {
      const { stdout, stderr } = await run(process.execPath,
        [path.join(project, 'app.mjs'), client, redis.url(0), redis.url(1), pushserver.url],
        { cwd: project, env: { ...process.env, PUSHSERVER_SECRET: SECRET }, timeout: 60_000 })
        .catch((err) => { throw new Error(`app.mjs failed (${err.code ?? err.signal}):\n${err.stdout}\n${err.stderr}`); });
      const line = stdout.trim().split('\n').at(-1);
      const { taskId, final } = JSON.parse(line);
      assert.match(taskId, /^[0-9a-f-]{36}$/, stderr);
      assert.equal(final.task_id, taskId);
      assert.equal(final.state, 'SUCCESS', JSON.stringify(final));
      assert.equal(final.name, 'workers.tasks.demo_progress');
      assert.equal(final.result_format, 'json');
      assert.equal(final.result, 3, 'the JSON value the task returned');
    });
  }
});
