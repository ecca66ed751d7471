import { EventEmitter } from 'node:events';
import { describe, expect, test, vi } from 'vitest';
import { readyWaiter, watchOutages, withTimeout } from '../../src/connection.js';

class FakeRedis extends EventEmitter {
  status = 'connecting';
  disconnect() { this.status = 'end'; }
}

describe('readyWaiter', () => {
  test('resolves at once when ready, else on the ready event', async () => {
    const redis = new FakeRedis();
    const wait = readyWaiter(redis, 1000);
    const pending = wait();
    redis.status = 'ready';
    redis.emit('ready');
    await expect(pending).resolves.toBeUndefined();
    await expect(wait()).resolves.toBeUndefined();
  });

  test('a burst of waits during an outage shares one pair of listeners, all rejected by the next error', async () => {
    const redis = new FakeRedis();
    const wait = readyWaiter(redis, 1000);
    const waits = Array.from({ length: 50 }, () => wait());
    expect(redis.listenerCount('ready')).toBe(1);
    expect(redis.listenerCount('error')).toBe(1);
    redis.emit('error', new Error('connect ECONNREFUSED'));
    for (const result of await Promise.allSettled(waits)) {
      expect(result.status).toBe('rejected');
      expect((result as PromiseRejectedResult).reason.message).toMatch(/ECONNREFUSED/);
    }
    expect(redis.listenerCount('ready')).toBe(0);
    expect(redis.listenerCount('error')).toBe(0);
  });

  test('rejects after the timeout and cleans its listeners up', async () => {
    vi.useFakeTimers();
    try {
      const redis = new FakeRedis();
      const pending = readyWaiter(redis, 500)();
      vi.advanceTimersByTime(500);
      await expect(pending).rejects.toThrow(/within 500 ms/);
      expect(redis.listenerCount('ready') + redis.listenerCount('error')).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});

test('withTimeout rejects a promise that never settles, and passes results through', async () => {
  await expect(withTimeout(new Promise(() => {}), 20, 'publishing')).rejects.toThrow('publishing timed out after 20 ms');
  await expect(withTimeout(Promise.resolve(7), 20, 'x')).resolves.toBe(7);
});

test('watchOutages logs one line per outage and one per recovery', () => {
  const redis = new FakeRedis();
  const lines: string[] = [];
  watchOutages(redis, 'broker', (level, message) => lines.push(`${level} ${message}`));
  for (let i = 0; i < 5; i += 1) redis.emit('error', new Error('ECONNREFUSED'));
  redis.emit('ready');
  redis.emit('ready');
  expect(lines).toEqual(['warn broker unavailable: ECONNREFUSED', 'info broker connected again']);
});
