// @celery-pushserver/client against a real `pushserver serve`, a real Celery
// worker and a private Redis, over real Socket.IO.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTaskClient, ForbiddenError, PRECEDENCE, UnauthorizedError } from '../../src/index.js';
import type { ConnectionStatus, TaskClient, TaskState, WorkflowState } from '../../src/index.js';
import { dispatch, dispatchGroup, dispatchMany, mintToken, SECRET, startPushserver, startRedis, startWorker, waitFor } from './stack.js';

let redis: any;
let worker: any;
let pushserver: any;
let env: Record<string, string>;
const clients: TaskClient[] = [];

function client(options: Parameters<typeof createTaskClient>[0] = {}): TaskClient {
  const c = createTaskClient({ url: pushserver.url, ...options });
  clients.push(c);
  return c;
}

const serverEnv = () => ({ ...env, PUSHSERVER_TOKEN_LEEWAY: '0' });

function rank(task: TaskState): number {
  return (PRECEDENCE as Record<string, number>)[task.state] ?? -1;
}

beforeAll(async () => {
  redis = await startRedis();
  env = { CELERY_BROKER_URL: redis.url(0), CELERY_RESULT_BACKEND: redis.url(1) };
  [worker, pushserver] = await Promise.all([
    startWorker({ env }),
    startPushserver({ env: serverEnv(), secret: SECRET }),
  ]);
});

afterAll(async () => {
  for (const c of clients) c.close();
  await pushserver?.stop();
  await worker?.stop();
  await redis?.stop();
});

