import { describe, expect, it, vi } from 'vitest';
import { createTaskStore, EMPTY_RECORD } from '../../src/store.js';
import { taskState } from './fakeSocket.js';

const state = (s: string, updatedAt: number | null, extra: Record<string, unknown> = {}) => taskState('t1', s, updatedAt, extra);

describe('createTaskStore', () => {
  it('keeps one immutable record per task and notifies that task only', () => {
    const store = createTaskStore();
    const t1 = vi.fn();
    const t2 = vi.fn();
    store.subscribe('t1', t1);
    store.subscribe('t2', t2);
    expect(store.get('t1')).toBe(EMPTY_RECORD);
    expect(store.get('t1')).toBe(store.get('nope')); // a shared empty record: stable for React

    expect(store.apply(state('STARTED', 1))).toBe(true);
    const first = store.get('t1');
    expect(first.task?.state).toBe('STARTED');
    expect(Object.isFrozen(first)).toBe(true);
    expect(Object.isFrozen(first.task)).toBe(true);
    expect(t1).toHaveBeenCalledTimes(1);
    expect(t1).toHaveBeenCalledWith(first);
    expect(t2).not.toHaveBeenCalled();

    expect(store.apply(state('RECEIVED', 0.5))).toBe(false);
    expect(store.get('t1')).toBe(first); // unchanged identity: no re-render
    expect(t1).toHaveBeenCalledTimes(1);
  });

  it('records errors, keeps the last known state, and clears them on the next good update', () => {
    const store = createTaskStore();
    store.apply(state('PROGRESS', 2));
    store.setError('t1', { code: 'unauthorized', message: 'token has expired' });
    expect(store.get('t1').task?.state).toBe('PROGRESS');
    expect(store.get('t1').error).toEqual({ code: 'unauthorized', message: 'token has expired' });
    const withError = store.get('t1');
    store.setError('t1', { code: 'unauthorized', message: 'token has expired' });
    expect(store.get('t1')).toBe(withError); // the same error twice is no change
    store.apply(state('SUCCESS', 3));
    expect(store.get('t1').error).toBeNull();
  });

  it('ignores malformed updates', () => {
    const store = createTaskStore();
    expect(store.apply(null)).toBe(false);
    expect(store.apply('SUCCESS')).toBe(false);
    expect(store.apply({ state: 'SUCCESS' })).toBe(false);
    expect(store.apply({ task_id: 't1', state: 7 })).toBe(false);
    expect(store.size).toBe(0);
  });

  it('forgets a released unfinished task but keeps finished ones, up to maxFinished', () => {
    const store = createTaskStore({ maxFinished: 2 });
    store.apply(taskState('running', 'PROGRESS', 1));
    for (const id of ['a', 'b', 'c']) store.apply(taskState(id, 'SUCCESS', 1));
    store.release('running');
    expect(store.has('running')).toBe(false);
    store.release('a');
    store.release('b');
    expect(store.has('a') && store.has('b')).toBe(true);
    store.release('c');
    expect(store.has('a')).toBe(false); // the oldest finished one goes
    expect(store.get('b').task?.state).toBe('SUCCESS');
    expect(store.get('c').task?.state).toBe('SUCCESS');
  });

  it('does not forget a released task someone still listens to', () => {
    const store = createTaskStore();
    store.apply(state('STARTED', 1));
    const stop = store.subscribe('t1', () => {});
    store.release('t1');
    expect(store.has('t1')).toBe(true);
    stop();
    store.release('t1');
    expect(store.has('t1')).toBe(false);
  });
});
