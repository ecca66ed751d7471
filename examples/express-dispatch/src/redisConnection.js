// The URLs and transport options Celery takes, turned into what celery-node's ioredis connections take.
//
// The same CELERY_BROKER_URL / CELERY_RESULT_BACKEND (and *_TRANSPORT_OPTIONS)
// configure the workers, pushserver and this app:
//  - rediss://...?ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem: TLS, the
//    server's certificate verified against that CA (ioredis `tls.ca`);
//    ssl_cert_reqs=none skips verification; without ssl_cert_reqs the URL is
//    refused, as pushserver refuses it.
//  - redis://user:password@host/0: ioredis reads the password and ACL user from the URL.
//  - sentinel://h1:26379/0;sentinel://h2:26379/0 with {"master_name": "mymaster"}
//    in the transport options: ioredis asks those sentinels for the master
//    (`sentinels`, `name`); a password in the URLs is the master's, and
//    `sentinel_kwargs.password` the sentinels' own, as in Celery.
import fs from 'node:fs';

export class RedisUrlError extends Error {}

const CERT_REQS = new Set(['required', 'optional', 'none', 'CERT_REQUIRED', 'CERT_OPTIONAL', 'CERT_NONE']);

/** Whether `url` is one of the Redis forms handled here (else celery-node takes it as it is, e.g. amqp://). */
export function isRedisFamily(url) {
  return /^(rediss?|sentinel):/i.test(url);
}

/**
 * `{ url, options }` for celery-node: the URL it can parse (redis:// or rediss://) and the ioredis
 * options the original URL and `transportOptions` mean. `label` names the setting in errors.
 */
export function redisConnection(url, transportOptions = {}, label = 'CELERY_BROKER_URL') {
  if (/^sentinel:/i.test(url)) return sentinelConnection(url, transportOptions, label);
  const parsed = new URL(url);
  const options = {};
  if (parsed.protocol === 'rediss:') {
    const reqs = parsed.searchParams.get('ssl_cert_reqs');
    if (!reqs) {
      throw new RedisUrlError(`${label}: a rediss:// URL needs ssl_cert_reqs: add ?ssl_cert_reqs=required&ssl_ca_certs=/path/to/ca.pem (or ssl_cert_reqs=none to skip certificate verification)`);
    }
    if (!CERT_REQS.has(reqs)) throw new RedisUrlError(`${label}: ssl_cert_reqs=${reqs}: use required, optional or none`);
    const tls = { rejectUnauthorized: !/none/i.test(reqs) };
    const ca = parsed.searchParams.get('ssl_ca_certs');
    if (ca) tls.ca = readFile(ca, label);
    const cert = parsed.searchParams.get('ssl_certfile');
    const key = parsed.searchParams.get('ssl_keyfile');
    if (cert) tls.cert = readFile(cert, label);
    if (key) tls.key = readFile(key, label);
    options.tls = tls;
  }
  // Celery's ssl_* parameters mean nothing to ioredis, which would take them as options.
  for (const name of [...parsed.searchParams.keys()]) {
    if (name.startsWith('ssl_')) parsed.searchParams.delete(name);
  }
  return { url: parsed.toString(), options };
}

function sentinelConnection(url, transportOptions, label) {
  const masterName = transportOptions.master_name;
  if (!masterName) {
    throw new RedisUrlError(`${label}: a sentinel:// URL needs the master's name: set its transport options to {"master_name": "mymaster"}`);
  }
  const hosts = url.split(';').map((one) => new URL(one.trim()));
  const first = hosts[0];
  const options = {
    sentinels: hosts.map((h) => ({ host: h.hostname, port: Number(h.port || 26379) })),
    name: masterName,
  };
  if (first.password) options.password = decodeURIComponent(first.password);
  if (first.username) options.username = decodeURIComponent(first.username);
  const sentinelKwargs = transportOptions.sentinel_kwargs || {};
  if (sentinelKwargs.password) options.sentinelPassword = sentinelKwargs.password;
  if (sentinelKwargs.username) options.sentinelUsername = sentinelKwargs.username;
  const db = (first.pathname || '/0').replace('/', '') || '0';
  // celery-node picks its Redis broker by the scheme; ioredis then connects through the sentinels.
  return { url: `redis://localhost/${db}`, options };
}

function readFile(path, label) {
  try {
    return fs.readFileSync(path);
  } catch (err) {
    throw new RedisUrlError(`${label}: cannot read ${path} (${err.code || err.message})`);
  }
}
