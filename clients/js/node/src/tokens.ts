// Subscription tokens for celery-pushserver: HS256 JWTs naming the tasks a client may watch.
import jwt from 'jsonwebtoken';
import { TokenOptionsError } from './errors.js';

/** The pushserver refuses secrets shorter than this many bytes, so minting refuses them too. */
export const MIN_SECRET_BYTES = 32;
/** The default lifetime of a token: 15 minutes. */
export const DEFAULT_TTL_SECONDS = 900;
const MAX_TTL_SECONDS = 7 * 24 * 3600;

/** Options of {@link mintToken}. */
export interface MintTokenOptions {
  /** The pushserver's signing secret (the first of PUSHSERVER_SECRET's list), at least 32 bytes. */
  secret: string;
  /** The task ids the bearer may watch; `["*"]` (alone) for every task. */
  tasks: readonly string[];
  /** The user the token is for (the `sub` claim). */
  sub?: string;
  /** Seconds until the token expires (default 900). */
  ttlSeconds?: number;
}

/** The claims celery-pushserver reads from a token (docs/protocol.md, "Tokens"). */
export interface TokenClaims {
  tasks: string[];
  sub?: string;
  exp: number;
  iat: number;
}

function checkSecret(secret: unknown): string {
  if (typeof secret !== 'string' || Buffer.byteLength(secret, 'utf8') < MIN_SECRET_BYTES) {
    throw new TokenOptionsError(
      `the secret must be a string of at least ${MIN_SECRET_BYTES} bytes (e.g. crypto.randomBytes(32).toString('hex')); the pushserver refuses shorter ones`,
    );
  }
  return secret;
}

/** Sign an HS256 token letting its bearer watch `tasks` for `ttlSeconds`. */
export function mintToken({ secret, tasks, sub, ttlSeconds = DEFAULT_TTL_SECONDS }: MintTokenOptions): string {
  checkSecret(secret);
  if (!Array.isArray(tasks) || tasks.length === 0 || !tasks.every((t) => typeof t === 'string' && t !== '')) {
    throw new TokenOptionsError('tasks must be a non-empty list of task ids');
  }
  if (tasks.includes('*') && tasks.length > 1) {
    // The server reads "*" as a wildcard only as the whole claim.
    throw new TokenOptionsError('"*" means every task only as the whole claim (tasks: ["*"]), not as one id among others');
  }
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_TTL_SECONDS) {
    throw new TokenOptionsError(`ttlSeconds must be an integer between 1 and ${MAX_TTL_SECONDS}, got ${String(ttlSeconds)}`);
  }
  if (sub !== undefined && (typeof sub !== 'string' || sub === '')) {
    throw new TokenOptionsError('sub must be a non-empty string when given');
  }
  const claims: Record<string, unknown> = { tasks: [...tasks] };
  if (sub !== undefined) claims.sub = sub;
  return jwt.sign(claims, secret, { algorithm: 'HS256', expiresIn: ttlSeconds });
}

/** Verify a token the way the pushserver does (HS256 only, `exp` required) and return its claims. */
export function verifyToken(secret: string, token: string): TokenClaims {
  const claims = jwt.verify(token, checkSecret(secret), { algorithms: ['HS256'] });
  if (typeof claims === 'string' || typeof claims.exp !== 'number' || !Array.isArray(claims.tasks)) {
    throw new TokenOptionsError('the token lacks the tasks or exp claim');
  }
  return claims as unknown as TokenClaims;
}
