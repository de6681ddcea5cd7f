// @ts-check
/**
 * PASETO `v4.public` (crates/tollgate-token, and the PASETO v4 spec):
 * Ed25519 over PAE(header, message, footer, implicit assertion).
 *
 * - The only header accepted is exactly `v4.public.`.
 * - Decoding is canonical: unpadded base64url only, no non-zero trailing
 *   bits, no empty footer section, no extra sections; at most 64 KiB.
 * - Signatures are checked as ed25519-dalek's `verify_strict` checks them:
 *   Node's Ed25519 (OpenSSL: canonical S, the R encoding compared byte for
 *   byte), and besides, small-order keys and small-order R refused.
 *
 * Error codes are the Rust crate's `TokenError::code()`.
 */

import { createPublicKey, createPrivateKey, verify as cryptoVerify, sign as cryptoSign } from 'node:crypto';
import { LicenseError } from './errors.js';

/** The one header signed and accepted. */
export const HEADER = 'v4.public.';
/** The largest token accepted, in bytes. */
export const TOKEN_BYTES_MAX = 64 * 1024;
const SIGNATURE_BYTES = 64;
const HEADER_BYTES = Buffer.from(HEADER);

// ---------------------------------------------------------------- base64url

const B64URL = /^[A-Za-z0-9_-]*$/;
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * Canonical unpadded base64url (the `base64` crate's URL_SAFE_NO_PAD):
 * `null` for any other spelling.
 * @param {string} text
 * @returns {Buffer|null}
 */
export function decodeBase64Url(text) {
  if (!B64URL.test(text)) return null;
  const rem = text.length % 4;
  if (rem === 1) return null;
  if (rem !== 0) {
    const last = ALPHABET.indexOf(text[text.length - 1]);
    // 2 chars carry 8 bits (4 spare), 3 chars carry 16 bits (2 spare).
    const spare = rem === 2 ? 0x0f : 0x03;
    if ((last & spare) !== 0) return null;
  }
  return Buffer.from(text, 'base64url');
}

/** @param {Uint8Array} bytes */
export function encodeBase64Url(bytes) {
  return Buffer.from(bytes).toString('base64url');
}

// ---------------------------------------------------------------- PAE

/**
 * PASETO pre-authentication encoding: the count of pieces, then each
 * piece's length and bytes, as LE64 with the top bit cleared.
 * @param {Uint8Array[]} pieces
 */
export function pae(pieces) {
  let len = 8;
  for (const p of pieces) len += 8 + p.length;
  const out = Buffer.alloc(len);
  let off = 0;
  const le64 = (/** @type {number} */ n) => {
    out.writeBigUInt64LE(BigInt(n) & 0x7fffffffffffffffn, off);
    off += 8;
  };
  le64(pieces.length);
  for (const p of pieces) {
    le64(p.length);
    out.set(p, off);
    off += p.length;
  }
  return out;
}

// ---------------------------------------------------------------- Ed25519 points

const P = (1n << 255n) - 19n;
const D = (-121665n * modPow(121666n, P - 2n, P)) % P + P;
/** y of the order-8 points (and p - it). */
const Y8 = 0x05fc536d880238b13933c6d305acdfd5f098eff289f4c345b027b2c28f95e826n;
const SMALL_ORDER_Y = new Set([0n, 1n, P - 1n, Y8, P - Y8]);

/** @param {bigint} b @param {bigint} e @param {bigint} m */
function modPow(b, e, m) {
  let r = 1n;
  b %= m;
  if (b < 0n) b += m;
  while (e > 0n) {
    if (e & 1n) r = (r * b) % m;
    b = (b * b) % m;
    e >>= 1n;
  }
  return r;
}

/** The y coordinate of a compressed point (sign bit cleared, reduced mod p). @param {Uint8Array} bytes */
function yOf(bytes) {
  let y = 0n;
  for (let i = 31; i >= 0; i--) y = (y << 8n) | BigInt(i === 31 ? bytes[i] & 0x7f : bytes[i]);
  return y % P;
}

/**
 * Whether 32 bytes decompress to a point of the curve (as
 * curve25519-dalek's `decompress`: x^2 = (y^2 - 1) / (d y^2 + 1) has a
 * root).
 * @param {Uint8Array} bytes
 */
export function isCurvePoint(bytes) {
  if (bytes.length !== 32) return false;
  const y = yOf(bytes);
  const y2 = (y * y) % P;
  const u = (y2 - 1n + P) % P;
  const v = (D * y2 + 1n) % P;
  if (v === 0n) return false;
  const x2 = (u * modPow(v, P - 2n, P)) % P;
  if (x2 === 0n) return true;
  return modPow(x2, (P - 1n) / 2n, P) === 1n;
}

/**
 * Whether a compressed point is of small order (the eight torsion points,
 * in any encoding): ed25519-dalek's `is_weak` / `is_small_order`.
 * @param {Uint8Array} bytes
 */
export function isSmallOrder(bytes) {
  return SMALL_ORDER_Y.has(yOf(bytes));
}

/**
 * An Ed25519 public key for Node's crypto, from its 32 raw bytes.
 * @param {Uint8Array} raw
 */
export function publicKeyObject(raw) {
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: encodeBase64Url(raw) }, format: 'jwk' });
}

/**
 * `verify_strict`: the signature over `message` under the key, with
 * small-order keys and small-order R refused.
 * @param {{raw: Uint8Array, key: import('node:crypto').KeyObject}} publicKey
 * @param {Uint8Array} message @param {Uint8Array} signature
 */
