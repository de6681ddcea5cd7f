// @ts-check
/**
 * A strict JSON reader for what a verifier reads from a token (claims,
 * footer, certificate), refusing what serde_json refuses where JSON.parse
 * is lenient: duplicate object keys, lone surrogates in strings, nesting
 * deeper than 128, and numbers the Rust types cannot hold (none of those
 * documents has a non-integer number, so a fraction or an exponent is
 * refused; so is an integer outside i64::MIN..=u64::MAX). Values are
 * returned as JSON.parse returns them.
 */

const DEPTH_MAX = 128;
const I64_MIN = -(2n ** 63n);
const U64_MAX = 2n ** 64n - 1n;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

export class StrictJsonError extends Error {}

/**
 * Options: `bigints` returns integers outside the safe range as BigInt (so
 * a caller can check them against i64/u64 bounds exactly); `lenient`
 * accepts what serde_json accepts in values it ignores (duplicate keys
 * other than `strictKeys` at the top level, any number, lone surrogates),
 * for reading one field of an otherwise unchecked document.
 * @param {string} text
 * @param {{bigints?: boolean, lenient?: boolean, strictKeys?: string[]}} [options]
 * @returns {any}
 */
export function parseStrictJson(text, options = {}) {
  const lenient = options.lenient === true;
  const strictKeys = new Set(options.strictKeys ?? []);
  let i = 0;
  const fail = (/** @type {string} */ why) => {
    throw new StrictJsonError(`${why} at position ${i}`);
  };
  const ws = () => {
    while (i < text.length) {
      const c = text.charCodeAt(i);
      if (c === 32 || c === 9 || c === 10 || c === 13) i++;
      else break;
    }
  };
  const string = () => {
    const start = i;
    i++; // the opening quote
    for (;;) {
      if (i >= text.length) fail('EOF while parsing a string');
      const c = text.charCodeAt(i);
      if (c === 34) break;
      if (c === 92) i += 2;
      else if (c < 32) fail('control character in a string');
      else i++;
    }
    i++;
    /** @type {string} */
    let s;
    try {
      s = JSON.parse(text.slice(start, i));
    } catch (e) {
      return fail(`invalid string: ${/** @type {Error} */ (e).message}`);
    }
    if (!lenient && LONE_SURROGATE.test(s)) fail('lone surrogate in a string');
    return s;
  };
  const number = () => {
    const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(i, i + 400));
    if (!m) return fail('invalid number');
    i += m[0].length;
    const n = Number(m[0]);
    if (lenient) return n;
    if (m[2] !== undefined || m[3] !== undefined) fail('invalid type: floating point, expected an integer');
    if (!Number.isSafeInteger(n)) {
      const big = BigInt(m[0]);
      if (big < I64_MIN || big > U64_MAX) fail('number out of range');
      if (options.bigints) return big;
    }
    return n;
  };
  /** @param {number} depth @returns {any} */
  const value = (depth) => {
    ws();
    if (i >= text.length) fail('EOF while parsing a value');
    const c = text[i];
    if (c === '{') {
      if (depth >= DEPTH_MAX) fail('recursion limit exceeded');
      i++;
      /** @type {Record<string, any>} */
      const obj = {};
      const seen = new Set();
      ws();
      if (text[i] === '}') {
        i++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('key must be a string');
        const key = string();
        if (seen.has(key) && (!lenient || (depth === 0 && strictKeys.has(key)))) fail(`duplicate field \`${key.slice(0, 64)}\``);
        seen.add(key);
        ws();
        if (text[i] !== ':') fail('expected `:`');
        i++;
        const v = value(depth + 1);
        Object.defineProperty(obj, key, { value: v, enumerable: true, writable: true, configurable: true });
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return obj;
        }
        fail('expected `,` or `}`');
      }
    }
    if (c === '[') {
      if (depth >= DEPTH_MAX) fail('recursion limit exceeded');
      i++;
      const arr = [];
      ws();
      if (text[i] === ']') {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          return arr;
        }
        fail('expected `,` or `]`');
      }
    }
    if (c === '"') return string();
    if (c === '-' || (c >= '0' && c <= '9')) return number();
    if (text.startsWith('true', i)) { i += 4; return true; }
    if (text.startsWith('false', i)) { i += 5; return false; }
    if (text.startsWith('null', i)) { i += 4; return null; }
    return fail('expected value');
  };
  const v = value(0);
  ws();
  if (i !== text.length) fail('trailing characters');
  return v;
}

/**
 * UTF-8 bytes (fatal on invalid sequences) to a strict JSON value.
 * @param {Uint8Array} bytes
 * @param {{bigints?: boolean, lenient?: boolean, strictKeys?: string[]}} [options]
 */
export function parseStrictJsonBytes(bytes, options) {
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new StrictJsonError('invalid UTF-8');
  }
  return parseStrictJson(text, options);
}

/**
 * `v` with every BigInt made a Number (after its exact value was checked).
 * @param {any} v
 * @returns {any}
 */
export function bigintsToNumbers(v) {
  if (typeof v === 'bigint') return Number(v);
  if (Array.isArray(v)) return v.map(bigintsToNumbers);
  if (v !== null && typeof v === 'object') {
    for (const k of Object.keys(v)) v[k] = bigintsToNumbers(v[k]);
  }
  return v;
}
