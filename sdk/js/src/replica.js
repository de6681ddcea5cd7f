// @ts-check
/**
 * The local replica (crates/tollgate-sdk/src/replica.rs): a copy of one
 * account's (or every account's) entitlements and the catalog, kept current
 * by the `GET /v1/watch` Server-Sent Events stream of a region's nodes, that
 * answers checks in-process with a port of the engine the nodes run.
 *
 * - Views are rebuilt when data changes (only the accounts touched, all of
 *   them when the catalog changes), so a check reads a prepared index.
 * - The stream is resumed on the next node (with `Last-Event-ID` and
 *   `from_revision`) when it ends, fails or stays silent past the idle
 *   timeout; after a failure without data, with a doubling backoff.
 * - Staleness: a heartbeat says how stale the node was when sent, and a
 *   change record was committed at the origin when it says; the replica
 *   keeps the latest origin contact this implies, and the offline policies
 *   are judged by `now - contact`, as on a node.
 * - What only the region can answer is refused (`NeedsRegionError`):
 *   consumption, an IP address, an account outside the scope. Decisions
 *   that read usage counters or floating seats are flagged `approximate`.
 */

import { Store, Dirty } from './store.js';
import { SseParser } from './sse.js';
import { decide, geoFacts, explain, NO_LIVE_STATE, secondsSince, UNKNOWN_LOCATION } from './engine.js';
import { ConfigError, NeedsRegionError, ProtocolError, RevisionNotAppliedError, TimeoutError } from './errors.js';
import { parseProblem } from './client.js';

/** Defaults (as the Rust replica's). */
export const RECONNECT_BACKOFF_MIN_MS_DEFAULT = 50;
export const RECONNECT_BACKOFF_MAX_MS_DEFAULT = 5000;
export const IDLE_TIMEOUT_MS_DEFAULT = 30_000;
export const OBJECTS_MAX_DEFAULT = 1_000_000;

/** Unix seconds now. */
const systemClock = () => Math.floor(Date.now() / 1000);

/**
 * @typedef {import('./engine.js').Decision & {
 *   approximate: boolean,
 *   staleness: {origin_seconds: number|null, since_region_ms: number|null},
 * }} LocalDecision
 */

/**
 * @typedef {{
 *   client?: import('./client.js').Client,
 *   scope?: string|null,
 *   clock?: () => number,
 *   reconnectBackoffMinMs?: number,
 *   reconnectBackoffMaxMs?: number,
 *   idleTimeoutMs?: number,
 *   objectsMax?: number,
 *   onEvent?: (event: {type: string, [k: string]: unknown}) => void,
 * }} ReplicaOptions
 */

export class Replica {
  /** @param {ReplicaOptions} [options] */
  constructor(options = {}) {
    this.client = options.client ?? null;
    this.scope = options.scope ?? null;
    this.clock = options.clock ?? systemClock;
    this.backoffMinMs = options.reconnectBackoffMinMs ?? RECONNECT_BACKOFF_MIN_MS_DEFAULT;
    this.backoffMaxMs = Math.max(options.reconnectBackoffMaxMs ?? RECONNECT_BACKOFF_MAX_MS_DEFAULT, this.backoffMinMs);
    this.idleTimeoutMs = options.idleTimeoutMs ?? IDLE_TIMEOUT_MS_DEFAULT;
    this.objectsMax = options.objectsMax ?? OBJECTS_MAX_DEFAULT;
    this.onEvent = options.onEvent ?? null;
    if (!(this.backoffMinMs > 0) || !(this.idleTimeoutMs > 0)) {
      throw new ConfigError('idleTimeoutMs and the reconnect backoff must be above zero');
    }
    this.store = new Store();
    /** @type {Map<string, import('./engine.js').AccountView>} */
    this.views = new Map();
    this.revision = 0;
    /** Unix seconds of the region's last origin contact, as estimated; null: unknown. @type {number|null} */
    this.originContact = null;
    /** performance.now() of the last byte from a node; null: never. @type {number|null} */
    this.heardAt = null;
    /** Built from data: as current as it gets (staleness 0). */
    this.fixed = false;
    /** The node followed right now. @type {string|null} */
    this.endpoint = null;
    /** @type {{revision: number, nextIndex: number, store: Store}|null} */
    this.staging = null;
    this.closed = false;
    /** @type {{resolve: () => void, revision: number}[]} */
    this.waiters = [];
    /** @type {import('node:http').ClientRequest|null} */
    this.currentRequest = null;
    /** @type {Promise<void>|null} */
    this.task = null;
    /** @type {((value?: unknown) => void)|null} */
    this.wakeSleep = null;
  }

