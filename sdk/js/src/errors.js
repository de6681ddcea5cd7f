// @ts-check
/**
 * Typed errors. A denial is never an error: it is a decision with a reason.
 * Every error has a stable `code` to switch on; messages are for humans.
 */

export class TollgateError extends Error {
  /**
   * @param {string} message
   * @param {{code?: string, status?: number|null, detail?: string|null,
   *   endpoint?: string|null, answeredBy?: string|null, cause?: unknown}} [fields]
   */
  constructor(message, fields = {}) {
    super(message, fields.cause !== undefined ? { cause: fields.cause } : undefined);
    this.name = new.target.name;
    /** Stable, machine-readable. */
    this.code = fields.code ?? 'ERROR';
    /** The HTTP status, when a node answered with one. */
    this.status = fields.status ?? null;
    /** The problem document's `detail`, when a node sent one. */
    this.detail = fields.detail ?? null;
    /** The endpoint (node URL) that answered, or was being tried. */
    this.endpoint = fields.endpoint ?? null;
    /** The node's name, when it said. */
    this.answeredBy = fields.answeredBy ?? null;
  }
}

/** The client or replica is set up wrongly (code `CONFIG`). */
export class ConfigError extends TollgateError {
  /** @param {string} message */
  constructor(message) {
    super(message, { code: 'CONFIG' });
  }
}

/**
 * A node answered with an `application/problem+json` error that failover
 * does not retry (a 4xx, or a 5xx other than 502/503/504). `code` is the
 * problem's `code` (e.g. `CREDENTIAL_REQUIRED`, `INVALID_ARGUMENT`).
 */
export class ProblemError extends TollgateError {
  /**
   * @param {{status: number, code: string, detail?: string|null, title?: string|null,
   *   type?: string|null, endpoint?: string|null, retryAfter?: number|null}} p
   */
  constructor(p) {
    super(`${p.endpoint ?? 'node'} answered ${p.status} ${p.code}${p.detail ? `: ${p.detail}` : ''}`, {
      code: p.code, status: p.status, detail: p.detail ?? null, endpoint: p.endpoint ?? null,
    });
    this.title = p.title ?? null;
    this.type = p.type ?? null;
    /** Seconds, from `Retry-After` (429). */
    this.retryAfter = p.retryAfter ?? null;
  }
}

/** 400, 413, 415 (or refused before sending): never retried. */
export class InvalidRequestError extends ProblemError {}
/** 401: no or an unknown credential. */
export class AuthenticationError extends ProblemError {}
/** 403: the credential's scope does not cover the request. */
export class PermissionDeniedError extends ProblemError {}
/** 404: unknown route (an old node?) or object. */
export class NotFoundError extends ProblemError {}
/** 429: slow down; `retryAfter` seconds. */
export class RateLimitedError extends ProblemError {}
/** Any other refusal (405, 500, ...). */
export class RefusedError extends ProblemError {}

/**
 * The problem error class for an HTTP status.
 * @param {number} status
 */
export function problemClass(status) {
  switch (status) {
    case 400: case 413: case 415: return InvalidRequestError;
    case 401: return AuthenticationError;
    case 403: return PermissionDeniedError;
    case 404: return NotFoundError;
    case 429: return RateLimitedError;
    default: return RefusedError;
  }
}

/**
 * No node answered: every one was unreachable, timed out, or answered
 * 502/503/504. `attempts` says what each one did, in order; `status`,
 * `code` and `detail` of the last node that answered at all are kept in
 * `last`.
 */
export class UnavailableError extends TollgateError {
  /**
   * @param {{endpoint: string, code: string, status: number|null, message: string}[]} attempts
   */
  constructor(attempts) {
    const last = attempts[attempts.length - 1];
    super(`no endpoint answered (tried ${attempts.map((a) => a.endpoint).join(', ')})${last ? `: ${last.message}` : ''}`, {
      code: 'UNAVAILABLE', status: last?.status ?? null, endpoint: last?.endpoint ?? null,
      detail: last?.message ?? null,
    });
    this.attempts = attempts;
    this.last = last ?? null;
  }
}

/** A response that does not make sense (code `PROTOCOL`). */
export class ProtocolError extends TollgateError {
  /** @param {string} message @param {string|null} [endpoint] */
  constructor(message, endpoint = null) {
    super(message, { code: 'PROTOCOL', endpoint });
  }
}

/**
 * The local replica cannot answer this (code `NEEDS_REGION`): a check that
 * consumes, an IP address to resolve, an account outside its scope. Ask the
 * region with `Client.check`.
 */
export class NeedsRegionError extends TollgateError {
  /** @param {string} message */
  constructor(message) {
    super(`the local replica cannot answer this: ${message}`, { code: 'NEEDS_REGION' });
  }
}

/** The replica has not applied the revision asked for (code `REVISION_NOT_APPLIED`). */
export class RevisionNotAppliedError extends TollgateError {
  /** @param {number} wanted @param {number} applied */
  constructor(wanted, applied) {
    super(`the local replica has applied revision ${applied}; the request needs ${wanted}`, { code: 'REVISION_NOT_APPLIED' });
    this.wanted = wanted;
    this.applied = applied;
  }
}

/** A wait ran out (code `TIMEOUT`). */
export class TimeoutError extends TollgateError {
  /** @param {string} message */
  constructor(message) {
    super(message, { code: 'TIMEOUT' });
  }
}

/**
 * A license token (or key set) was refused; `code` is the Rust verifier's
 * `LicenseError::code()` (`license_expired`, `token_wrong_header`, ...).
 */
export class LicenseError extends TollgateError {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message, { code });
  }
}
