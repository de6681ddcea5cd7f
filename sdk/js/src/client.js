// @ts-check
/**
 * The remote client: the HTTP/JSON check API of a region's nodes
 * (sdk/PROTOCOL.md §1), with failover.
 *
 * Transport: `node:https` (or `node:http` for `http://` endpoints of nodes
 * run with `insecure_plaintext`) with one keep-alive Agent per client, so a
 * private CA can be given (`ca`/`caFile`); Node's global fetch cannot take
 * one without undici. Certificates are always verified: against `ca` when
 * given, else against Node's CA store.
 *
 * Failover: a call starts with the node that answered last and tries each
 * node of the region once, in order. It moves on after a connection error,
 * a timeout (`timeoutMs` per attempt) or a 502/503/504; it stops at any
 * other answer: a decision, or a 4xx (never retried: another node would
 * say the same).
 */

import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import {
  ConfigError, InvalidRequestError, ProtocolError, UnavailableError, problemClass,
} from './errors.js';

/** Most checks in one batch (the gRPC BatchCheck limit). */
export const BATCH_CHECKS_MAX = 128;
/** Most units one check may consume. */
export const CONSUME_MAX = 1_000_000_000;
/** Default time one attempt (one node) may take, in ms. */
export const TIMEOUT_MS_DEFAULT = 2000;
/** Largest response body read, in bytes. */
export const RESPONSE_BYTES_MAX = 8 * 1024 * 1024;
/** Most endpoints one client takes. */
export const ENDPOINTS_MAX = 64;

const RETRY_STATUSES = new Set([502, 503, 504]);

/**
 * @typedef {{
 *   account: string, subject?: string|null, feature: string, consume?: number,
 *   ip?: string|null, location?: any,
 *   atLeastRevision?: number|null, idempotencyKey?: string|null, explain?: boolean,
 * }} CheckRequest
 */

/** A new idempotency key: 128 random bits in hex. */
export function newIdempotencyKey() {
  return randomBytes(16).toString('hex');
}

/**
 * The wire body of one check (snake_case, only the fields PROTOCOL.md
 * lists: a node refuses unknown ones).
 * @param {CheckRequest} c
 */
export function checkBody(c) {
  if (c == null || typeof c !== 'object') throw new InvalidRequestError({ status: 400, code: 'INVALID_ARGUMENT', detail: 'a check must be an object' });
  if (typeof c.account !== 'string' || c.account === '') throw invalid('account is required');
  if (typeof c.feature !== 'string' || c.feature === '') throw invalid('feature is required');
  if (c.ip != null && c.location != null) throw invalid('give either ip or location, not both');
  const consume = c.consume ?? 0;
  if (!Number.isSafeInteger(consume) || consume < 0 || consume > CONSUME_MAX) throw invalid(`consume must be 0..=${CONSUME_MAX}`);
  /** @type {Record<string, unknown>} */
  const body = { account: c.account, feature: c.feature };
  if (c.subject != null) body.subject = c.subject;
  if (consume > 0) body.consume = consume;
  if (c.ip != null) body.ip = c.ip;
  if (c.location != null) {
    const l = c.location;
    /** @type {Record<string, unknown>} */
    const loc = {};
    if (l.country != null) loc.country = l.country;
    if (l.continent != null) loc.continent = l.continent;
    if (Array.isArray(l.subdivisions) && l.subdivisions.length > 0) loc.subdivisions = l.subdivisions;
    const anon = l.anonymous_network ?? l.anonymousNetwork;
    if (anon != null) loc.anonymous_network = anon === true;
    else if (l.anonymous && typeof l.anonymous === 'object') {
      loc.anonymous_network = Object.values(l.anonymous).some((v) => v === true);
    }
    body.location = loc;
  }
  const atLeast = c.atLeastRevision ?? /** @type {any} */ (c).at_least_revision;
  if (atLeast != null) body.at_least_revision = atLeast;
  const key = c.idempotencyKey ?? /** @type {any} */ (c).idempotency_key;
  if (key != null) body.idempotency_key = key;
  else if (consume > 0) body.idempotency_key = newIdempotencyKey();
  if (c.explain) body.explain = true;
  return body;
}