  /**
   * A replica holding `mutations` at `revision`, following nothing: for
   * tests, benchmarks and conformance. Its data counts as current
   * (staleness 0) unless a check says otherwise.
   * @param {any[]} mutations @param {number} revision @param {ReplicaOptions} [options]
   */
  static fromMutations(mutations, revision, options = {}) {
    const replica = new Replica({ ...options, client: undefined });
    const dirty = new Dirty();
    for (const m of mutations) replica.store.apply(m, dirty);
    replica.views = replica.store.views();
    replica.revision = revision;
    replica.fixed = true;
    return replica;
  }

  /**
   * Starts following the client's nodes (from the one that answered last).
   * Resolves at once; `waitForRevision` waits for data.
   */
  start() {
    if (!this.client) throw new ConfigError('a following replica needs a client');
    if (this.task) return this;
    this.closed = false;
    this.task = this.follow();
    return this;
  }

  /** Stops following; the data stays readable. */
  async close() {
    this.closed = true;
    this.currentRequest?.destroy();
    this.wakeSleep?.();
    const task = this.task;
    this.task = null;
    if (task) await task;
  }

  /** How stale local answers are right now. */
  staleness() {
    return this.freshness(this.clock()).staleness;
  }

  /** @param {number} now */
  freshness(now) {
    if (this.fixed) {
      return { lastOriginContact: now, staleness: { origin_seconds: 0, since_region_ms: null } };
    }
    const contact = this.originContact;
    return {
      lastOriginContact: contact,
      staleness: {
        origin_seconds: contact == null ? null : secondsSince(now, contact),
        since_region_ms: this.heardAt == null ? null : performance.now() - this.heardAt,
      },
    };
  }

  /**
   * Decides `request` in-process. Refused (`NeedsRegionError`) when only
   * the region can answer; `RevisionNotAppliedError` when
   * `atLeastRevision` is ahead of the replica.
   *
   * `options.now` and `options.lastOriginContact` (Unix seconds, or null
   * for "never heard from the origin") replace the clock and the estimated
   * origin contact, for tests and the conformance cases.
   *
   * @param {import('./client.js').CheckRequest} request
   * @param {{now?: number, lastOriginContact?: number|null}} [options]
   * @returns {LocalDecision}
   */
  check(request, options) {
    if ((request.consume ?? 0) > 0) {
      throw new NeedsRegionError('a check that consumes units is metered by the region: use Client.check');
    }
    if (request.ip != null) {
      throw new NeedsRegionError(`the location is an IP address (${request.ip}) and the replica resolves none: pass a resolved location, or ask the region with Client.check`);
    }
    if (this.scope != null && this.scope !== request.account) {
      throw new NeedsRegionError(`account ${request.account} is outside this replica's scope (${this.scope})`);
    }
    const wanted = request.atLeastRevision ?? /** @type {any} */ (request).at_least_revision;
    if (wanted != null && wanted > this.revision) throw new RevisionNotAppliedError(wanted, this.revision);
    const now = options?.now ?? this.clock();
    let lastOriginContact;
    /** @type {{origin_seconds: number|null, since_region_ms: number|null}} */
    let staleness;
    if (options !== undefined && 'lastOriginContact' in options) {
      lastOriginContact = options.lastOriginContact ?? null;
      staleness = {
        origin_seconds: lastOriginContact == null ? null : secondsSince(now, lastOriginContact),
        since_region_ms: null,
      };
    } else {
      const f = this.freshness(now);
      lastOriginContact = f.lastOriginContact;
      staleness = f.staleness;
    }
    const view = this.views.get(request.account);
    const geo = request.location == null ? UNKNOWN_LOCATION : geoFacts(request.location);
    const d = /** @type {LocalDecision} */ (decide(request, view, geo, {
      catalog: this.store.catalog,
      live: NO_LIVE_STATE,
      now,
      revision: this.revision,
      lastOriginContact,
    }));
    d.approximate = approximate(d, view);
    d.staleness = staleness;
    if (request.explain) d.explanation = explain(d);
    return d;
  }