export function verifyStrict(publicKey, message, signature) {
  if (signature.length !== SIGNATURE_BYTES) return false;
  if (isSmallOrder(publicKey.raw) || isSmallOrder(signature.subarray(0, 32))) return false;
  try {
    return cryptoVerify(null, message, publicKey.key, signature);
  } catch {
    return false;
  }
}

/**
 * A public key ready for verification: validated (32 bytes, a curve point).
 * @param {Uint8Array} raw
 */
export function makePublicKey(raw) {
  return { raw: Uint8Array.from(raw), key: publicKeyObject(raw) };
}

// ---------------------------------------------------------------- tokens

/** @param {string} code @param {string} message */
function tokenError(code, message) {
  return new LicenseError(code, `license token format: ${message}`);
}

/**
 * Splits and decodes a token (spec, Verify steps 2-3); nothing verified.
 * @param {string} token
 * @returns {{message: Buffer, signature: Buffer, footer: Buffer}}
 */
export function decodeToken(token) {
  if (typeof token !== 'string' || token.length === 0) throw tokenError('token_empty', 'token is empty');
  const len = Buffer.byteLength(token, 'utf8');
  if (len > TOKEN_BYTES_MAX) {
    throw tokenError('token_too_long', `token is ${len} bytes, over the limit of ${TOKEN_BYTES_MAX} bytes`);
  }
  if (!token.startsWith(HEADER)) {
    throw tokenError('token_wrong_header', 'only "v4.public." is accepted (no other version or purpose, no other case)');
  }
  const body = token.slice(HEADER.length);
  const dot = body.indexOf('.');
  let payloadText = body;
  /** @type {string|null} */
  let footerText = null;
  if (dot !== -1) {
    const footer = body.slice(dot + 1);
    if (footer.includes('.')) throw tokenError('token_malformed_too_many_sections', "too many '.'-separated sections");
    if (footer === '') throw tokenError('token_malformed_empty_footer', 'footer section is present but empty');
    payloadText = body.slice(0, dot);
    footerText = footer;
  }
  const payload = decodeBase64Url(payloadText);
  if (payload === null) throw tokenError('token_malformed_payload_encoding', 'payload is not canonical unpadded base64url');
  if (payload.length < SIGNATURE_BYTES) {
    throw tokenError('token_malformed_payload_too_short', `payload is ${payload.length} bytes, shorter than the 64-byte signature`);
  }
  let footer = Buffer.alloc(0);
  if (footerText !== null) {
    const decoded = decodeBase64Url(footerText);
    if (decoded === null) throw tokenError('token_malformed_footer_encoding', 'footer is not canonical unpadded base64url');
    footer = decoded;
  }
  return {
    message: payload.subarray(0, payload.length - SIGNATURE_BYTES),
    signature: payload.subarray(payload.length - SIGNATURE_BYTES),
    footer,
  };
}

/**
 * Reads a token's footer WITHOUT verifying anything (to pick a key).
 * @param {string} token
 */
export function footerUnverified(token) {
  return decodeToken(token).footer;
}

/**
 * Verifies a `v4.public` token: its message and footer, authenticated.
 * Throws a `LicenseError` with a `token_*` code (`token_bad_signature` when
 * the signature does not verify).
 * @param {{raw: Uint8Array, key: import('node:crypto').KeyObject}} publicKey
 * @param {string} token
 * @param {{expectedFooter?: Uint8Array|null, implicit?: Uint8Array}} [options]
 */
export function verifyToken(publicKey, token, options = {}) {
  const { message, signature, footer } = decodeToken(token);
  if (options.expectedFooter != null) {
    const expected = Buffer.from(options.expectedFooter);
    if (expected.length !== footer.length || !expected.equals(footer)) {
      throw tokenError('token_footer_mismatch', 'token footer does not match the expected footer');
    }
  }
  const m2 = pae([HEADER_BYTES, message, footer, options.implicit ?? new Uint8Array(0)]);
  if (!verifyStrict(publicKey, m2, signature)) {
    throw new LicenseError('token_bad_signature', 'token signature does not verify');
  }
  return { message, footer };
}

/**
 * Signs `message` into a `v4.public` token with an Ed25519 secret key
 * (32-byte seed). For tests and tools; Tollgate tokens are issued by the
 * origin and the regions.
 * @param {Uint8Array} seed @param {Uint8Array} message
 * @param {Uint8Array} [footer] @param {Uint8Array} [implicit]
 */
export function signToken(seed, message, footer = new Uint8Array(0), implicit = new Uint8Array(0)) {
  const key = privateKeyObject(seed);
  const m2 = pae([HEADER_BYTES, message, footer, implicit]);
  const sig = cryptoSign(null, m2, key);
  let token = HEADER + encodeBase64Url(Buffer.concat([Buffer.from(message), sig]));
  if (footer.length > 0) token += `.${encodeBase64Url(footer)}`;
  return token;
}

/**
 * An Ed25519 private key from its 32-byte seed (PKCS#8 DER wrapping).
 * @param {Uint8Array} seed
 */
export function privateKeyObject(seed) {
  if (seed.length !== 32) throw new TypeError('an Ed25519 seed is 32 bytes');
  const prefix = Buffer.from('302e020100300506032b657004220420', 'hex');
  return createPrivateKey({ key: Buffer.concat([prefix, Buffer.from(seed)]), format: 'der', type: 'pkcs8' });
}

/**
 * The raw 32-byte public key of a seed.
 * @param {Uint8Array} seed
 */
export function publicKeyOfSeed(seed) {
  const jwk = createPublicKey(privateKeyObject(seed)).export({ format: 'jwk' });
  return Buffer.from(/** @type {string} */ (jwk.x), 'base64url');
}
