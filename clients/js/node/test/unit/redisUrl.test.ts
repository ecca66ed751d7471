import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { parseRedisUrl, redactUrl, UnsupportedUrlError } from '../../src/index.js';

describe('parseRedisUrl', () => {
  test('redis:// with defaults, and the fail-fast ioredis settings', () => {
    const options = parseRedisUrl('redis://127.0.0.1');
    expect(options).toMatchObject({ host: '127.0.0.1', port: 6379, db: 0, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    expect(options.tls).toBeUndefined();
    expect(options.retryStrategy(1)).toBe(200);
    expect(options.retryStrategy(100)).toBe(2000);
  });

  test('credentials, port, db, IPv6', () => {
    expect(parseRedisUrl('redis://app:p%40ss@cache.internal:6380/3')).toMatchObject({
      host: 'cache.internal', port: 6380, db: 3, username: 'app', password: 'p@ss',
    });
    expect(parseRedisUrl('redis://:secret@[::1]:7000/1')).toMatchObject({ host: '::1', port: 7000, db: 1, password: 'secret' });
  });

  test('rediss:// gets TLS with the host as SNI, verified unless ssl_cert_reqs=none', () => {
    expect(parseRedisUrl('rediss://cache.example:6380/0').tls).toEqual({ servername: 'cache.example', rejectUnauthorized: true });
    expect(parseRedisUrl('rediss://10.0.0.5/0').tls).toEqual({ rejectUnauthorized: true });
    expect(parseRedisUrl('rediss://h/0?ssl_cert_reqs=CERT_REQUIRED').tls?.rejectUnauthorized).toBe(true);
    expect(parseRedisUrl('rediss://h/0?ssl_cert_reqs=none').tls?.rejectUnauthorized).toBe(false);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ca-'));
    const ca = path.join(dir, 'ca.pem');
    fs.writeFileSync(ca, '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n');
    expect(parseRedisUrl(`rediss://h/0?ssl_ca_certs=${encodeURIComponent(ca)}`).tls?.ca).toContain('BEGIN CERTIFICATE');
    fs.rmSync(dir, { recursive: true });
  });

  test('anything else is a clear UnsupportedUrlError that never shows the password', () => {
    const refuse = (url: string, pattern: RegExp) => {
      let error: unknown;
      try { parseRedisUrl(url); } catch (err) { error = err; }
      expect(error).toBeInstanceOf(UnsupportedUrlError);
      expect((error as Error).message).toMatch(pattern);
      expect((error as Error).message).not.toContain('hunter2');
      expect((error as UnsupportedUrlError).code).toBe('unsupported_url');
    };
    refuse('amqp://guest:hunter2@rabbit//', /unsupported broker URL scheme 'amqp:\/\/'/);
    refuse('sentinel://:hunter2@h:26379', /parseSentinelUrl/);
    refuse('not a url hunter2', /is not a URL/);
    refuse('redis://:hunter2@h/zero', /must be a number/);
    refuse('redis://:hunter2@h/0?socket_timeout=5', /unknown broker URL parameter\(s\) socket_timeout/);
    refuse('redis://:hunter2@h/0?ssl_cert_reqs=none', /need a rediss:\/\/ URL/);
    refuse('rediss://:hunter2@h/0?ssl_cert_reqs=maybe', /ssl_cert_reqs must be/);
    refuse('rediss://:hunter2@h/0?ssl_ca_certs=/nonexistent/ca.pem', /cannot read ssl_ca_certs/);
  });

  test('redactUrl hides the password', () => {
    expect(redactUrl('redis://user:hunter2@h:1/0')).toBe('redis://user:***@h:1/0');
    expect(redactUrl('redis://:hunter2@h/0')).toBe('redis://:***@h/0');
    expect(redactUrl('redis://h/0')).toBe('redis://h/0');
  });
});
