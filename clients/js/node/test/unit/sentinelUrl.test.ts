import { describe, expect, test } from 'vitest';
import { createDispatcher, parseSentinelUrl, redactUrl, UnsupportedUrlError } from '../../src/index.js';
import { checkTransportOptions } from '../../src/sentinelUrl.js';

const LIST = 'sentinel://:hunter2@10.0.0.1:26380/3;sentinel://10.0.0.2/3;sentinel://[::1]:26381/3';

function refused(run: () => unknown, pattern: RegExp): void {
  let error: unknown;
  try { run(); } catch (err) { error = err; }
  expect(error).toBeInstanceOf(UnsupportedUrlError);
  expect((error as Error).message).toMatch(pattern);
  expect((error as Error).message).not.toContain('hunter2');
}

describe('parseSentinelUrl', () => {
  test('every sentinel, the master name, and the first URL\'s password and db for the master, as Celery reads them', () => {
    const options = parseSentinelUrl(LIST, { master_name: 'mymaster' });
    expect(options).toMatchObject({
      sentinels: [{ host: '10.0.0.1', port: 26380 }, { host: '10.0.0.2', port: 26379 }, { host: '::1', port: 26381 }],
      name: 'mymaster', db: 3, password: 'hunter2', enableOfflineQueue: false, maxRetriesPerRequest: 1, failoverDetector: true,
    });
    expect(options.sentinelPassword).toBeUndefined();
    expect(options.reconnectOnError(new Error('READONLY You can\'t write against a read only replica.'))).toBe(true);
    expect(options.reconnectOnError(new Error('WRONGTYPE Operation against a key'))).toBe(false);
  });

  test('sentinel_kwargs carries the sentinels\' own credentials; a user in the URL is the master\'s', () => {
    const options = parseSentinelUrl('sentinel://app:p%40ss@h:1/0', {
      master_name: 'm', sentinel_kwargs: { password: 'sentinel-secret', username: 'watcher' },
    });
    expect(options).toMatchObject({ username: 'app', password: 'p@ss', sentinelPassword: 'sentinel-secret', sentinelUsername: 'watcher' });
  });

  test('bad lists, and a missing master_name, are clear UnsupportedUrlErrors without the password', () => {
    refused(() => parseSentinelUrl(LIST, {}), /needs the master's name: pass brokerTransportOptions \{"master_name"/);
    refused(() => parseSentinelUrl(LIST, {}, 'backend'), /backendTransportOptions/);
    refused(() => parseSentinelUrl('sentinel://:hunter2@h:1/0;redis://:hunter2@h:2/0', { master_name: 'm' }), /cannot mix in 'redis:\/\/'/);
    refused(() => parseSentinelUrl('sentinel://:hunter2@h:1/zero', { master_name: 'm' }), /must be a number/);
    refused(() => parseSentinelUrl('sentinel://:hunter2@h:1/0?ssl_cert_reqs=none', { master_name: 'm' }), /take no parameters/);
    refused(() => parseSentinelUrl(' ; ', { master_name: 'm' }), /lists no sentinel/);
  });
});

describe('checkTransportOptions', () => {
  test('worker-side options are accepted; global_keyprefix, unknown keys and wrong shapes are refused', () => {
    expect(checkTransportOptions(undefined, 'broker')).toEqual({});
    expect(checkTransportOptions({ master_name: 'm', visibility_timeout: 3600 }, 'broker')).toMatchObject({ master_name: 'm' });
    refused(() => checkTransportOptions('mymaster', 'broker'), /brokerTransportOptions must be an object/);
    refused(() => checkTransportOptions({ global_keyprefix: 'x' }, 'broker'), /global_keyprefix is not supported/);
    refused(() => checkTransportOptions({ masterName: 'm' }, 'backend'), /unknown backendTransportOptions key\(s\) masterName/);
    refused(() => checkTransportOptions({ master_name: 7 }, 'broker'), /master_name must be a non-empty string/);
    refused(() => checkTransportOptions({ sentinel_kwargs: { password: 5 } }, 'broker'), /sentinel_kwargs.password must be a string/);
    refused(() => checkTransportOptions({ sentinel_kwargs: { ssl: true } }, 'broker'), /unknown brokerTransportOptions.sentinel_kwargs key ssl/);
  });
});

describe('createDispatcher with sentinel:// URLs', () => {
  test('a sentinel:// broker or backend without master_name is refused before connecting', async () => {
    await expect(createDispatcher({ brokerUrl: LIST })).rejects.toThrow(/master's name: pass brokerTransportOptions/);
    await expect(createDispatcher({
      brokerUrl: 'redis://127.0.0.1:1/0', backendUrl: LIST, backendTransportOptions: { visibility_timeout: 1 },
    })).rejects.toThrow(/master's name: pass backendTransportOptions/);
  });

  test('redactUrl hides every password in a list', () => {
    expect(redactUrl('sentinel://:hunter2@a:1/0;sentinel://u:hunter2@b:2/0')).toBe('sentinel://:***@a:1/0;sentinel://u:***@b:2/0');
  });
});
