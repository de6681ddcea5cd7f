// Type declarations for @tollgate/sdk (hand-written; the sources are
// JavaScript with JSDoc). Wire objects keep the protocol's snake_case field
// names (sdk/PROTOCOL.md); options objects are camelCase.

/// <reference types="node" />

import type { KeyObject } from 'node:crypto';

// ---------------------------------------------------------------- checks

export type Reason =
  | 'ALLOW' | 'IN_GRACE' | 'NOT_ENTITLED' | 'UNKNOWN_ACCOUNT' | 'UNKNOWN_SUBJECT'
  | 'NOT_YET_VALID' | 'EXPIRED' | 'SUSPENDED' | 'REVOKED' | 'ROLE_REQUIRED'
  | 'GEO_BLOCKED' | 'ANONYMOUS_NETWORK_BLOCKED' | 'SEAT_LIMIT' | 'USAGE_CAP_REACHED'
  | 'STALE_DATA';

export const REASONS: readonly Reason[];
export function isAllowed(reason: string): boolean;

/** A location an edge proxy resolved (the HTTP API's shape). */
export interface LocationBody {
  country?: string | null;
  continent?: string | null;
  subdivisions?: string[];
  anonymous_network?: boolean;
}

/** The model's GeoFacts (the conformance file's shape); accepted by the replica. */
export interface GeoFacts {
  country?: string | null;
  continent?: string | null;
  subdivisions?: string[];
  anonymous?: null | {
    vpn?: boolean; tor_exit_node?: boolean; public_proxy?: boolean;
    residential_proxy?: boolean; hosting_provider?: boolean;
  };
}

export interface CheckRequest {
  account: string;
  subject?: string | null;
  feature: string;
  /** Units of a metered feature to consume (region only). */
  consume?: number;
  /** The caller's address, resolved by the node (region only). */
  ip?: string | null;
  location?: LocationBody | GeoFacts | null;
  /** Answer only once this origin revision is applied. */
  atLeastRevision?: number | null;
  /** A consuming check sent again with the same key is counted once (generated when consuming without one). */
  idempotencyKey?: string | null;
  /** Fill `explanation`. */
  explain?: boolean;
}

export interface SeatInfo { used: number; total: number; holders: string[] }
export interface UpgradeHint { plan?: string; addon?: string; limit: number | null }

/** A decision, as the HTTP/JSON API sends it. A denial is a decision, not an error. */
export interface DecisionBody {
  allowed: boolean;
  reason: Reason;
  explanation: string;
  entitlement: string | null;
  limit: number | null;
  remaining: number | null;
  overage: boolean;
  valid_until: number | null;
  trial: boolean;
  seats: SeatInfo | null;
  upgrade_hint: UpgradeHint | null;
  config: Record<string, string>;
}

/** `Client.check`'s answer. */
export interface Checked extends DecisionBody {
  revision: number;
  staleness_seconds: number | null;
  answered_by: string;
  /** The endpoint (node URL) that answered. */
  endpoint: string;
  /** The idempotency key sent, for a consuming check. */
  idempotency_key?: string;
}

export type BatchResult = { decision: DecisionBody } | { error: { code: string; message: string } };

export interface BatchChecked {
  results: BatchResult[];
  revision: number;
  staleness_seconds: number | null;
  answered_by: string;
  endpoint: string;
}

export interface CallOptions {
  /** Time one attempt (one node) may take, ms (default: the client's). */
  timeoutMs?: number;
  /** Bound on the whole call, failovers included, ms (default: the client's, none). */
  deadlineMs?: number;
  signal?: AbortSignal;
}

export interface ClientOptions {
  /** The region's nodes' check URLs (`https://host:port`), tried in order. */
  endpoints: string[];
  /** An application credential, `tgc_<id>.<secret>`. */
  credential?: string | null;
  /** The nodes' CA (PEM); without it, Node's CA store. */
  ca?: string | Buffer | null;
  /** A file holding the CA (PEM). */
  caFile?: string | null;
  /** Time one attempt may take, ms (default 2000). */
  timeoutMs?: number;
  /** Bound on a whole call, ms (default: none). */
  deadlineMs?: number | null;
  userAgent?: string;
  maxSockets?: number;
}

export const BATCH_CHECKS_MAX: number;
export const CONSUME_MAX: number;
export const TIMEOUT_MS_DEFAULT: number;
export const ENDPOINTS_MAX: number;
export function newIdempotencyKey(): string;

/**
 * A region's nodes over HTTP/JSON, with failover: from the node that
 * answered last, next node on a connection error, a timeout or a
 * 502/503/504; never on a 4xx or a decision.
 */
