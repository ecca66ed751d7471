// createDispatcher's argument checks; nothing here connects anywhere that answers.
import { describe, expect, test } from 'vitest';
import {
  createDispatcher, DispatchArgumentError, DispatcherClosedError, UnsupportedUrlError,
} from '../../src/index.js';

// A port nothing listens on: the dispatcher is created but never gets a connection.
const nowhere = 'redis://127.0.0.1:1/0';
const quiet = { warn() {}, info() {} };

describe.each(['celery-ts', 'celery-node'] as const)('%s dispatcher', (client) => {
  test('refuses bad task names, args, kwargs and task ids before touching the broker', async () => {
    const dispatcher = await createDispatcher({ brokerUrl: nowhere, client, logger: quiet });
    try {
      await expect(dispatcher.dispatch('')).rejects.toBeInstanceOf(DispatchArgumentError);
      await expect(dispatcher.dispatch('bad name; rm')).rejects.toThrow(/dotted Celery task name/);
      await expect(dispatcher.dispatch('t.x', 'a' as unknown as unknown[])).rejects.toThrow(/args must be an array/);
      await expect(dispatcher.dispatch('t.x', [], [] as unknown as Record<string, unknown>)).rejects.toThrow(/kwargs/);
      await expect(dispatcher.dispatch('t.x', [], {}, { taskId: 'not-a-uuid' })).rejects.toThrow(/taskId must be a UUID/);
    } finally {
      await dispatcher.close();
    }
  });

  test('after close(), dispatch and ready reject with DispatcherClosedError', async () => {
    const dispatcher = await createDispatcher({ brokerUrl: nowhere, client, logger: quiet });
    await dispatcher.close();
    await dispatcher.close(); // twice is harmless
    await expect(dispatcher.dispatch('t.x')).rejects.toBeInstanceOf(DispatcherClosedError);
    await expect(dispatcher.ready()).rejects.toBeInstanceOf(DispatcherClosedError);
  });
});

test('unsupported URLs and clients are refused when the dispatcher is created', async () => {
  await expect(createDispatcher({ brokerUrl: 'amqp://guest@rabbit//' })).rejects.toBeInstanceOf(UnsupportedUrlError);
  await expect(createDispatcher({ brokerUrl: nowhere, client: 'node-celery-ts' as 'celery-ts' })).rejects.toThrow(/celery-ts" or "celery-node/);
  await expect(createDispatcher({ brokerUrl: nowhere, backendUrl: 'nonsense' })).rejects.toThrow(/backendUrl is not a URL/);
  await expect(createDispatcher({ brokerUrl: nowhere, readyTimeoutMs: 0 })).rejects.toThrow(RangeError);
});

test('the default client is celery-ts', async () => {
  const dispatcher = await createDispatcher({ brokerUrl: nowhere, logger: quiet });
  expect(dispatcher.client).toBe('celery-ts');
  await dispatcher.close();
});
