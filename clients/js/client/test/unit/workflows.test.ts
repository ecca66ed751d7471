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

  it('merges an update without task_ids into the held state, and ignores one with nothing (or another membership) held', () => {
    const { client, socket } = setup();
    const seen: WorkflowState[] = [];
    client.watchWorkflow('g1', (w) => seen.push(w), { token: 'tok' });
    const { task_ids: _ids, ...partial } = workflow('g1', 'STARTED', 1);
    socket.fire('workflow:update', partial); // before the ack: nothing to merge into
    expect(client.workflowRecord('g1').workflow).toBeNull();
    socket.takeEmits('subscribe')[0]!.ack({ ok: true, workflows: [workflow('g1', 'STARTED', 1)] });
    const { task_ids: _ids2, ...next } = workflow('g1', 'STARTED', 2);
    socket.fire('workflow:update', next);
    expect(client.workflowRecord('g1').workflow).toEqual(workflow('g1', 'STARTED', 2));
    // A chain grew: the update carries the new ids, and the next one without them keeps those.
    socket.fire('workflow:update', workflow('g1', 'STARTED', 2, 4));
    const { task_ids: _ids3, ...done } = workflow('g1', 'SUCCESS', 4, 4);
    socket.fire('workflow:update', done);
    expect(client.workflowRecord('g1').workflow).toEqual(workflow('g1', 'SUCCESS', 4, 4));
    // A partial update whose total the held ids do not match (held from before a reconnect) waits for the ack.
    const { task_ids: _ids4, ...other } = workflow('g1', 'SUCCESS', 5, 5);
    socket.fire('workflow:update', other);
    expect(client.workflowRecord('g1').workflow?.total).toBe(4);
    expect(seen.map((w) => [w.state, w.completed, w.task_ids.length])).toEqual([
      ['STARTED', 1, 3], ['STARTED', 2, 3], ['STARTED', 2, 4], ['SUCCESS', 4, 4],
    ]);
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