/** @param {string} detail */
function invalid(detail) {
  return new InvalidRequestError({ status: 400, code: 'INVALID_ARGUMENT', detail });
}

/**
 * @typedef {{
 *   endpoints: string[],
 *   credential?: string|null,
 *   ca?: string|Buffer|null,
 *   caFile?: string|null,
 *   timeoutMs?: number,
 *   deadlineMs?: number|null,
 *   userAgent?: string,
 *   maxSockets?: number,
 * }} ClientOptions
 */

/** A region's nodes, asked over HTTP/JSON. */
export class Client {
  /** @param {ClientOptions} options */
  constructor(options) {
    if (!options || !Array.isArray(options.endpoints) || options.endpoints.length === 0) {
      throw new ConfigError('at least one endpoint is required');
    }
    if (options.endpoints.length > ENDPOINTS_MAX) throw new ConfigError(`at most ${ENDPOINTS_MAX} endpoints`);
    /** @type {URL[]} */
    this.urls = options.endpoints.map((e) => {
      let url;
      try {
        url = new URL(e);
      } catch {
        throw new ConfigError(`endpoint ${JSON.stringify(e)} is not a URL`);
      }
      if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new ConfigError(`endpoint ${e}: https:// or http:// only`);
      return url;
    });
    const schemes = new Set(this.urls.map((u) => u.protocol));
    if (schemes.size > 1) throw new ConfigError("one client's endpoints all use the same scheme");
    /** The endpoints as given (without a trailing slash). */
    this.endpoints = this.urls.map((u) => u.origin + u.pathname.replace(/\/+$/, ''));
    this.secure = this.urls[0].protocol === 'https:';
    let ca = options.ca ?? null;
    if (options.caFile) {
      try {
        ca = readFileSync(options.caFile);
      } catch (e) {
        throw new ConfigError(`CA file ${options.caFile}: ${/** @type {Error} */ (e).message}`);
      }
    }
    if (ca != null && !this.secure) throw new ConfigError('a CA is for https:// endpoints');
    const credential = options.credential ?? null;
    if (credential != null && !/^tgc_[!-~]+$/.test(credential)) {
      throw new ConfigError('the credential must look like tgc_<id>.<secret>');
    }
    this.credential = credential;
    this.timeoutMs = options.timeoutMs ?? TIMEOUT_MS_DEFAULT;
    if (!(this.timeoutMs > 0)) throw new ConfigError('timeoutMs must be above zero');
    /** Bound on a whole call, failovers included (ms); null: none. */
    this.deadlineMs = options.deadlineMs ?? null;
    if (this.deadlineMs != null && !(this.deadlineMs > 0)) throw new ConfigError('deadlineMs must be above zero');
    this.userAgent = options.userAgent ?? 'tollgate-sdk-js/0.1.0';
    const agentOptions = { keepAlive: true, maxSockets: options.maxSockets ?? 64 };
    /** @type {http.Agent} */
    this.agent = this.secure
      ? new https.Agent({ ...agentOptions, ...(ca != null ? { ca } : {}) })
      : new http.Agent(agentOptions);
    /** Index of the endpoint that answered last. */
    this.preferred = 0;
  }

  /** Releases the keep-alive connections. */
  close() {
    this.agent.destroy();
  }

  /**
   * One check, with failover. A denial is a decision (`allowed: false`),
   * not an error.
   * @param {CheckRequest} request
   * @param {{timeoutMs?: number, deadlineMs?: number, signal?: AbortSignal}} [options]
   */
  async check(request, options = {}) {
    const body = checkBody(request);
    const { json, endpoint } = await this.call('POST', '/v1/check', body, options);
    if (json == null || typeof json !== 'object' || typeof json.reason !== 'string') {
      throw new ProtocolError('the answer to a check has no reason', endpoint);
    }
    json.endpoint = endpoint;
    if (body.idempotency_key != null) json.idempotency_key = body.idempotency_key;
    return json;
  }

