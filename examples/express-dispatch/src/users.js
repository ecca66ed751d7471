// Accounts in MongoDB: usernames and scrypt password hashes.
import { randomBytes, randomUUID, scrypt, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import { DUPLICATE_KEY } from './db.js';

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

/** The registered users, in MongoDB's `users` collection: `{_id, username, username_lower, password_hash, created_at}`. */
export class UserStore {
  constructor({ collection }) {
    this.users = collection;
    // Unknown usernames are checked against this, so a login takes as long
    // whether or not the account exists.
    this.dummyHash = hashPassword(randomBytes(16).toString('hex'));
  }

  /** Create an account; throws AccountError('conflict') if the name is taken (case-insensitively). */
  async register(username, password) {
    const user = {
      _id: randomUUID(),
      username,
      username_lower: username.toLowerCase(),
      password_hash: await hashPassword(password),
      created_at: new Date(),
    };
    try {
      await this.users.insertOne(user);
    } catch (err) {
      // The unique index on username_lower decides races between two registrations of one name.
      if (err?.code === DUPLICATE_KEY) throw new AccountError('conflict', `username '${username}' is taken`);
      throw err;
    }
    return publicUser(user);
  }

  /** The user if `password` is theirs, else null (same work either way). */
  async authenticate(username, password) {
    const user = await this.users.findOne({ username_lower: username.toLowerCase() });
    // An account without a password (the demo's seeded user) cannot sign in.
    const usable = typeof user?.password_hash === 'string' && user.password_hash.startsWith('scrypt$');
    const matches = await passwordMatches(password, usable ? user.password_hash : await this.dummyHash);
    return usable && matches ? publicUser(user) : null;
  }

  /** The public part of user `id`, or undefined. */
  async byId(id) {
    if (typeof id !== 'string') return undefined;
    const user = await this.users.findOne({ _id: id }, { projection: { username: 1 } });
    return user ? publicUser(user) : undefined;
  }
}

function publicUser({ _id, username }) {
  return { id: _id, username };
}
