// TLS, passwords and Sentinel for the dispatcher: the same URLs and transport options the workers and
// pushserver take, tested against a real redis-server with --tls-port (certificates made here with openssl)
// and a real redis-sentinel in front of a password-protected master.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { createClient } from 'redis';
import { ConfigError, readConfig } from '../src/config.js';
import { CeleryDispatcher } from '../src/dispatcher.js';
import { redisConnection, RedisUrlError } from '../src/redisConnection.js';
import {
  freePort, ManagedProcess, removeDir, tempDir, waitFor, which,
} from '../../test-support/stack.js';

const PASSWORD = `pw-${randomBytes(8).toString('hex')}`;

test('rediss:// URLs: CA read from ssl_ca_certs, verification on unless ssl_cert_reqs=none', () => {
  const dir = tempDir('certs-unit');
  try {
    fs.writeFileSync(path.join(dir, 'ca.pem'), 'not really a CA');
    const { url, options } = redisConnection(`rediss://:secret@h:6380/2?ssl_cert_reqs=required&ssl_ca_certs=${dir}/ca.pem`);
    assert.equal(url, 'rediss://:secret@h:6380/2');
    assert.equal(options.tls.rejectUnauthorized, true);
    assert.equal(options.tls.ca.toString(), 'not really a CA');
    assert.equal(redisConnection('rediss://h/0?ssl_cert_reqs=none').options.tls.rejectUnauthorized, false);
    assert.throws(() => redisConnection('rediss://h/0'), /a rediss:\/\/ URL needs ssl_cert_reqs/);
    assert.throws(() => redisConnection('rediss://h/0?ssl_cert_reqs=required&ssl_ca_certs=/nope.pem'), RedisUrlError);
  } finally {
    removeDir(dir);
  }
});

test('sentinel:// URLs become ioredis sentinels with the master name from the transport options', () => {
  const { url, options } = redisConnection('sentinel://:pw@10.0.0.1:26379/3;sentinel://:pw@10.0.0.2:26380/3',
    { master_name: 'mymaster', sentinel_kwargs: { password: 'spw' } });
  assert.equal(url, 'redis://localhost/3');
  assert.deepEqual(options, {
    sentinels: [{ host: '10.0.0.1', port: 26379 }, { host: '10.0.0.2', port: 26380 }],
    name: 'mymaster', password: 'pw', sentinelPassword: 'spw',
  });
  assert.throws(() => redisConnection('sentinel://h:26379/0', {}), /master_name/);
});

test('readConfig refuses what would fail later, in one line naming the variable', () => {
  const base = { PUSHSERVER_SECRET: 's' };
  assert.throws(() => readConfig({ ...base, CELERY_RESULT_BACKEND: 'rediss://h:6380/1' }),
    (err) => err instanceof ConfigError && /^CELERY_RESULT_BACKEND: a rediss:\/\/ URL needs ssl_cert_reqs/.test(err.message));
  assert.throws(() => readConfig({ ...base, CELERY_BROKER_URL: 'sentinel://h:26379/0' }), /master_name/);
  assert.throws(() => readConfig({ ...base, CELERY_BROKER_TRANSPORT_OPTIONS: '[1]' }), /must be a JSON object/);
  const config = readConfig({
    ...base, CELERY_BROKER_URL: 'sentinel://h:26379/0', CELERY_BROKER_TRANSPORT_OPTIONS: '{"master_name": "m"}',
  });
  assert.deepEqual(config.brokerTransportOptions, { master_name: 'm' });
});

async function queued(client, queue, count) {
  return waitFor(async () => (await client.lLen(queue)) >= count, { timeoutMs: 10_000, message: `${count} message(s) in ${queue}` });
}

