// Subscription tokens for the pushserver: HS256 JWTs naming the tasks a browser may watch.
import jwt from 'jsonwebtoken';

/**
 * Sign a token letting its bearer watch `taskIds` for `ttlSeconds`.
 * Claims follow DESIGN.md: `tasks`, optional `sub`, `exp` (and `iat`).
 */
export function mintToken(secret, taskIds, { ttlSeconds = 900, sub } = {}) {
  const claims = { tasks: [...taskIds] };
  if (sub) claims.sub = String(sub);
  return jwt.sign(claims, secret, { algorithm: 'HS256', expiresIn: ttlSeconds });
}

/** Verify a token the way the pushserver does (HS256 only); returns its claims. */
export function verifyToken(secret, token) {
  return jwt.verify(token, secret, { algorithms: ['HS256'] });
}
