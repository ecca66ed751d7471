import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { PRECEDENCE, TERMINAL_STATES, isTerminal, shouldReplace } from '../../src/precedence.js';
import { taskState } from './fakeSocket.js';

const state = (s: string, updatedAt: number | null, extra: Record<string, unknown> = {}) => taskState('t1', s, updatedAt, extra);
const stateModule = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../../pushserver/state.py');

describe('PRECEDENCE', () => {
  it('is the server table of pushserver/state.py, rank for rank', () => {
    const source = fs.readFileSync(stateModule, 'utf8');
    const table = /^PRECEDENCE: dict\[str, int\] = \{\n([\s\S]*?)\n\}/m.exec(source);
    expect(table, 'PRECEDENCE table in state.py').not.toBeNull();
    const server = Object.fromEntries([...table![1]!.matchAll(/^\s*(\w+): (\d+),/gm)].map((m) => [m[1], Number(m[2])]));
    expect(PRECEDENCE).toEqual(server);
    expect(Object.keys(server)).toHaveLength(9);
  });

  it('ranks the states as docs/protocol.md lists them', () => {
    const order = ['PENDING', 'SENT', 'RECEIVED', 'STARTED', 'PROGRESS', 'REJECTED', 'REVOKED', 'FAILURE', 'SUCCESS'];
    const ranks = PRECEDENCE as Record<string, number>;
    expect(Object.keys(PRECEDENCE).sort((a, b) => ranks[a]! - ranks[b]!)).toEqual(order);
  });

  it('treats the server READY_STATES as terminal and nothing else', () => {
    expect([...TERMINAL_STATES].sort()).toEqual(['FAILURE', 'REJECTED', 'REVOKED', 'SUCCESS']);
    expect(isTerminal('RETRY')).toBe(false);
    expect(isTerminal('PROGRESS')).toBe(false);
    expect(isTerminal(undefined)).toBe(false);
  });
});

describe('shouldReplace', () => {
  it('moves forward, never backward', () => {
    expect(shouldReplace(state('RECEIVED', 1), state('STARTED', 2))).toBe(true);
    expect(shouldReplace(state('PROGRESS', 3), state('STARTED', 2))).toBe(false);
    // A late task-started arriving with a newer clock still cannot undo progress.
    expect(shouldReplace(state('PROGRESS', 3), state('STARTED', 4))).toBe(false);
    expect(shouldReplace(state('SENT', 1), state('PENDING', 2))).toBe(false);
  });

  it('takes newer progress of the same state and ignores older', () => {
    const at30 = state('PROGRESS', 3, { progress: { percent: 30 } });
    const at60 = state('PROGRESS', 4, { progress: { percent: 60 } });
    expect(shouldReplace(at30, at60)).toBe(true);
    expect(shouldReplace(at60, at30)).toBe(false);
  });

  it('treats terminal states as final, resolving two of them by precedence', () => {
    const done = state('SUCCESS', 5, { result: 1 });
    for (const s of ['PENDING', 'RECEIVED', 'STARTED', 'PROGRESS', 'RETRY']) {
      expect(shouldReplace(done, state(s, 9))).toBe(false);
    }
    expect(shouldReplace(state('FAILURE', 5), state('SUCCESS', 4))).toBe(true);
    expect(shouldReplace(done, state('REVOKED', 9))).toBe(false);
    expect(shouldReplace(state('REJECTED', 5), state('REVOKED', 6))).toBe(true);
    expect(shouldReplace(state('REVOKED', 5), state('REJECTED', 6))).toBe(false);
    expect(shouldReplace(state('REJECTED', 5), state('PROGRESS', 6))).toBe(false);
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
    // A requeued rejection arrives as RETRY and re-opens the task the same way.
    expect(shouldReplace(state('STARTED', 2), state('RETRY', 3, { exception: 'Reject(requeue=True)' }))).toBe(true);
  });

  it('accepts anything for an unknown task and ignores exact duplicates', () => {
    expect(shouldReplace(undefined, state('PENDING', null))).toBe(true);
    expect(shouldReplace(state('STARTED', 2), state('STARTED', 2))).toBe(false);
  });
});