  /**
   * Up to 128 checks in one request, answered at one revision; each result
   * is `{decision}` or `{error: {code, message}}`, in request order.
   * @param {CheckRequest[]} checks
   * @param {{atLeastRevision?: number|null, timeoutMs?: number, deadlineMs?: number, signal?: AbortSignal}} [options]
   */
  async checkBatch(checks, options = {}) {
    if (!Array.isArray(checks)) throw invalid('checks must be an array');
    if (checks.length > BATCH_CHECKS_MAX) throw invalid(`at most ${BATCH_CHECKS_MAX} checks in a batch, got ${checks.length}`);
    /** @type {Record<string, unknown>} */
    const body = { checks: checks.map((c) => checkBody(c)) };
    if (options.atLeastRevision != null) body.at_least_revision = options.atLeastRevision;
    const { json, endpoint } = await this.call('POST', '/v1/checks', body, options);
    if (json == null || !Array.isArray(json.results) || json.results.length !== checks.length) {
      throw new ProtocolError(`the answer to a batch of ${checks.length} has no matching results`, endpoint);
    }
    json.endpoint = endpoint;
    return json;
  }

  /**
   * Sends `body` to the region's nodes, from the preferred one on, until
   * one answers (see the module's failover rules).
   * @param {string} method @param {string} path @param {unknown} body
   * @param {{timeoutMs?: number, deadlineMs?: number, signal?: AbortSignal}} options
   * @returns {Promise<{json: any, endpoint: string, index: number}>}
   */
  async call(method, path, body, options) {
    const payload = body === undefined ? null : Buffer.from(JSON.stringify(body));
    const n = this.endpoints.length;
    const start = this.preferred;
    const deadlineMs = options.deadlineMs ?? this.deadlineMs;
    const deadline = deadlineMs != null ? Date.now() + deadlineMs : null;
    /** @type {{endpoint: string, code: string, status: number|null, message: string}[]} */
    const attempts = [];
    for (let i = 0; i < n; i++) {
      const index = (start + i) % n;
      const endpoint = this.endpoints[index];
      options.signal?.throwIfAborted();
      let timeoutMs = options.timeoutMs ?? this.timeoutMs;
      if (deadline !== null) {
        const left = deadline - Date.now();
        if (left <= 0) {
          attempts.push({ endpoint, status: null, code: 'TIMEOUT', message: `${endpoint}: not tried, the call's deadline of ${deadlineMs} ms passed` });
          break;
        }
        timeoutMs = Math.min(timeoutMs, left);
      }
      let res;
      try {
        res = await this.request(index, method, path, payload, { timeoutMs, signal: options.signal });
      } catch (e) {
        if (options.signal?.aborted) throw e;
        const err = /** @type {any} */ (e);
        attempts.push({
          endpoint, status: null,
          code: err.code === 'TIMEOUT' ? 'TIMEOUT' : 'CONNECTION',
          message: `${endpoint}: ${err.message}`,
        });
        continue;
      }
      if (res.status >= 200 && res.status < 300) {
        this.preferred = index;
        let json;
        try {
          json = JSON.parse(res.body.toString('utf8'));
        } catch {
          throw new ProtocolError(`${endpoint} answered ${res.status} with a body that is not JSON`, endpoint);
        }
        return { json, endpoint, index };
      }
      const problem = parseProblem(res);
      if (RETRY_STATUSES.has(res.status)) {
        attempts.push({
          endpoint, status: res.status, code: problem.code,
          message: `${endpoint}: ${res.status} ${problem.code}${problem.detail ? `: ${problem.detail}` : ''}`,
        });
        continue;
      }
      // A node answered: it is up, whatever it said.
      this.preferred = index;
      const Cls = problemClass(res.status);
      throw new Cls({ ...problem, status: res.status, endpoint });
    }
    throw new UnavailableError(attempts);
  }

