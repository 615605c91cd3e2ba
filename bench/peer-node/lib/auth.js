'use strict';
// Passwords (scrypt, random salt, async so hashing never blocks the event loop) and
// HS256 access tokens (jsonwebtoken), valid for one hour.

const crypto = require('node:crypto');
const { promisify } = require('node:util');
const jwt = require('jsonwebtoken');

const scrypt = promisify(crypto.scrypt);
// Node's defaults (N=16384, r=8, p=1) spelled out so the stored string says what it is.
const SCRYPT = { N: 16384, r: 8, p: 1 };
const KEY_LEN = 64;
const TOKEN_TTL_SECONDS = 3600;

async function hashPassword(password) {
  const salt = crypto.randomBytes(16);
  const key = await scrypt(password, salt, KEY_LEN, SCRYPT);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

// A dummy hash to spend the same time on unknown users as on a wrong password.
let dummyHash = null;

async function verifyPassword(password, stored) {
  const known = typeof stored === 'string';
  if (!known) {
    dummyHash ??= await hashPassword(crypto.randomBytes(12).toString('hex'));
    stored = dummyHash;
  }
  const [scheme, N, r, p, salt, key] = stored.split('$');
  if (scheme !== 'scrypt') return false;
  const expected = Buffer.from(key, 'base64');
  const actual = await scrypt(password, Buffer.from(salt, 'base64'), expected.length, {
    N: Number(N), r: Number(r), p: Number(p),
  });
  return crypto.timingSafeEqual(actual, expected) && known;
}

function makeTokens(secret) {
  return {
    sign(user) {
      const userId = String(user.id);
      return jwt.sign({ userId, username: user.email, role: user.role }, secret, {
        algorithm: 'HS256',
        expiresIn: TOKEN_TTL_SECONDS,
        subject: userId,
      });
    },
    // → {userId, username, role} or null.
    verify(token) {
      if (typeof token !== 'string' || token.length === 0) return null;
      try {
        const c = jwt.verify(token, secret, { algorithms: ['HS256'] });
        if (typeof c.userId !== 'string' || typeof c.username !== 'string' || typeof c.role !== 'string') {
          return null;
        }
        return { userId: c.userId, username: c.username, role: c.role };
      } catch {
        return null;
      }
    },
    ttl: TOKEN_TTL_SECONDS,
  };
}

// "Bearer <jwt>" (scheme case-insensitive) or, where allowed, a bare token.
function bearer(value, allowBare) {
  if (typeof value !== 'string') return null;
  const m = /^\s*bearer\s+(\S+)\s*$/i.exec(value);
  if (m) return m[1];
  return allowBare ? value.trim() : null;
}

module.exports = { hashPassword, verifyPassword, makeTokens, bearer };