describe('the dispatcher over TLS and through Sentinel', () => {
  const procs = [];
  let dir;
  let tlsPort;
  let ca;
  let masterPort;
  let sentinelPort;

  before(async () => {
    const redisServer = which('redis-server', 'Install it with `apt-get install -y redis-server`.');
    const redisSentinel = which('redis-sentinel', 'Install it with `apt-get install -y redis-sentinel`.');
    which('openssl', 'Install it with `apt-get install -y openssl`.');
    dir = tempDir('redis-tls');
    const f = (name) => path.join(dir, name);
    const ssl = (...args) => execFileSync('openssl', args, { stdio: 'pipe' });
    fs.writeFileSync(f('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=test CA', '-keyout', f('ca.key'), '-out', f('ca.pem'));
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', f('server.key'), '-out', f('server.csr'));
    ssl('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '1',
      '-extfile', f('san.ext'), '-out', f('server.pem'));
    ca = f('ca.pem');
    tlsPort = await freePort();
    procs.push(new ManagedProcess('redis-tls', redisServer, ['--port', '0', '--tls-port', String(tlsPort), '--bind', '127.0.0.1',
      '--tls-cert-file', f('server.pem'), '--tls-key-file', f('server.key'), '--tls-ca-cert-file', ca,
      '--tls-auth-clients', 'no', '--requirepass', PASSWORD, '--save', '', '--appendonly', 'no', '--dir', dir]));
    masterPort = await freePort();
    procs.push(new ManagedProcess('redis-master', redisServer, ['--port', String(masterPort), '--bind', '127.0.0.1',
      '--requirepass', PASSWORD, '--save', '', '--appendonly', 'no', '--dir', dir]));
    sentinelPort = await freePort();
    fs.writeFileSync(f('sentinel.conf'), [`port ${sentinelPort}`, 'bind 127.0.0.1', `dir ${dir}`,
      `sentinel monitor mymaster 127.0.0.1 ${masterPort} 1`, `sentinel auth-pass mymaster ${PASSWORD}`, ''].join('\n'));
    await waitFor(async () => {
      const probe = createClient({ url: `redis://:${PASSWORD}@127.0.0.1:${masterPort}` });
      probe.on('error', () => {});
      try { await probe.connect(); await probe.ping(); return true; } catch { return false; } finally { await probe.close().catch(() => {}); }
    }, { message: 'the master to answer' });
    procs.push(new ManagedProcess('redis-sentinel', redisSentinel, [f('sentinel.conf')]));
  });

  after(async () => {
    for (const proc of procs.reverse()) await proc.stop();
    if (dir) removeDir(dir);
  });

  test('rediss:// with a password and the CA: the task message arrives; a wrong CA is refused', async () => {
    const url = `rediss://:${PASSWORD}@127.0.0.1:${tlsPort}/0?ssl_cert_reqs=required&ssl_ca_certs=${ca}`;
    const reader = createClient({ url: `rediss://:${PASSWORD}@127.0.0.1:${tlsPort}/0`, socket: { tls: true, ca: fs.readFileSync(ca) } });
    reader.on('error', () => {});
    await waitFor(async () => { try { await reader.connect(); return true; } catch { return false; } }, { message: 'the TLS redis-server' });
    const dispatcher = new CeleryDispatcher({ brokerUrl: url, resultBackend: url.replace('/0?', '/1?'), queue: 'tls-q' });
    const logs = [];
    const wrong = new CeleryDispatcher({
      brokerUrl: `rediss://:${PASSWORD}@127.0.0.1:${tlsPort}/0?ssl_cert_reqs=required&ssl_ca_certs=${path.join(dir, 'server.pem')}`,
      resultBackend: url.replace('/0?', '/1?'), queue: 'tls-q', readyTimeoutMs: 1500,
      logger: { warn: (m) => logs.push(m), info: () => {} },
    });
    try {
      await dispatcher.dispatch('workers.tasks.predict', [[1, 2, 3, 4]], {}, { queue: 'tls-q' });
      await queued(reader, 'tls-q', 1);
      await assert.rejects(wrong.dispatch('workers.tasks.predict', [[1, 2, 3, 4]], {}, { queue: 'tls-q' }));
      assert.ok(logs.some((m) => /certificate|self.signed|verify/i.test(m)), logs.join('\n'));
      assert.ok(!logs.join('\n').includes(PASSWORD), 'a log line shows the password');
    } finally {
      await dispatcher.close();
      await wrong.close();
      await reader.close().catch(() => {});
    }
  });

  test('sentinel:// with master_name: ioredis finds the master through the sentinel', async () => {
    const url = `sentinel://:${PASSWORD}@127.0.0.1:${sentinelPort}/0`;
    const dispatcher = new CeleryDispatcher({
      brokerUrl: url, resultBackend: url.replace('/0', '/1'), queue: 'sentinel-q',
      brokerTransportOptions: { master_name: 'mymaster' }, backendTransportOptions: { master_name: 'mymaster' },
      readyTimeoutMs: 10_000,
    });
    const reader = createClient({ url: `redis://:${PASSWORD}@127.0.0.1:${masterPort}/0` });
    reader.on('error', () => {});
    await reader.connect();
    try {
      await waitFor(async () => {
        try { await dispatcher.dispatch('workers.tasks.predict', [[1, 2, 3, 4]], {}, { queue: 'sentinel-q' }); return true; } catch { return false; }
      }, { timeoutMs: 20_000, message: 'a dispatch through the sentinel' });
      await queued(reader, 'sentinel-q', 1);
    } finally {
      await dispatcher.close();
      await reader.close().catch(() => {});
    }
  });
});
