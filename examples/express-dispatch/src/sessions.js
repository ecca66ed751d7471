// Sign-in sessions: a random id in an httpOnly cookie, the user it stands for in memory.
import { randomBytes } from 'node:crypto';

export const SESSION_COOKIE = 'sid';

/** Read one cookie from a request's Cookie header (undefined when absent). */
export function readCookie(req, name) {
  const header = req.get('cookie');
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * Sessions of this process, each expiring `ttlSeconds` after sign-in, at most
 * `maxSessions` at once (the oldest go first), so memory stays bounded.
 */
export class SessionStore {
  constructor({ ttlSeconds, maxSessions = 100_000, secureCookie = false, now = () => Date.now() }) {
    this.ttlMs = ttlSeconds * 1000;
    this.maxSessions = maxSessions;
    this.secureCookie = secureCookie;
    this.now = now;
    this.sessions = new Map(); // id → {userId, expiresAt}; insertion order = age
  }

  /** Start a session for `userId` and set its cookie on `res`. */
  start(res, userId) {
    const id = randomBytes(32).toString('base64url');
    this.sessions.set(id, { userId, expiresAt: this.now() + this.ttlMs });
    while (this.sessions.size > this.maxSessions) this.sessions.delete(this.sessions.keys().next().value);
    res.cookie(SESSION_COOKIE, id, {
      httpOnly: true, sameSite: 'lax', secure: this.secureCookie, path: '/', maxAge: this.ttlMs,
    });
  }

  /** The user id of the request's live session, or undefined. */
  userIdOf(req) {
    const id = readCookie(req, SESSION_COOKIE);
    const session = id && this.sessions.get(id);
    if (!session) return undefined;
    if (session.expiresAt <= this.now()) {
      this.sessions.delete(id);
      return undefined;
    }
    return session.userId;
  }

  /** End the request's session (if any) and clear its cookie. */
  end(req, res) {
    const id = readCookie(req, SESSION_COOKIE);
    if (id) this.sessions.delete(id);
    res.clearCookie(SESSION_COOKIE, { httpOnly: true, sameSite: 'lax', secure: this.secureCookie, path: '/' });
  }
}
