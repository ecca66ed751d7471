// Unit tests for credentials, sessions and the sign-in limiter: validation, expiry, bounds. No Redis or
// MongoDB needed (the MongoDB stores are tested against nx-27017 in mongo.integration.test.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateCredentials } from '../src/users.js';
import { SessionStore, readCookie } from '../src/sessions.js';
import { WindowLimiter } from '../src/ratelimit.js';

test('credentials are validated with a message naming the field', () => {
  const bad = (body, pattern) => assert.throws(() => validateCredentials(body), (err) => err.code === 'bad_request' && pattern.test(err.message));
  bad(null, /JSON object/);
  bad([], /JSON object/);
  bad({ username: 'ab', password: 'long enough' }, /'username'/);
  bad({ username: 'a b c', password: 'long enough' }, /'username'/);
  bad({ username: 'abc', password: 'short' }, /'password'/);
  bad({ username: 'abc', password: 12345678 }, /'password'/);
  bad({ username: 'abc', password: 'x'.repeat(257) }, /'password'/);
  assert.deepEqual(validateCredentials({ username: 'a.b-c_d', password: '12345678' }), { username: 'a.b-c_d', password: '12345678' });
});

function fakeRes() {
  return {
    cookies: {},
    cookie(name, value, options) { this.cookies[name] = { value, options }; },
    clearCookie(name) { this.cookies[name] = { cleared: true }; },
  };
}
const reqWith = (cookie) => ({ get: (h) => (h.toLowerCase() === 'cookie' ? cookie : undefined) });

test('sessions: httpOnly SameSite=Lax cookie, expiry, logout, bounded count', () => {
  let now = 1_000_000;
  const sessions = new SessionStore({ ttlSeconds: 60, maxSessions: 2, now: () => now });
  const res = fakeRes();
  sessions.start(res, 'user-1');
  const { value, options } = res.cookies.sid;
  assert.match(value, /^[A-Za-z0-9_-]{43}$/, '32 random bytes');
  assert.equal(options.httpOnly, true);
  assert.equal(options.sameSite, 'lax');
  assert.equal(options.maxAge, 60_000);
  const req = reqWith(`theme=dark; sid=${value}`);
  assert.equal(readCookie(req, 'theme'), 'dark');
  assert.equal(sessions.userIdOf(req), 'user-1');
  assert.equal(sessions.userIdOf(reqWith('sid=forged')), undefined);
  assert.equal(sessions.userIdOf(reqWith(undefined)), undefined);
  now += 60_000;
  assert.equal(sessions.userIdOf(req), undefined, 'expired');

  const r2 = fakeRes(); sessions.start(r2, 'user-2');
  const r3 = fakeRes(); sessions.start(r3, 'user-3');
  const r4 = fakeRes(); sessions.start(r4, 'user-4');
  assert.equal(sessions.sessions.size, 2);
  assert.equal(sessions.userIdOf(reqWith(`sid=${r2.cookies.sid.value}`)), undefined, 'the oldest went first');
  const live = reqWith(`sid=${r4.cookies.sid.value}`);
  assert.equal(sessions.userIdOf(live), 'user-4');
  const out = fakeRes();
  sessions.end(live, out);
  assert.equal(out.cookies.sid.cleared, true);
  assert.equal(sessions.userIdOf(live), undefined);
});

test('sign-in limiter: a fixed window per address, bounded in addresses', () => {
  let now = 0;
  const limiter = new WindowLimiter({ limit: 2, windowMs: 60_000, maxKeys: 2, now: () => now });
  assert.equal(limiter.take('a'), 0);
  assert.equal(limiter.take('a'), 0);
  assert.equal(limiter.take('a'), 60, 'third call in the window: retry after the rest of it');
  now = 30_000;
  assert.equal(limiter.take('a'), 30);
  assert.equal(limiter.take('b'), 0, 'another address has its own window');
  now = 60_000;
  assert.equal(limiter.take('a'), 0, 'a new window');
  limiter.take('c');
  limiter.take('d');
  assert.equal(limiter.windows.size, 2);
});
