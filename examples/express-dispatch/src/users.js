// Accounts for the demo, kept in memory: usernames and scrypt password hashes.
//
// In memory until the app gets its MongoDB collection; the interface (register,
// authenticate, byId) is what that store will keep.
import { randomBytes, randomUUID, scrypt, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';

const scryptAsync = promisify(scrypt);

// OWASP's scrypt minimum (N=2^17, r=8, p=1) needs 128 MiB per hash; 2^15 keeps
// a login under ~100 ms on a small VM while staying far from a fast hash.
const SCRYPT = Object.freeze({ N: 2 ** 15, r: 8, p: 1, keylen: 64, maxmem: 64 * 1024 * 1024 });
const USERNAME_RE = /^[A-Za-z0-9_.-]{3,64}$/;
const MIN_PASSWORD = 8;
const MAX_PASSWORD = 256;

export class AccountError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

async function hashPassword(password, salt = randomBytes(16)) {
  const { N, r, p, keylen, maxmem } = SCRYPT;
  const key = await scryptAsync(password, salt, keylen, { N, r, p, maxmem });
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

async function passwordMatches(password, stored) {
  const [, N, r, p, salt, key] = stored.split('$');
  const expected = Buffer.from(key, 'base64');
  const actual = await scryptAsync(password, Buffer.from(salt, 'base64'), expected.length, {
    N: Number(N), r: Number(r), p: Number(p), maxmem: SCRYPT.maxmem,
  });
  return timingSafeEqual(actual, expected);
}

/** Check a username/password pair's shape; throws AccountError('bad_request') naming the problem. */
export function validateCredentials(body) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new AccountError('bad_request', 'body must be a JSON object {username, password}');
  }
  const { username, password } = body;
  if (typeof username !== 'string' || !USERNAME_RE.test(username)) {
    throw new AccountError('bad_request', "'username' must be 3 to 64 letters, digits, '_', '.' or '-'");
  }
  if (typeof password !== 'string' || password.length < MIN_PASSWORD || password.length > MAX_PASSWORD) {
    throw new AccountError('bad_request', `'password' must be a string of ${MIN_PASSWORD} to ${MAX_PASSWORD} characters`);
  }
  return { username, password };
}

/** The registered users of this process. */
export class UserStore {
  /** At most `maxUsers` accounts (memory stays bounded until the MongoDB store arrives). */
  constructor({ maxUsers = 10_000 } = {}) {
    this.maxUsers = maxUsers;
    this.byName = new Map(); // lower-cased username → {id, username, passwordHash}
    this.byIdMap = new Map();
    // Unknown usernames are checked against this, so a login takes as long
    // whether or not the account exists.
    this.dummyHash = hashPassword(randomBytes(16).toString('hex'));
  }

  /** Create an account; throws AccountError('conflict') if the name is taken (case-insensitively). */
  async register(username, password) {
    const key = username.toLowerCase();
    if (this.byName.has(key)) throw new AccountError('conflict', `username '${username}' is taken`);
    if (this.byName.size >= this.maxUsers) {
      throw new AccountError('registration_full', `this demo holds at most ${this.maxUsers} accounts`);
    }
    const passwordHash = await hashPassword(password);
    // Two registrations of one name can race across the await: first wins.
    if (this.byName.has(key)) throw new AccountError('conflict', `username '${username}' is taken`);
    if (this.byName.size >= this.maxUsers) {
      throw new AccountError('registration_full', `this demo holds at most ${this.maxUsers} accounts`);
    }
    const user = { id: randomUUID(), username, passwordHash };
    this.byName.set(key, user);
    this.byIdMap.set(user.id, user);
    return publicUser(user);
  }

  /** The user if `password` is theirs, else null (same work either way). */
  async authenticate(username, password) {
    const user = this.byName.get(username.toLowerCase());
    const matches = await passwordMatches(password, user ? user.passwordHash : await this.dummyHash);
    return user && matches ? publicUser(user) : null;
  }

  /** The public part of user `id`, or undefined. */
  byId(id) {
    const user = this.byIdMap.get(id);
    return user && publicUser(user);
  }
}

function publicUser({ id, username }) {
  return { id, username };
}
