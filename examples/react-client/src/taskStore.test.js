import { describe, expect, it, vi } from 'vitest';
import { createTaskStore, shouldReplace, STATE_RANK } from './taskStore.js';

const state = (s, updated_at, extra = {}) => ({ task_id: 't1', state: s, updated_at, progress: null, retries: 0, ...extra });

describe('shouldReplace', () => {
  it('follows the precedence of DESIGN.md', () => {
    const order = ['PENDING', 'SENT', 'REJECTED', 'RECEIVED', 'STARTED', 'PROGRESS', 'REVOKED', 'FAILURE', 'SUCCESS'];
    expect(Object.keys(STATE_RANK).sort((a, b) => STATE_RANK[a] - STATE_RANK[b])).toEqual(order);
  });

  it('moves forward, never backward', () => {
    expect(shouldReplace(state('RECEIVED', 1), state('STARTED', 2))).toBe(true);
    expect(shouldReplace(state('PROGRESS', 3), state('STARTED', 2))).toBe(false);
    // A late task-started arriving with a newer clock still cannot undo progress.
    expect(shouldReplace(state('PROGRESS', 3), state('STARTED', 4))).toBe(false);
  });

  it('takes newer progress of the same state and ignores older', () => {
    const at30 = state('PROGRESS', 3, { progress: { percent: 30 } });
    const at60 = state('PROGRESS', 4, { progress: { percent: 60 } });
    expect(shouldReplace(at30, at60)).toBe(true);
    expect(shouldReplace(at60, at30)).toBe(false);
  });

  it('treats terminal states as final', () => {
    const done = state('SUCCESS', 5, { result: 1 });
    for (const s of ['PENDING', 'RECEIVED', 'STARTED', 'PROGRESS', 'RETRY']) {
      expect(shouldReplace(done, state(s, 9))).toBe(false);
    }
    expect(shouldReplace(state('FAILURE', 5), state('SUCCESS', 4))).toBe(true); // higher precedence
    expect(shouldReplace(done, state('REVOKED', 9))).toBe(false);
    expect(shouldReplace(done, state('SUCCESS', 5, { result: 1, runtime: 0.2 }))).toBe(true); // fuller copy
    expect(shouldReplace(done, state('SUCCESS', 4, { result: null }))).toBe(false); // stale copy
  });

  it('lets a newer RETRY re-open a task and the next attempt follow it', () => {
    const progress = state('PROGRESS', 3);
    expect(shouldReplace(progress, state('RETRY', 4, { retries: 1 }))).toBe(true);
    expect(shouldReplace(progress, state('RETRY', 2, { retries: 1 }))).toBe(false);
    const retry = state('RETRY', 4, { retries: 1 });
    expect(shouldReplace(retry, state('RECEIVED', 5, { retries: 1 }))).toBe(true);
    expect(shouldReplace(retry, state('PROGRESS', 3))).toBe(false); // the old attempt
    // A snapshot of the next attempt when we missed the RETRY itself.
    expect(shouldReplace(progress, state('RECEIVED', 6, { retries: 1 }))).toBe(true);
    expect(shouldReplace(state('RECEIVED', 6, { retries: 1 }), progress)).toBe(false);
  });

  it('accepts anything for an unknown task and ignores exact duplicates', () => {
    expect(shouldReplace(undefined, state('PENDING', null))).toBe(true);
    expect(shouldReplace(state('STARTED', 2), state('STARTED', 2))).toBe(false);
  });
});

describe('createTaskStore', () => {
  it('keeps one immutable record per task and notifies that task only', () => {
    const store = createTaskStore();
    const t1 = vi.fn();
    const t2 = vi.fn();
    store.subscribe('t1', t1);
    store.subscribe('t2', t2);
    expect(store.get('t1')).toEqual({ task: null, error: null });
    expect(store.get('t1')).toBe(store.get('nope')); // a shared empty record: stable for React

    expect(store.apply(state('STARTED', 1))).toBe(true);
    const first = store.get('t1');
    expect(first.task.state).toBe('STARTED');
    expect(Object.isFrozen(first)).toBe(true);
    expect(t1).toHaveBeenCalledTimes(1);
    expect(t2).not.toHaveBeenCalled();

    expect(store.apply(state('RECEIVED', 0.5))).toBe(false);
    expect(store.get('t1')).toBe(first); // unchanged identity: no re-render
    expect(t1).toHaveBeenCalledTimes(1);
  });

  it('records subscribe errors and clears them on the next good update', () => {
    const store = createTaskStore();
    store.apply(state('PROGRESS', 2));
    store.setError('t1', { code: 'unauthorized', message: 'token has expired' });
    expect(store.get('t1').task.state).toBe('PROGRESS');
    expect(store.get('t1').error.code).toBe('unauthorized');
    store.apply(state('SUCCESS', 3));
    expect(store.get('t1').error).toBeNull();
  });

  it('ignores malformed updates and forgets removed tasks', () => {
    const store = createTaskStore();
    expect(store.apply(null)).toBe(false);
    expect(store.apply({ state: 'SUCCESS' })).toBe(false);
    store.apply(state('SUCCESS', 1));
    const listener = vi.fn();
    store.subscribe('t1', listener);
    store.remove('t1');
    expect(store.has('t1')).toBe(false);
    expect(listener).toHaveBeenCalledTimes(1);
    expect(store.size).toBe(0);
  });
});