export class Client {
  constructor(options: ClientOptions);
  readonly endpoints: string[];
  /** Index of the endpoint that answered last (tried first). */
  preferred: number;
  timeoutMs: number;
  deadlineMs: number | null;
  check(request: CheckRequest, options?: CallOptions): Promise<Checked>;
  checkBatch(checks: CheckRequest[], options?: CallOptions & { atLeastRevision?: number | null }): Promise<BatchChecked>;
  /** Releases the keep-alive connections. */
  close(): void;
}

// ---------------------------------------------------------------- replica

export interface Staleness {
  /** Seconds since the region last heard from the origin; null while unknown. */
  origin_seconds: number | null;
  /** Milliseconds since a node last sent something; null for a replica built from data. */
  since_region_ms: number | null;
}

/** A decision made in-process. */
export interface LocalDecision extends DecisionBody {
  revision: number;
  staleness_seconds: number | null;
  /** Read state only the region has (a capped counter, floating seats): ask the region for the exact answer. */
  approximate: boolean;
  staleness: Staleness;
  /** The counter a metered feature's use goes to. */
  metering: null | { period: string; limit: number | null; hard: boolean };
}

export type ReplicaEvent =
  | { type: 'following'; endpoint: string; from_revision: number }
  | { type: 'state'; revision: number }
  | { type: 'changes'; revision: number }
  | { type: 'ended'; endpoint: string }
  | { type: 'error'; endpoint: string; error: unknown };

export interface ReplicaOptions {
  client?: Client;
  /** Follow one account (plus the catalog); null: every account (needs `watch_all`). */
  scope?: string | null;
  /** Unix seconds now (default: the system clock). */
  clock?: () => number;
  reconnectBackoffMinMs?: number;
  reconnectBackoffMaxMs?: number;
  idleTimeoutMs?: number;
  objectsMax?: number;
  onEvent?: (event: ReplicaEvent) => void;
}

export const RECONNECT_BACKOFF_MIN_MS_DEFAULT: number;
export const RECONNECT_BACKOFF_MAX_MS_DEFAULT: number;
export const IDLE_TIMEOUT_MS_DEFAULT: number;
export const OBJECTS_MAX_DEFAULT: number;

/** Revocations a verifier asks about. A Replica is one. */
export interface Revocations {
  licenseRevoked(jti: string): boolean;
  certificateRevoked(serial: string): boolean;
}

export class Replica implements Revocations {
  constructor(options?: ReplicaOptions);
  /** A replica holding these mutations at `revision`, following nothing (staleness 0 unless a check says otherwise). */
  static fromMutations(mutations: unknown[], revision: number, options?: ReplicaOptions): Replica;
  readonly scope: string | null;
  /** The origin revision applied. */
  readonly revision: number;
  /** The node followed right now. */
  readonly endpoint: string | null;
  start(): this;
  close(): Promise<void>;
  staleness(): Staleness;
  /**
   * Decides in-process. Throws NeedsRegionError (consume > 0, an ip, an
   * account outside the scope) or RevisionNotAppliedError.
   */
  check(request: CheckRequest, options?: { now?: number; lastOriginContact?: number | null }): LocalDecision;
  waitForRevision(revision: number, timeoutMs?: number): Promise<number>;
  licenseRevoked(jti: string): boolean;
  certificateRevoked(serial: string): boolean;
  /** Applies one watch event (`state`, `changes`, `heartbeat`). */
  applyEvent(type: string, data: unknown): void;
  /** The data held, as the model's Dataset JSON. */
  dataset(): unknown;
}

// ---------------------------------------------------------------- licenses

export interface PublicKeySet {
  keys: {
    kid: string;
    algorithm: 'Ed25519' | string;
    public_key: string;
    created_at: number;
    status: 'active' | 'retired' | { overlap: { until: number } };
  }[];
}

export type LicenseSigner =
  | { type: 'origin'; kid: string }
  | { type: 'region'; region: string; serial: string; kid: string; certifiedBy: string };

export interface License {
  /** The token's claims (its message), as JSON. */
  claims: any;
  /** The footer's key id. */
  kid: string;
  signer: LicenseSigner;
  /** `origin` or `region:<region>`. */
  signerLabel: string;
  iat: number;
  nbf: number;
  exp: number;
}

export interface VerifyOptions {
  /** Unix seconds (default: now). */
  now?: number;
  /** This device's fingerprint, for tokens bound to one. */
  deviceFingerprint?: string | Uint8Array | null;
  /** A Replica, a Revocations object, or lists ({licenses, certificates}). */
  revocations?: Revocations | { licenses?: unknown[]; certificates?: unknown[] } | null;
}

