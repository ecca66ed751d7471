// Starting and stopping the real processes the Node suites test against:
// a private redis-server, nx-27017 (MongoDB's wire protocol) and a Celery
// worker from the repo's venv, the pushserver and the Express app. Node built-ins only, so every example package can import it.
//
// Every process is started here, tracked by PID, and stopped by PID; nothing
// is ever killed by name. A missing prerequisite is an error with a message
// saying what to install, never a silent skip.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The repository root (examples/test-support → ../..). */
export const REPO_ROOT = path.resolve(here, '..', '..');
export const VENV_BIN = path.join(REPO_ROOT, '.venv', 'bin');

const started = new Set();

// If the test runner dies or is interrupted, take our processes with it.
process.once('exit', () => {
  for (const proc of started) {
    try { process.kill(proc.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
});

export class PrerequisiteError extends Error {}

/** Throw a PrerequisiteError unless `file` exists and is executable. */
export function requireExecutable(file, hint) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
  } catch {
    throw new PrerequisiteError(`${file} is missing or not executable. ${hint}`);
  }
  return file;
}

/** Find `name` on PATH (or throw with `hint`). */
export function which(name, hint) {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch { /* keep looking */ }
  }
  throw new PrerequisiteError(`${name} not found on PATH. ${hint}`);
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A fresh temporary directory (removed by `removeDir`). */
export function tempDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
}

export function removeDir(dir) {
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Resolve once `check()` returns a truthy value; throw `message` after `timeoutMs`. */
export async function waitFor(check, { timeoutMs = 30_000, intervalMs = 100, message = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${message}${lastError ? ` (last error: ${lastError.message})` : ''}`);
}

/**
 * A child process with its output kept (for assertions and failure reports)
 * and a `stop()` that ends it by PID: SIGTERM, then SIGKILL after `graceMs`.
 */
export class ManagedProcess {
  constructor(name, command, args, { cwd = REPO_ROOT, env = process.env, graceMs = 10_000, echo = false } = {}) {
    this.name = name;
    this.graceMs = graceMs;
    this.output = '';
    this.proc = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.pid = this.proc.pid;
    started.add(this.proc);
    this.exited = new Promise((resolve) => {
      this.proc.once('exit', (code, signal) => {
        started.delete(this.proc);
        this.exitCode = code;
        this.exitSignal = signal;
        resolve({ code, signal });
      });
    });
    this.proc.once('error', (err) => { this.output += `\n[spawn error] ${err.message}\n`; });
    const collect = (chunk) => {
      const text = chunk.toString();
      this.output += text;
      if (this.output.length > 2_000_000) this.output = this.output.slice(-1_000_000);
      if (echo) process.stderr.write(text.replace(/^/gm, `[${name}] `));
    };
    this.proc.stdout.on('data', collect);
    this.proc.stderr.on('data', collect);
  }

  get running() {
    return this.exitCode === undefined && this.exitSignal === undefined;
  }

  /** Resolve when the output matches `pattern`; fail early if the process exits. */
  async waitForOutput(pattern, timeoutMs = 60_000) {
    await waitFor(() => {
      if (!this.running) throw new Error(`${this.name} exited (${this.exitCode ?? this.exitSignal})`);
      return pattern.test(this.output);
    }, { timeoutMs, message: `${this.name} to print ${pattern}` }).catch((err) => {
      throw new Error(`${err.message}\n--- ${this.name} output ---\n${this.tail()}`);
    });
  }

  tail(chars = 4000) {
    return this.output.slice(-chars);
  }

  async stop(signal = 'SIGTERM') {
    if (!this.running) return this.exited;
    try { process.kill(this.pid, signal); } catch { /* gone */ }
    const timer = setTimeout(() => {
      try { process.kill(this.pid, 'SIGKILL'); } catch { /* gone */ }
    }, this.graceMs);
    const result = await this.exited;
    clearTimeout(timer);
    return result;
  }
}

function ping(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    socket.setTimeout(1000);
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (data) => {
      answer += data;
      if (answer.includes('\r\n')) { socket.destroy(); resolve(answer.startsWith('+PONG')); }
    });
    socket.on('error', () => resolve(false));
    socket.on('timeout', () => { socket.destroy(); resolve(false); });
  });
}

/** Start a throwaway redis-server on `port` (a free one by default), without persistence. */
export async function startRedis({ port } = {}) {
  const bin = which('redis-server', 'Install it with `apt-get install -y redis-server`.');
  const redisPort = port ?? await freePort();
  const dir = tempDir('redis');
  const proc = new ManagedProcess('redis', bin, [
    '--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
  ], { graceMs: 5000 });
  await waitFor(async () => {
    if (!proc.running) throw new Error(`redis-server exited: ${proc.tail()}`);
    return ping(redisPort);
  }, { timeoutMs: 15_000, message: `redis-server on port ${redisPort}` });
  return {
    port: redisPort,
    proc,
    url: (db = 0) => `redis://127.0.0.1:${redisPort}/${db}`,
    async stop() {
      await proc.stop();
      removeDir(dir);
    },
  };
}

function accepts(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setTimeout(1000);
    socket.on('connect', () => { socket.destroy(); resolve(true); });
    socket.on('error', () => resolve(false));
    socket.on('timeout', () => { socket.destroy(); resolve(false); });
  });
}