  /**
   * One HTTP exchange with one endpoint.
   * @param {number} index @param {string} method @param {string} path
   * @param {Buffer|null} payload
   * @param {{timeoutMs: number, signal?: AbortSignal, headers?: Record<string, string>}} options
   * @returns {Promise<{status: number, headers: http.IncomingHttpHeaders, body: Buffer}>}
   */
  request(index, method, path, payload, options) {
    const url = new URL(this.endpoints[index] + path);
    const mod = this.secure ? https : http;
    /** @type {Record<string, string|number>} */
    const headers = { accept: 'application/json', 'user-agent': this.userAgent, ...(options.headers ?? {}) };
    if (this.credential) headers.authorization = `Bearer ${this.credential}`;
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = payload.length;
    }
    return new Promise((resolve, reject) => {
      let settled = false;
      const done = (/** @type {any} */ err, /** @type {any} */ value) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve(value);
      };
      const req = mod.request(url, { method, headers, agent: this.agent }, (res) => {
        /** @type {Buffer[]} */
        const chunks = [];
        let size = 0;
        res.on('data', (/** @type {Buffer} */ chunk) => {
          size += chunk.length;
          if (size > RESPONSE_BYTES_MAX) {
            req.destroy(new Error(`the response is larger than ${RESPONSE_BYTES_MAX} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => done(null, { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', (e) => done(e));
        res.on('aborted', () => done(new Error('the response was cut short')));
      });
      const timer = setTimeout(() => {
        const e = Object.assign(new Error(`no answer within ${options.timeoutMs} ms`), { code: 'TIMEOUT' });
        done(e);
        req.destroy(e);
      }, options.timeoutMs);
      const onAbort = () => {
        const e = options.signal?.reason ?? new Error('aborted');
        done(e);
        req.destroy(e);
      };
      options.signal?.addEventListener('abort', onAbort, { once: true });
      req.on('error', (e) => done(e));
      if (payload) req.end(payload);
      else req.end();
    });
  }

  /**
   * Opens a streaming GET (the watch stream) on one endpoint; resolves
   * with the response once its head arrived.
   * @param {number} index @param {string} path @param {Record<string, string>} headers
   * @param {number} timeoutMs time allowed for the head
   * @param {(req: http.ClientRequest) => void} [onRequest] told of the request at once (to cancel it)
   * @returns {Promise<{req: http.ClientRequest, res: http.IncomingMessage}>}
   */
  openStream(index, path, headers, timeoutMs, onRequest) {
    const url = new URL(this.endpoints[index] + path);
    const mod = this.secure ? https : http;
    /** @type {Record<string, string>} */
    const h = { accept: 'text/event-stream', 'cache-control': 'no-cache', 'user-agent': this.userAgent, ...headers };
    if (this.credential) h.authorization = `Bearer ${this.credential}`;
    return new Promise((resolve, reject) => {
      const req = mod.request(url, { method: 'GET', headers: h, agent: this.agent }, (res) => {
        clearTimeout(timer);
        resolve({ req, res });
      });
      const timer = setTimeout(() => {
        const e = Object.assign(new Error(`the stream did not open within ${timeoutMs} ms`), { code: 'TIMEOUT' });
        req.destroy(e);
        reject(e);
      }, timeoutMs);
      req.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      onRequest?.(req);
      req.end();
    });
  }
}

/**
 * The problem document of a failed answer (or what can be made of a body
 * that is not one).
 * @param {{status: number, headers: http.IncomingHttpHeaders, body: Buffer}} res
 */
export function parseProblem(res) {
  /** @type {any} */
  let doc = null;
  try {
    doc = JSON.parse(res.body.toString('utf8'));
  } catch {
    doc = null;
  }
  const retryAfterHeader = res.headers['retry-after'];
  const retryAfter = retryAfterHeader != null && /^\d+$/.test(String(retryAfterHeader)) ? Number(retryAfterHeader) : null;
  const fallback = {
    400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED', 404: 'NOT_FOUND',
    405: 'METHOD_NOT_ALLOWED', 413: 'MESSAGE_TOO_LARGE', 415: 'UNSUPPORTED_MEDIA_TYPE',
    429: 'RATE_LIMITED', 502: 'UNAVAILABLE', 503: 'UNAVAILABLE', 504: 'TIMEOUT',
  };
  const code = doc && typeof doc.code === 'string' ? doc.code
    : /** @type {Record<number, string>} */ (fallback)[res.status] ?? `HTTP_${res.status}`;
  return {
    code,
    detail: doc && typeof doc.detail === 'string' ? doc.detail : (doc ? null : truncate(res.body.toString('utf8'))),
    title: doc && typeof doc.title === 'string' ? doc.title : null,
    type: doc && typeof doc.type === 'string' ? doc.type : null,
    retryAfter,
  };
}

/** @param {string} s */
function truncate(s) {
  const t = s.trim();
  return t === '' ? null : t.slice(0, 200);
}
