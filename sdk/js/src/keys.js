// @ts-check
/**
 * Fetching the origin's public key set (`/.well-known/tollgate-keys.json`)
 * over verified TLS only: `http://` is refused (a key set fetched in clear
 * could be anyone's), redirects are not followed, the body is bounded.
 */

import https from 'node:https';
import { readFileSync } from 'node:fs';
import { ConfigError, ProtocolError, UnavailableError } from './errors.js';

/** Where an origin serves its public key set. */
export const KEY_SET_PATH = '/.well-known/tollgate-keys.json';
/** Largest key set read, in bytes. */
export const KEY_SET_BYTES_MAX = 1024 * 1024;

/**
 * GETs the key set at `url` (`https://<origin>/.well-known/tollgate-keys.json`,
 * or the origin's base URL, to which the path is added).
 * @param {string} url
 * @param {{ca?: string|Buffer|null, caFile?: string|null, timeoutMs?: number}} [options]
 * @returns {Promise<any>}
 */
export function fetchKeySet(url, options = {}) {
  if (typeof url !== 'string' || !url.startsWith('https://')) {
    return Promise.reject(new ConfigError(`${JSON.stringify(url)}: the key set is fetched over verified TLS only, so the URL must start with https://`));
  }
  const u = new URL(url);
  if (u.pathname === '/' || u.pathname === '') u.pathname = KEY_SET_PATH;
  let ca = options.ca ?? undefined;
  if (options.caFile) ca = readFileSync(options.caFile);
  const timeoutMs = options.timeoutMs ?? 5000;
  return new Promise((resolve, reject) => {
    const fail = (/** @type {Error} */ e) => {
      clearTimeout(timer);
      reject(e);
    };
    const req = https.request(u, { method: 'GET', ca, headers: { accept: 'application/json' } }, (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 500 || status === 429) {
        res.resume();
        fail(new UnavailableError([{ endpoint: u.href, code: `HTTP_${status}`, status, message: `${u.href}: HTTP ${status}` }]));
        return;
      }
      if (status !== 200) {
        res.resume();
        fail(new ProtocolError(`${u.href}: HTTP ${status}, not a key set (is this the origin's ${KEY_SET_PATH}?)`, u.href));
        return;
      }
      /** @type {Buffer[]} */
      const chunks = [];
      let size = 0;
      res.on('data', (/** @type {Buffer} */ c) => {
        size += c.length;
        if (size > KEY_SET_BYTES_MAX) {
          req.destroy();
          fail(new ProtocolError(`${u.href}: the key set is larger than ${KEY_SET_BYTES_MAX} bytes`, u.href));
          return;
        }
        chunks.push(c);
      });
      res.on('end', () => {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch {
          reject(new ProtocolError(`${u.href}: not a key set (not JSON)`, u.href));
        }
      });
      res.on('error', fail);
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new UnavailableError([{ endpoint: u.href, code: 'TIMEOUT', status: null, message: `${u.href}: no key set within ${timeoutMs} ms` }]));
    }, timeoutMs);
    req.on('error', (e) => fail(new UnavailableError([{ endpoint: u.href, code: 'CONNECTION', status: null, message: `${u.href}: ${e.message}` }])));
    req.end();
  });
}
