import { describe, expect, it } from 'vitest';
import { createTaskClient } from '../../src/client.js';
import type { TaskClientOptions } from '../../src/client.js';
import type { TaskProblem, WorkflowState } from '../../src/types.js';
import { FakeSocket, flush } from './fakeSocket.js';

function setup({ connect = true, ...options }: Partial<TaskClientOptions> & { connect?: boolean } = {}) {
  const socket = new FakeSocket();
  if (connect) socket.connected = true;
  const client = createTaskClient({ socket: socket.asSocket(), ...options });
  return { client, socket };
}

function workflow(id: string, state: WorkflowState['state'], completed: number, total = 3): WorkflowState {
  return {
    workflow_id: id, kind: 'group', state, total, counts: { SUCCESS: completed, PENDING: total - completed },
    completed, failed: 0, percent: (100 * completed) / total, task_ids: Array.from({ length: total }, (_, i) => `t${i}`),
    updated_at: completed,
  };
}

describe('watchWorkflow', () => {
  it('subscribes with workflow_id and the token, then passes the snapshot and every workflow:update', () => {
    const { client, socket } = setup();
    const seen: string[] = [];
    client.watchWorkflow('g1', (w) => seen.push(`${w.state}:${w.completed}`), { token: 'tok' });
    const [sub] = socket.takeEmits('subscribe');
    expect(sub!.payload).toEqual({ workflow_id: 'g1', token: 'tok' });
    sub!.ack({ ok: true, workflows: [workflow('g1', 'STARTED', 1)] });
    socket.fire('workflow:update', workflow('g1', 'STARTED', 2));
    socket.fire('workflow:update', workflow('g1', 'SUCCESS', 3));
    socket.fire('workflow:update', workflow('other', 'SUCCESS', 3)); // not watched: ignored
    expect(seen).toEqual(['STARTED:1', 'STARTED:2', 'SUCCESS:3']);
    expect(client.workflowRecord('g1').workflow?.state).toBe('SUCCESS');
    expect(client.workflowRecord('other').workflow).toBeNull();
    expect(client.watchedWorkflows()).toEqual(['g1']);
  });

  it('subscribes again on every connect and unsubscribes when the last watcher stops', async () => {
    const { client, socket } = setup({ connect: false });
    const stop = client.watchWorkflow('g1', undefined, { token: 'tok' });
    expect(socket.takeEmits('subscribe')).toHaveLength(0);
    socket.serverConnect();
    expect(socket.takeEmits('subscribe').map((e) => e.payload)).toEqual([{ workflow_id: 'g1', token: 'tok' }]);
    socket.serverConnect();
    expect(socket.takeEmits('subscribe')).toHaveLength(1);
    stop();
    await flush();
    expect(socket.takeEmits('unsubscribe').map((e) => e.payload)).toEqual([{ workflow_id: 'g1' }]);
    expect(client.watchedWorkflows()).toEqual([]);
  });

  it('reports a refusal, and asks getToken for the workflow id on unauthorized and token_expired', async () => {
    const asked: string[] = [];
    const { client, socket } = setup({ getToken: (id) => { asked.push(id); return `fresh-${asked.length}`; } });
    const problems: TaskProblem[] = [];
    client.watchWorkflow('g1', undefined, { token: 'old', onError: (p) => problems.push(p) });
    socket.takeEmits('subscribe')[0]!.ack({ ok: false, error: { code: 'unauthorized', message: 'token has expired' } });
    await flush();
    const [again] = socket.takeEmits('subscribe');
    expect(again!.payload).toEqual({ workflow_id: 'g1', token: 'fresh-1' });
    again!.ack({ ok: true, workflows: [workflow('g1', 'STARTED', 1)] });
    socket.fire('pushserver:error', { code: 'token_expired', task_ids: [], workflow_ids: ['g1'], message: 'expired' });
    await flush();
    expect(socket.takeEmits('subscribe').map((e) => e.payload)).toEqual([{ workflow_id: 'g1', token: 'fresh-2' }]);
    expect(asked).toEqual(['g1', 'g1']);
    expect(problems).toEqual([]);
  });

  it('a workflow too large stays refused with too_many, its message kept', () => {
    const { client, socket } = setup();
    const problems: TaskProblem[] = [];
    client.watchWorkflow('big', undefined, { token: 't', onError: (p) => problems.push(p) });
    const message = "workflow 'big' has more than 10000 members (--max-workflow-size)";
    socket.takeEmits('subscribe')[0]!.ack({ ok: false, error: { code: 'too_many', message } });
    expect(problems).toEqual([{ code: 'too_many', message }]);
    expect(client.workflowRecord('big').error?.code).toBe('too_many');
  });

  it('needs a workflow id', () => {
    const { client } = setup();
    expect(() => client.watchWorkflow('')).toThrow(TypeError);
  });
});

describe('finished workflows', () => {
  it('are remembered after the last watcher stops, and shown at once when watched again', async () => {
    const { client, socket } = setup();
    const stop = client.watchWorkflow('g1', undefined, { token: 'tok' });
    socket.takeEmits('subscribe')[0]!.ack({ ok: true, workflows: [workflow('g1', 'SUCCESS', 3)] });
    stop();
    await flush();
    expect(client.workflowRecord('g1').workflow?.state).toBe('SUCCESS');
    const seen: string[] = [];
    client.watchWorkflow('g1', (w) => seen.push(w.state), { token: 'tok' });
    await flush();
    expect(seen).toEqual(['SUCCESS']);
    expect(socket.takeEmits('subscribe')).toHaveLength(1); // and asked again all the same
  });

  it('an unfinished one is forgotten', async () => {
    const { client, socket } = setup();
    const stop = client.watchWorkflow('g1', undefined, { token: 'tok' });
    socket.takeEmits('subscribe')[0]!.ack({ ok: true, workflows: [workflow('g1', 'STARTED', 1)] });
    stop();
    await flush();
    expect(client.workflowRecord('g1').workflow).toBeNull();
  });
});
