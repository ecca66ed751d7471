// The real parts the integration tests run against: a private Redis, a Celery
// worker and `pushserver serve` from the repo's venv (examples/test-support/stack.js
// starts and stops them by PID), tokens signed like a backend would, and tasks
// dispatched with `celery call`.
import { execFile } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import path from 'node:path';
import { promisify } from 'node:util';
// @ts-expect-error: plain JS helper shared with the examples' Node suites
import * as support from '../../../../../examples/test-support/stack.js';

const run = promisify(execFile);

export const { REPO_ROOT, VENV_BIN, startRedis, startWorker, startPushserver, waitFor, freePort } = support as Record<string, any>;

/** A 32-byte secret, as the pushserver requires. */
export const SECRET = randomBytes(32).toString('hex');

function base64url(value: string | Buffer): string {
  return Buffer.from(value).toString('base64url');
}

/** An HS256 JWT with the claims of docs/protocol.md. */
export function mintToken(tasks: string[], { ttlSeconds = 300, secret = SECRET, sub }: { ttlSeconds?: number; secret?: string; sub?: string } = {}): string {
  const header = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = { tasks, exp: Math.floor(Date.now() / 1000) + ttlSeconds, ...(sub ? { sub } : {}) };
  const body = `${header}.${base64url(JSON.stringify(claims))}`;
  return `${body}.${base64url(createHmac('sha256', secret).update(body).digest())}`;
}

/** Send `task` with `args` through the broker with `celery call`; returns the task id. */
export async function dispatch(env: Record<string, string>, task: string, args: unknown[]): Promise<string> {
  const { stdout } = await run(path.join(VENV_BIN, 'celery'), ['-A', 'workers', 'call', task, '--args', JSON.stringify(args)], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env, PYTHONPATH: REPO_ROOT },
    timeout: 60_000,
  });
  const id = stdout.trim().split('\n').at(-1) ?? '';
  if (!/^[0-9a-f-]{36}$/.test(id)) throw new Error(`celery call printed no task id: ${stdout}`);
  return id;
}

/** Send `count` calls of `task` with `args` in one Python process; returns their task ids. */
export async function dispatchMany(env: Record<string, string>, task: string, args: unknown[], count: number): Promise<string[]> {
  const script = [
    'import json, sys',
    'from workers.app import app',
    'task, args, count = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])',
    'print("\\n".join(app.send_task(task, args=args).id for _ in range(count)))',
  ].join('\n');
  const { stdout } = await run(path.join(VENV_BIN, 'python'), ['-c', script, task, JSON.stringify(args), String(count)], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env, PYTHONPATH: REPO_ROOT },
    timeout: 60_000,
  });
  const ids = stdout.trim().split('\n');
  if (ids.length !== count) throw new Error(`expected ${count} task ids, got: ${stdout}`);
  return ids;
}

/** Start a saved group of `count` calls of `task` with `args` (pushserver.worker.save_workflow); returns its id and members. */
export async function dispatchGroup(env: Record<string, string>, task: string, args: unknown[], count: number): Promise<{ id: string; members: string[] }> {
  const script = [
    'import json, sys',
    'from celery import group',
    'from pushserver.worker import save_workflow',
    'from workers.app import app',
    'task, args, count = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])',
    'result = group(app.signature(task, args=args) for _ in range(count)).apply_async()',
    'print(json.dumps({"id": save_workflow(result), "members": [r.id for r in result.results]}))',
  ].join('\n');
  const { stdout } = await run(path.join(VENV_BIN, 'python'), ['-c', script, task, JSON.stringify(args), String(count)], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env, PYTHONPATH: REPO_ROOT },
    timeout: 60_000,
  });
  return JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}');
}
