// rediss:// with both clients against a real TLS redis-server (certificates made with openssl here).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createClient } from 'redis';
import { BrokerUnavailableError, createDispatcher } from '@celery-pushserver/node';
import {
  ManagedProcess, freePort, removeDir, tempDir, waitFor, which,
} from '../../../../../examples/test-support/stack.js';

const quiet = { warn() {}, info() {} };
let dir; let server; let port;

function openssl(...args) {
  execFileSync(which('openssl', 'Install it with `apt-get install -y openssl`.'), args, { cwd: dir, stdio: 'ignore' });
}

before(async () => {
  dir = tempDir('redis-tls');
  // A throwaway CA, and a server certificate for 127.0.0.1 signed by it; a second CA that signed nothing.
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=test-ca');
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other.key', '-out', 'other-ca.pem', '-days', '1', '-subj', '/CN=other-ca');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
  fs.writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\n');
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '1', '-extfile', 'ext.cnf');
  port = await freePort();
  server = new ManagedProcess('redis-tls', which('redis-server', 'Install it with `apt-get install -y redis-server`.'), [
    '--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1', '--tls-cert-file', 'server.pem',
    '--tls-key-file', 'server.key', '--tls-ca-cert-file', 'ca.pem', '--tls-auth-clients', 'no',
    '--save', '', '--appendonly', 'no', '--dir', dir,
  ], { cwd: dir, graceMs: 5000 });
  await server.waitForOutput(/Ready to accept connections/, 15_000);
});

after(async () => {
  await server?.stop();
  if (dir) removeDir(dir);
});

test('rediss:// works with both clients, verified against ssl_ca_certs', async () => {
  const url = `rediss://127.0.0.1:${port}/0?ssl_ca_certs=${encodeURIComponent(path.join(dir, 'ca.pem'))}`;
  const ids = [];
  for (const client of ['celery-ts', 'celery-node']) {
    const dispatcher = await createDispatcher({ brokerUrl: url, client, queue: 'tls', logger: quiet });
    try {
      ids.push((await dispatcher.dispatch('workers.tasks.demo_progress', [0, 0])).taskId);
    } finally {
      await dispatcher.close();
    }
  }
  const check = createClient({ url: `rediss://127.0.0.1:${port}/0`, socket: { tls: true, ca: fs.readFileSync(path.join(dir, 'ca.pem')) } });
  await check.connect();
  const queued = (await check.lRange('tls', 0, -1)).map((m) => JSON.parse(m).headers.id);
  await check.close();
  assert.deepEqual(queued.sort(), ids.sort());
});

test('a server certificate from another CA is refused: BrokerUnavailableError, nothing sent', async () => {
  const url = `rediss://127.0.0.1:${port}/0?ssl_ca_certs=${encodeURIComponent(path.join(dir, 'other-ca.pem'))}`;
  for (const client of ['celery-ts', 'celery-node']) {
    const dispatcher = await createDispatcher({ brokerUrl: url, client, readyTimeoutMs: 3000, logger: quiet });
    try {
      await assert.rejects(dispatcher.dispatch('workers.tasks.demo_progress', [0, 0]), (err) => {
        assert.ok(err instanceof BrokerUnavailableError, String(err));
        assert.match(err.message, /certificate|self.signed|unable to verify/i);
        return true;
      });
    } finally {
      await dispatcher.close();
    }
  }
});

test("celery-ts's own createClient refuses rediss:// (the trap the dispatcher avoids)", async () => {
  const celeryTs = (await import('celery-ts')).default;
  assert.throws(() => celeryTs.createClient({ brokerUrl: `rediss://127.0.0.1:${port}/0` }), celeryTs.UnimplementedError);
});