describe('against a real pushserver', () => {
  it('watchWorkflow: a saved group is followed to SUCCESS, its finished count never going back', async () => {
    const c = client();
    const { id, members } = await dispatchGroup(env, 'workers.tasks.demo_progress', [2, 0.2], 6);
    const seen: WorkflowState[] = [];
    await new Promise<void>((resolve) => {
      c.watchWorkflow(id, (w) => {
        seen.push(w);
        if (w.state === 'SUCCESS') resolve();
      }, { token: mintToken([id]) });
    });
    expect(seen.at(-1)).toMatchObject({ workflow_id: id, kind: 'group', total: 6, completed: 6, percent: 100, task_ids: members });
    const finished = seen.map((w) => w.completed + w.failed);
    expect(finished).toEqual([...finished].sort((a, b) => a - b));
    // The same token grants the members while the workflow is watched.
    expect((await c.wait(members[0]!, { token: mintToken([id]), timeout: 10_000 })).state).toBe('SUCCESS');
  });

  it('watch: the listener sees progress in order, then SUCCESS, never a step back', async () => {
    const c = client();
    const id = await dispatch(env, 'workers.tasks.demo_progress', [4, 0.3]);
    const seen: TaskState[] = [];
    const done = new Promise<void>((resolve) => {
      c.watch(id, (task) => {
        seen.push(task);
        if (task.state === 'SUCCESS') resolve();
      }, { token: mintToken([id]) });
    });
    await done;
    const ranks = seen.map(rank);
    expect(ranks).toEqual([...ranks].sort((a, b) => a - b));
    expect(seen.some((t) => t.state === 'PROGRESS')).toBe(true);
    const percents = seen.filter((t) => t.state === 'PROGRESS').map((t) => t.progress?.percent ?? 0);
    expect(percents).toEqual([...percents].sort((a, b) => a - b));
    expect(seen.at(-1)).toMatchObject({ task_id: id, state: 'SUCCESS', result: 4, result_format: 'json' });
  });

  it('wait: resolves with SUCCESS; and at once for a task that already finished', async () => {
    const c = client({ getToken: (taskId) => mintToken([taskId]) });
    const id = await dispatch(env, 'workers.tasks.demo_progress', [2, 0.1]);
    const task = await c.wait(id, { timeout: 30_000 });
    expect(task).toMatchObject({ task_id: id, state: 'SUCCESS' });
    // A second client, after the fact: the subscribe snapshot is already final.
    const late = client();
    const started = Date.now();
    const again = await late.wait(id, { token: mintToken([id]), timeout: 10_000 });
    expect(again.state).toBe('SUCCESS');
    expect(Date.now() - started).toBeLessThan(5000);
    // And the first client answers from what it holds, without asking the server.
    const held = await c.wait(id);
    expect(held).toBe(task);
  });

  it('wait: rejects with ForbiddenError for a token naming another task, UnauthorizedError for a bad one', async () => {
    const c = client();
    const id = await dispatch(env, 'workers.tasks.demo_progress', [1, 0.1]);
    await expect(c.wait(id, { token: mintToken(['some-other-task']), timeout: 10_000 })).rejects.toBeInstanceOf(ForbiddenError);
    const wrongSecret = mintToken([id], { secret: 'x'.repeat(64) });
    const refreshing = client({ getToken: () => wrongSecret });
    const err = await refreshing.wait(id, { token: mintToken([id], { ttlSeconds: -60 }), timeout: 10_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnauthorizedError);
    expect((err as UnauthorizedError).message).toMatch(/signature/);
  });

  it('getToken: an expired token is refreshed on `unauthorized` and the task is followed to SUCCESS', async () => {
    const asked: string[] = [];
    const c = client({ getToken: async (taskId) => { asked.push(taskId); return mintToken([taskId]); } });
    const id = await dispatch(env, 'workers.tasks.demo_progress', [2, 0.2]);
    const task = await c.wait(id, { token: mintToken([id], { ttlSeconds: -60 }), timeout: 30_000 });
    expect(task.state).toBe('SUCCESS');
    expect(asked).toEqual([id]);
  });

  it('token_expired mid-task: getToken gives a new token, the client re-subscribes and still sees SUCCESS', async () => {
    const asked: number[] = [];
    const c = client({ getToken: (taskId) => { asked.push(Date.now()); return mintToken([taskId], { ttlSeconds: 60 }); } });
    const id = await dispatch(env, 'workers.tasks.demo_progress', [8, 0.5]);
    const states: string[] = [];
    const start = Date.now();
    const done = c.wait(id, { token: mintToken([id], { ttlSeconds: 2 }), timeout: 60_000 });
    c.watch(id, (t) => states.push(t.state));
    const task = await done;
    expect(task.state).toBe('SUCCESS');
    expect(asked).toHaveLength(1); // once, when the 2-second token expired
    expect(asked[0]! - start).toBeGreaterThan(1000);
    expect(c.record(id).error).toBeNull();
    expect(states.at(-1)).toBe('SUCCESS');
  });

  it('reconnect: after the pushserver restarts mid-task, every watched task is re-subscribed and ends in SUCCESS', async () => {
    const statuses: ConnectionStatus[] = [];
    const c = client({ getToken: (taskId) => mintToken([taskId]) });
    c.onConnection((info) => { if (statuses.at(-1) !== info.status) statuses.push(info.status); });
    const ids = await Promise.all([
      dispatch(env, 'workers.tasks.demo_progress', [10, 0.5]),
      dispatch(env, 'workers.tasks.demo_progress', [10, 0.5]),
    ]);
    const progressed = ids.map((id) => new Promise<void>((resolve) => {
      c.watch(id, (t) => { if (t.state === 'PROGRESS') resolve(); });
    }));
    await Promise.all(progressed);
    const firstSid = c.socket.id;
    const { port } = pushserver;
    await pushserver.stop();
    await waitFor(() => c.connection.status === 'connecting', { timeoutMs: 10_000, message: 'the client to notice' });
    pushserver = await startPushserver({ env: serverEnv(), secret: SECRET, port });
    const results = await Promise.all(ids.map((id) => c.wait(id, { timeout: 60_000 })));
    expect(results.map((t) => t.state)).toEqual(['SUCCESS', 'SUCCESS']);
    expect(c.socket.id).not.toBe(firstSid);
    expect(statuses).toEqual(['connected', 'connecting', 'connected']);
  });

  it('more tasks than the server subscribe burst: the refused ones are asked again and every wait resolves', async () => {
    const c = client();
    const ids = await dispatchMany(env, 'workers.tasks.sleep', [0.01], 150);
    let refused = 0;
    const results = await Promise.all(ids.map((id) => {
      c.watch(id, undefined, { token: mintToken([id]), onError: (p) => { if (p.code === 'too_many') refused += 1; } });
      return c.wait(id, { timeout: 60_000 });
    }));
    expect(results.every((t) => t.state === 'SUCCESS')).toBe(true);
    expect(refused).toBeGreaterThan(0); // the burst was really exceeded
  });
});
