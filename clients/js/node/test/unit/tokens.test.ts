import { describe, expect, test } from 'vitest';
import jwt from 'jsonwebtoken';
import { mintToken, verifyToken, TokenOptionsError, MIN_SECRET_BYTES } from '../../src/index.js';

const secret = 'k'.repeat(MIN_SECRET_BYTES);

describe('mintToken', () => {
  test('HS256 with the claims of docs/protocol.md: tasks, sub, exp (and iat)', () => {
    const token = mintToken({ secret, tasks: ['t-1', 't-2'], sub: 'user-7', ttlSeconds: 60 });
    const [header] = token.split('.');
    expect(JSON.parse(Buffer.from(header!, 'base64url').toString())).toEqual({ alg: 'HS256', typ: 'JWT' });
    const claims = verifyToken(secret, token);
    expect(claims.tasks).toEqual(['t-1', 't-2']);
    expect(claims.sub).toBe('user-7');
    expect(claims.exp - claims.iat).toBe(60);
    expect(Math.abs(claims.iat - Date.now() / 1000)).toBeLessThan(2);
    expect(Object.keys(claims).sort()).toEqual(['exp', 'iat', 'sub', 'tasks']);
  });

  test('defaults: no sub, 900 s', () => {
    const claims = verifyToken(secret, mintToken({ secret, tasks: ['t'] }));
    expect(claims.sub).toBeUndefined();
    expect(claims.exp - claims.iat).toBe(900);
  });

  test('a secret shorter than 32 bytes is refused, as the pushserver refuses it', () => {
    expect(() => mintToken({ secret: 'change-me', tasks: ['t'] })).toThrow(TokenOptionsError);
    expect(() => mintToken({ secret: 'x'.repeat(31), tasks: ['t'] })).toThrow(/at least 32 bytes/);
    // Bytes, not characters: 16 two-byte characters are 32 bytes.
    expect(() => mintToken({ secret: 'é'.repeat(16), tasks: ['t'] })).not.toThrow();
  });

  test('bad tasks, sub and TTL are refused with a clear error', () => {
    expect(() => mintToken({ secret, tasks: [] })).toThrow(/non-empty list/);
    expect(() => mintToken({ secret, tasks: [''] })).toThrow(/non-empty list/);
    expect(() => mintToken({ secret, tasks: ['*', 'abc'] })).toThrow(/whole claim/);
    expect(verifyToken(secret, mintToken({ secret, tasks: ['*'] })).tasks).toEqual(['*']);
    expect(() => mintToken({ secret, tasks: ['t'], ttlSeconds: 0 })).toThrow(/ttlSeconds/);
    expect(() => mintToken({ secret, tasks: ['t'], ttlSeconds: 1.5 })).toThrow(/ttlSeconds/);
    expect(() => mintToken({ secret, tasks: ['t'], sub: '' })).toThrow(/sub/);
  });

  test('verifyToken refuses another secret, another algorithm and a token without exp', () => {
    const token = mintToken({ secret, tasks: ['t'] });
    expect(() => verifyToken('o'.repeat(32), token)).toThrow(/invalid signature/);
    const hs512 = jwt.sign({ tasks: ['t'] }, secret, { algorithm: 'HS512', expiresIn: 60 });
    expect(() => verifyToken(secret, hs512)).toThrow(/invalid algorithm/);
    const noExp = jwt.sign({ tasks: ['t'] }, secret, { algorithm: 'HS256' });
    expect(() => verifyToken(secret, noExp)).toThrow(TokenOptionsError);
  });
});