/**
 * Start nx-27017 from the venv (a MongoDB wire-protocol server over SQLite,
 * in memory) on `port` (a free one by default). `url(db)` is a connection
 * string for database `db`.
 */
export async function startMongo({ port, name = 'nx-27017' } = {}) {
  const bin = requireExecutable(path.join(VENV_BIN, 'nx-27017'),
    'Install it into the venv: `.venv/bin/pip install -e ".[workers,dev]"` in the repo root (the dev extra has nx-27017).');
  const mongoPort = port ?? await freePort();
  const dir = tempDir('mongo');
  const proc = new ManagedProcess(name, bin, [
    '--db', 'memory', '-p', String(mongoPort), '--host', '127.0.0.1',
    '--pid-file', path.join(dir, 'nx.pid'), '--log-file', path.join(dir, 'nx.log'),
  ], { graceMs: 5000 });
  await waitFor(async () => {
    if (!proc.running) throw new Error(`nx-27017 exited: ${proc.tail()}`);
    return accepts(mongoPort);
  }, { timeoutMs: 20_000, message: `nx-27017 on port ${mongoPort}` });
  return {
    port: mongoPort,
    proc,
    url: (db = '') => `mongodb://127.0.0.1:${mongoPort}/${db}`,
    async stop() {
      await proc.stop();
      removeDir(dir);
    },
  };
}

/**
 * Start `celery -A workers worker -E -P threads` from the venv, consuming `queue`.
 * `env` must carry CELERY_BROKER_URL / CELERY_RESULT_BACKEND.
 */
export async function startWorker({ env, queue = 'celery', concurrency = 2, extraArgs = [], pythonPath = [], name = 'worker' }) {
  const celery = requireExecutable(path.join(VENV_BIN, 'celery'),
    'Create the venv first: `python3 -m venv .venv && .venv/bin/pip install -e ".[workers,dev]"` in the repo root.');
  const workDir = tempDir('worker');
  const proc = new ManagedProcess(name, celery, [
    '-A', 'workers', 'worker', '-E', '-P', 'threads', '-c', String(concurrency), '-Q', queue,
    '--hostname', `${name}-${process.pid}@%h`, '--without-mingle', '--without-gossip', '-l', 'info', ...extraArgs,
  ], {
    env: {
      ...process.env,
      PYTHONUNBUFFERED: '1',
      PYTHONPATH: [REPO_ROOT, ...pythonPath].join(path.delimiter),
      // Task outputs go to a temp dir, never into the work tree.
      MEDIA_DIR: path.join(workDir, 'media'),
      OUTBOX_DIR: path.join(workDir, 'outbox'),
      ...env,
    },
    graceMs: 10_000,
  });
  await proc.waitForOutput(/ ready\.\s*$/m, 90_000);
  return {
    proc,
    workDir,
    async stop() {
      await proc.stop();
      removeDir(workDir);
    },
  };
}

/** GET `url` and return the status code (0 when nothing answers). */
export async function httpStatus(url, timeoutMs = 2000) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

/** Start the Express dispatch app (examples/express-dispatch/src/server.js) on a free port. */
export async function startExpress({ env, port, name = 'express' }) {
  const appPort = port ?? await freePort();
  const server = path.join(REPO_ROOT, 'examples', 'express-dispatch', 'src', 'server.js');
  const proc = new ManagedProcess(name, process.execPath, [server], {
    cwd: path.dirname(path.dirname(server)),
    env: { ...process.env, HOST: '127.0.0.1', PORT: String(appPort), ...env },
    graceMs: 5000,
  });
  const url = `http://127.0.0.1:${appPort}`;
  await waitFor(async () => {
    if (!proc.running) throw new Error(`express exited: ${proc.tail()}`);
    return (await httpStatus(`${url}/healthz`)) === 200;
  }, { timeoutMs: 20_000, message: `express on ${url}` }).catch((err) => {
    throw new Error(`${err.message}\n--- express output ---\n${proc.tail()}`);
  });
  return { port: appPort, url, proc, stop: () => proc.stop() };
}

/** Start `pushserver serve` from the venv and wait until GET /readyz answers 200. */
export async function startPushserver({ env, secret, cors = [], port, name = 'pushserver' }) {
  const bin = requireExecutable(path.join(VENV_BIN, 'pushserver'),
    'Install the package into the venv: `.venv/bin/pip install -e ".[workers,dev]"` in the repo root.');
  const serverPort = port ?? await freePort();
  const args = ['serve', '--host', '127.0.0.1', '--port', String(serverPort), '--secret', secret];
  if (cors.length) args.push('--cors', cors.join(','));
  const proc = new ManagedProcess(name, bin, args, {
    env: { ...process.env, PYTHONUNBUFFERED: '1', ...env },
    graceMs: 10_000,
  });
  const url = `http://127.0.0.1:${serverPort}`;
  await waitFor(async () => {
    if (!proc.running) throw new Error(`pushserver exited (${proc.exitCode ?? proc.exitSignal})`);
    return (await httpStatus(`${url}/readyz`)) === 200;
  }, { timeoutMs: 60_000, message: `pushserver ${url}/readyz to answer 200` }).catch((err) => {
    throw new Error(`${err.message}\n--- pushserver output ---\n${proc.tail()}`);
  });
  return { port: serverPort, url, proc, stop: () => proc.stop() };
}