export class LicenseVerifier {
  constructor(keySet: PublicKeySet, audience: string, options?: { leewaySeconds?: number });
  readonly audience: string;
  readonly leewaySeconds: number;
  /** Throws LicenseError with the Rust verifier's code. */
  verify(token: string, options?: VerifyOptions): License;
  /** A verifier with the key set fetched from the origin (https:// only). */
  static fetch(url: string, audience: string, options?: FetchKeySetOptions & { leewaySeconds?: number }): Promise<LicenseVerifier>;
}

export interface FetchKeySetOptions {
  ca?: string | Buffer | null;
  caFile?: string | null;
  timeoutMs?: number;
}
/** GETs the origin's key set over verified TLS (https:// only; the base URL gets the well-known path). */
export function fetchKeySet(url: string, options?: FetchKeySetOptions): Promise<PublicKeySet>;

export function revocationList(lists?: { licenses?: unknown[]; certificates?: unknown[] } | null): Revocations;
/** The entitlement of a verified license that grants `feature` at `now`, or null. */
export function licenseAllows(license: License, feature: string, now: number): any | null;
export function parseRfc3339(text: string): number | null;
export function keyIdOf(raw: Uint8Array): string;
export const DEFAULT_LEEWAY_SECONDS: number;
export const ISSUER_ORIGIN: string;
export const ISSUER_REGION_PREFIX: string;
export const KEY_SET_PATH: string;

// ---------------------------------------------------------------- PASETO v4.public

export const TOKEN_BYTES_MAX: number;
export interface PublicKeyHandle { raw: Uint8Array; key: KeyObject }
export function makePublicKey(raw: Uint8Array): PublicKeyHandle;
export function publicKeyOfSeed(seed: Uint8Array): Buffer;
export function pae(pieces: Uint8Array[]): Buffer;
export function decodeToken(token: string): { message: Buffer; signature: Buffer; footer: Buffer };
export function footerUnverified(token: string): Buffer;
export function verifyToken(key: PublicKeyHandle, token: string, options?: { expectedFooter?: Uint8Array | null; implicit?: Uint8Array }): { message: Buffer; footer: Buffer };
export function signToken(seed: Uint8Array, message: Uint8Array, footer?: Uint8Array, implicit?: Uint8Array): string;

// ---------------------------------------------------------------- engine (advanced)

export function decide(check: CheckRequest, view: unknown, geo: GeoFacts, env: {
  catalog: unknown; now: number; revision: number; lastOriginContact: number | null;
  live?: { usageConsumed(account: string, feature: string, period: string): number; floatingLeases(entitlement: string): { holder: string; expires_at: number }[] };
}): LocalDecision;
export function buildView(account: unknown, subjects: Iterable<unknown>, entitlements: Iterable<unknown>, catalog: unknown): unknown;
export function geoFacts(location: LocationBody | GeoFacts | null | undefined): GeoFacts;
export function explain(decision: DecisionBody & { staleness_seconds: number | null }): string;
export class Store {
  apply(mutation: unknown, dirty: unknown): void;
}
export function datasetToMutations(dataset: unknown): unknown[];
export class SseParser {
  constructor(lineBytesMax?: number);
  lastEventId: string | null;
  push(text: string): { event: string; data: string; id: string | null }[];
}

// ---------------------------------------------------------------- errors

export class TollgateError extends Error {
  /** Stable, machine-readable. */
  code: string;
  /** The HTTP status, when a node answered with one. */
  status: number | null;
  /** The problem document's detail. */
  detail: string | null;
  /** The node URL that answered (or was tried last). */
  endpoint: string | null;
  answeredBy: string | null;
}
export class ConfigError extends TollgateError {}
/** A node's problem+json answer that is not retried: `code` is the problem's code. */
export class ProblemError extends TollgateError {
  status: number;
  title: string | null;
  type: string | null;
  /** Seconds (429). */
  retryAfter: number | null;
}
export class InvalidRequestError extends ProblemError {}
export class AuthenticationError extends ProblemError {}
export class PermissionDeniedError extends ProblemError {}
export class NotFoundError extends ProblemError {}
export class RateLimitedError extends ProblemError {}
export class RefusedError extends ProblemError {}
/** No node answered: `attempts` says what each did. */
export class UnavailableError extends TollgateError {
  attempts: { endpoint: string; code: string; status: number | null; message: string }[];
  last: { endpoint: string; code: string; status: number | null; message: string } | null;
}
export class ProtocolError extends TollgateError {}
export class NeedsRegionError extends TollgateError {}
export class RevisionNotAppliedError extends TollgateError {
  wanted: number;
  applied: number;
}
export class TimeoutError extends TollgateError {}
/** `code` is the Rust verifier's (`license_expired`, `token_wrong_header`, ...). */
export class LicenseError extends TollgateError {}
