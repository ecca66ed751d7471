// Real Redis Sentinel for the Node suites: one master, one replica and three Debian redis-sentinels
// (quorum 2) on free loopback ports, started here and stopped by PID.
import fs from 'node:fs';
import path from 'node:path';
import { createClient } from 'redis';
import {
  ManagedProcess, freePort, removeDir, tempDir, waitFor, which,
} from '../../../../../examples/test-support/stack.js';

const INSTALL = 'Install it with `apt-get install -y redis-server redis-sentinel`.';

/** Run one command on 127.0.0.1:`port` (in `database`) and close; null when nothing answers or it fails. */
export async function redisCommand(port, args, { password, database } = {}) {
  const client = createClient({ socket: { host: '127.0.0.1', port, connectTimeout: 1000, reconnectStrategy: false }, password, database });
  client.on('error', () => {});
  try {
    await client.connect();
    return await client.sendCommand(args);
  } catch {
    return null;
  } finally {
    if (client.isOpen) client.destroy();
  }
}

async function startServer(dir, name, args, password) {
  const port = await freePort();
  const auth = password ? ['--requirepass', password, '--masterauth', password] : [];
  const proc = new ManagedProcess(`${name}-${port}`, which('redis-server', INSTALL), [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...auth, ...args,
  ], { cwd: dir, graceMs: 5000 });
  await waitFor(async () => {
    if (!proc.running) throw new Error(`${name} exited: ${proc.tail()}`);
    return (await redisCommand(port, ['PING'], { password })) === 'PONG';
  }, { timeoutMs: 15_000, message: `${name} on port ${port} to answer PING` });
  return { proc, port };
}

/** What the sentinel on `port` names as the master's port (null when it does not answer). */
export async function masterPortSeenBy(port, masterName, sentinelPassword) {
  const reply = await redisCommand(port, ['SENTINEL', 'get-master-addr-by-name', masterName], { password: sentinelPassword });
  return Array.isArray(reply) ? Number(reply[1]) : null;
}

/**
 * Start a master (with `password` as requirepass, if given), a replica of it and three sentinels
 * (with `sentinelPassword` as theirs, if given) watching it as `masterName`, and resolve once every sentinel sees the replica and the other two.
 */
export async function startSentinelSet({ masterName = 'mymaster', password, sentinelPassword, downAfterMs = 1000, failoverTimeoutMs = 5000 } = {}) {
  const dir = tempDir('redis-sentinel');
  const master = await startServer(dir, 'sentinel-master', [], password);
  const replica = await startServer(dir, 'sentinel-replica', ['--replicaof', '127.0.0.1', String(master.port)], password);
  await waitFor(async () => /master_link_status:up/.test(String(await redisCommand(replica.port, ['INFO', 'replication'], { password }))),
    { timeoutMs: 20_000, message: 'the replica to sync with the master' });
  const sentinels = [];
  for (let i = 0; i < 3; i += 1) {
    const port = await freePort();
    const conf = path.join(dir, `sentinel-${port}.conf`);
    // redis-sentinel rewrites its config file: each gets a file of its own.
    fs.writeFileSync(conf, [
      `port ${port}`, 'bind 127.0.0.1', `dir ${dir}`,
      `sentinel monitor ${masterName} 127.0.0.1 ${master.port} 2`,
      `sentinel down-after-milliseconds ${masterName} ${downAfterMs}`,
      `sentinel failover-timeout ${masterName} ${failoverTimeoutMs}`,
      `sentinel parallel-syncs ${masterName} 1`,
      ...(password ? [`sentinel auth-pass ${masterName} ${password}`] : []),
      // A sentinel with a password needs it to talk to the other sentinels too.
      ...(sentinelPassword ? [`requirepass ${sentinelPassword}`, `sentinel sentinel-pass ${sentinelPassword}`] : []),
      '',
    ].join('\n'));
    const proc = new ManagedProcess(`sentinel-${i}-${port}`, which('redis-sentinel', INSTALL), [conf], { cwd: dir, graceMs: 5000 });
    sentinels.push({ proc, port });
  }
  const set = {
    masterName,
    master,
    replica,
    sentinels,
    /** The `sentinel://` URL list naming every sentinel, as Celery takes it (the password is the master's). */
    url(db) {
      const auth = password ? `:${encodeURIComponent(password)}@` : '';
      return sentinels.map(({ port }) => `sentinel://${auth}127.0.0.1:${port}/${db}`).join(';');
    },
    /** The master's port as the first sentinel that answers names it. */
    async currentMasterPort() {
      for (const { port } of sentinels) {
        const seen = await masterPortSeenBy(port, masterName, sentinelPassword);
        if (seen !== null) return seen;
      }
      return null;
    },
    /** Run a command on a sentinel (with the sentinels' password). */
    sentinelCommand(args, index = 0) {
      return redisCommand(sentinels[index].port, args, { password: sentinelPassword });
    },
    async stop() {
      await Promise.all([master, replica, ...sentinels].map(({ proc }) => proc.stop()));
      removeDir(dir);
    },
  };
  try {
    await waitFor(async () => {
      for (const { proc, port } of sentinels) {
        if (!proc.running) throw new Error(`redis-sentinel exited: ${proc.tail()}`);
        const info = await redisCommand(port, ['SENTINEL', 'master', masterName], { password: sentinelPassword });
        if (!Array.isArray(info)) return false;
        const fields = Object.fromEntries(info.flatMap((v, i) => (i % 2 ? [] : [[v, info[i + 1]]])));
        if (Number(fields['num-other-sentinels']) < 2 || Number(fields['num-slaves']) < 1) return false;
      }
      return true;
    }, { timeoutMs: 30_000, intervalMs: 200, message: 'the three sentinels to see each other and the replica' });
  } catch (err) {
    await set.stop();
    throw err;
  }
  return set;
}