  /**
   * Waits until the replica has applied `revision` (e.g. the revision an
   * origin write returned); resolves with the revision reached.
   * @param {number} revision @param {number} [timeoutMs]
   */
  waitForRevision(revision, timeoutMs = 10_000) {
    if (this.revision >= revision) return Promise.resolve(this.revision);
    return new Promise((resolve, reject) => {
      const waiter = {
        revision,
        resolve: () => {
          clearTimeout(timer);
          resolve(this.revision);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new TimeoutError(`the replica is at revision ${this.revision}, waiting for ${revision}`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** Whether the license token `jti` is revoked, as far as the replica knows. @param {string} jti */
  licenseRevoked(jti) {
    return this.store.revokedLicenses.has(jti);
  }

  /** Whether the region certificate `serial` is revoked. @param {string} serial */
  certificateRevoked(serial) {
    return this.store.revokedCertificates.has(serial);
  }

  /** The data held, as the model's Dataset JSON. */
  dataset() {
    return this.store.toDataset();
  }

  /** @param {number} revision @param {Map<string, any>} views */
  publish(revision, views) {
    this.views = views;
    if (revision > this.revision) this.revision = revision;
    const ready = this.waiters.filter((w) => w.revision <= this.revision);
    if (ready.length > 0) {
      this.waiters = this.waiters.filter((w) => w.revision > this.revision);
      for (const w of ready) w.resolve();
    }
  }

  /** @param {number} at */
  contactAtLeast(at) {
    if (this.originContact == null || at > this.originContact) this.originContact = at;
  }

  /**
   * Applies one event of the watch stream (`state`, `changes`,
   * `heartbeat`; others are ignored). Throws on a stream out of order, which
   * ends the session. Exposed for tests.
   * @param {string} type @param {any} data
   */
  applyEvent(type, data) {
    switch (type) {
      case 'state': {
        const { revision, index, last, mutations } = data;
        if (!Number.isSafeInteger(revision) || !Number.isSafeInteger(index) || !Array.isArray(mutations)) {
          throw new ProtocolError('a state event without revision, index and mutations');
        }
        if (index === 0) this.staging = { revision, nextIndex: 0, store: new Store() };
        const state = this.staging;
        if (!state) throw new ProtocolError(`state chunk ${index} without chunk 0`);
        if (state.nextIndex !== index || state.revision !== revision) {
          throw new ProtocolError(`state chunk ${index} at revision ${revision} after chunk ${state.nextIndex - 1} at revision ${state.revision}`);
        }
        const dirty = new Dirty();
        for (const m of mutations) state.store.apply(m, dirty);
        if (state.store.objects > this.objectsMax) {
          throw new ProtocolError(`the state holds more than ${this.objectsMax} objects (the replica's limit)`);
        }
        state.nextIndex++;
        if (last === true) {
          this.staging = null;
          this.store = state.store;
          this.publish(state.revision, this.store.views());
          this.emit({ type: 'state', revision: state.revision });
        }
        return;
      }
      case 'changes': {
        if (this.staging) throw new ProtocolError('changes in the middle of a state');
        const { changes, through_revision: through } = data;
        if (!Array.isArray(changes) || !Number.isSafeInteger(through)) {
          throw new ProtocolError('a changes event without changes and through_revision');
        }
        const dirty = new Dirty();
        /** @type {number|null} */
        let committed = null;
        for (const record of changes) {
          if (typeof record.committed_at === 'number' && (committed == null || record.committed_at > committed)) {
            committed = record.committed_at;
          }
          for (const m of record.mutations ?? []) this.store.apply(m, dirty);
        }
        if (this.store.objects > this.objectsMax) {
          throw new ProtocolError(`the data holds more than ${this.objectsMax} objects (the replica's limit)`);
        }
        const views = this.store.updateViews(this.views, dirty);
        if (committed != null) this.contactAtLeast(committed);
        this.publish(through, views);
        this.emit({ type: 'changes', revision: this.revision });
        return;
      }
      case 'heartbeat': {
        const stale = data?.staleness_seconds;
        if (typeof stale === 'number') this.contactAtLeast(this.clock() - stale);
        return;
      }
      default:
        return;
    }
  }

  /** @param {{type: string, [k: string]: unknown}} event */
  emit(event) {
    try {
      this.onEvent?.(event);
    } catch {
      // A listener's failure is not the replica's.
    }
  }

  /** The follower: one stream at a time, moving to the next node. */
  async follow() {
    const client = /** @type {import('./client.js').Client} */ (this.client);
    let next = client.preferred;
    let backoff = this.backoffMinMs;
    while (!this.closed) {
      const index = next;
      next = (next + 1) % client.endpoints.length;
      const session = { delivered: false };
      try {
        await this.session(index, session);
        this.emit({ type: 'ended', endpoint: client.endpoints[index] });
      } catch (e) {
        if (!this.closed) this.emit({ type: 'error', endpoint: client.endpoints[index], error: e });
      }
      this.endpoint = null;
      this.staging = null;
      if (this.closed) break;
      if (session.delivered) {
        backoff = this.backoffMinMs;
      } else {
        await new Promise((resolve) => {
          this.wakeSleep = resolve;
          setTimeout(resolve, backoff);
        });
        this.wakeSleep = null;
        backoff = Math.min(backoff * 2, this.backoffMaxMs);
      }
    }
  }

  /**
   * Follows one node until its stream ends (resolves) or fails (throws).
   * @param {number} index @param {{delivered: boolean}} session
   */
  async session(index, session) {
    const client = /** @type {import('./client.js').Client} */ (this.client);
    const params = new URLSearchParams();
    if (this.scope != null) params.set('account', this.scope);
    params.set('from_revision', String(this.revision));
    /** @type {Record<string, string>} */
    const headers = {};
    if (this.revision > 0) headers['last-event-id'] = String(this.revision);
    const { req, res } = await client.openStream(index, `/v1/watch?${params}`, headers, client.timeoutMs, (r) => {
      this.currentRequest = r;
    });
    try {
      if (this.closed) return;
      if (res.statusCode !== 200) {
        const chunks = [];
        for await (const c of res) chunks.push(c);
        const problem = parseProblem({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
        throw new ProtocolError(`${client.endpoints[index]} answered the watch with ${res.statusCode} ${problem.code}${problem.detail ? `: ${problem.detail}` : ''}`, client.endpoints[index]);
      }
      this.endpoint = client.endpoints[index];
      this.emit({ type: 'following', endpoint: this.endpoint, from_revision: this.revision });
      const parser = new SseParser();
      res.setEncoding('utf8');
      await new Promise((resolve, reject) => {
        /** @type {NodeJS.Timeout} */
        let idle;
        const armIdle = () => {
          clearTimeout(idle);
          idle = setTimeout(() => {
            req.destroy(new Error(`no message for ${this.idleTimeoutMs} ms`));
          }, this.idleTimeoutMs);
        };
        armIdle();
        const finish = (/** @type {any} */ err) => {
          clearTimeout(idle);
          if (err) reject(err);
          else resolve(undefined);
        };
        res.on('data', (/** @type {string} */ text) => {
          armIdle();
          this.heardAt = performance.now();
          try {
            for (const ev of parser.push(text)) {
              let data;
              try {
                data = JSON.parse(ev.data);
              } catch {
                throw new ProtocolError(`a ${ev.event} event whose data is not JSON`, this.endpoint);
              }
              this.applyEvent(ev.event, data);
              // Only a node that sent something usable resets the backoff.
              session.delivered = true;
            }
          } catch (e) {
            req.destroy();
            finish(e);
          }
        });
        res.on('end', () => finish(null));
        res.on('error', (e) => finish(e));
        res.on('aborted', () => finish(new Error('the stream was cut')));
        req.on('error', (e) => finish(e));
        res.on('close', () => finish(this.closed ? null : new Error('the stream closed')));
      });
    } finally {
      this.currentRequest = null;
      req.destroy();
    }
  }
}

/**
 * Whether `d` depended on usage counters or floating seats (state only the
 * region has).
 * @param {import('./engine.js').Decision} d @param {import('./engine.js').AccountView|undefined} view
 */
function approximate(d, view) {
  if (d.metering != null && d.metering.limit != null) return true;
  if (d.seats == null || d.entitlement == null || !view) return false;
  const ent = view.entitlements.find((e) => e.id === d.entitlement);
  return ent?.seats?.mode?.floating != null;
}
