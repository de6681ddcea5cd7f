// @ts-check
/**
 * Offline license verification (crates/tollgate-license/src/verify.rs):
 * PASETO v4.public tokens signed by an origin key, or by a region key whose
 * certificate (in the footer) an origin key signed. Same checks, same order,
 * same refusal codes as the Rust `Verifier` (`LicenseError::code()`):
 *
 * 1. format, 2. footer (unverified, only picks a key), 3. key (origin key by
 * kid, usable at `now`; else the footer's certificate: signed by a usable
 * origin key, valid fields, inside its window, kid matching the footer,
 * allowed to sign licenses), 4. signature (with the device's implicit
 * assertion), 5. claims (strict), 6. issuer matches the signer, 7. times
 * (leeway 60 s; a region token inside its certificate and its maximum
 * lifetime), 8. audience, 9. revocations (token id, then certificate serial).
 */

import {
  decodeToken, decodeBase64Url, isCurvePoint, isSmallOrder, makePublicKey, verifyStrict,
  HEADER, pae,
} from './paseto.js';
import { LicenseError } from './errors.js';
import { parseStrictJsonBytes, bigintsToNumbers } from './json.js';
import { fetchKeySet } from './keys.js';

export const DEFAULT_LEEWAY_SECONDS = 60;
export const LEEWAY_SECONDS_MAX = 3600;
export const CERTIFICATE_CACHE_ENTRIES_MAX = 16;
export const KEYS_MAX = 64;
export const AUDIENCE_BYTES_MAX = 256;
export const DEVICE_FINGERPRINT_BYTES_MAX = 256;
export const ENTITLEMENTS_PER_LICENSE_MAX = 256;
const GRANTS_PER_BUNDLE_MAX = 1024;
export const ISSUER_ORIGIN = 'tollgate-origin';
export const ISSUER_REGION_PREFIX = 'tollgate-region:';
export const CONTEXT_REGION_CERTIFICATE = 'tollgate.region-certificate.v1';
export const DEVICE_IMPLICIT_PREFIX = Buffer.from('tollgate.device.v1\0');
const I64_MAX = 9223372036854775807;
const RFC3339_SECONDS_MIN = -62167219200;
const RFC3339_SECONDS_MAX = 253402300799;
const HEADER_BYTES = Buffer.from(HEADER);

// ---------------------------------------------------------------- small validators

const KEY_ID = /^ed25519-[0-9a-f]{16}$/;
const RANDOM_ID = /^[0-9a-f]{32}$/;
const MODEL_ID = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;
const REGION = /^[a-z0-9-]{1,64}$/;
const COUNTRY = /^[A-Z]{2}$/;
const SUBDIVISION = /^[A-Z]{2}-[A-Z0-9]{1,3}$/;
const CONTINENTS = new Set(['AF', 'AN', 'AS', 'EU', 'NA', 'OC', 'SA']);

/** @param {string} s */
export const validRegionName = (s) => typeof s === 'string' && REGION.test(s);

/** The key id of a raw public key: `ed25519-` and its first 8 bytes in hex. @param {Uint8Array} raw */
export function keyIdOf(raw) {
  return `ed25519-${Buffer.from(raw.subarray(0, 8)).toString('hex')}`;
}

/** @param {unknown} v */
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
/** @param {unknown} v */
const isU64 = (v) => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0)
  || (typeof v === 'bigint' && v >= 0n && v <= 18446744073709551615n);
/** @param {unknown} v */
const isI64 = (v) => (typeof v === 'number' && Number.isSafeInteger(v))
  || (typeof v === 'bigint' && v >= -9223372036854775808n && v <= 9223372036854775807n);
/** @param {unknown} v */
const isU32 = (v) => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;

/** `a + b` saturating at i64::MAX. @param {number} a @param {number} b */
const plusSeconds = (a, b) => Math.min(a + b, I64_MAX);

/**
 * A schema violation: a message for `ClaimsInvalid` / `CertificateInvalid`.
 */
class Invalid extends Error {}

/**
 * Checks an object against a field table, refusing unknown fields (serde's
 * `deny_unknown_fields`).
 * @param {unknown} v @param {string} what
 * @param {Record<string, {required?: boolean, check: (x: any, path: string) => void}>} fields
 */
function strictObject(v, what, fields) {
  if (!isObject(v)) throw new Invalid(`${what}: expected an object`);
  const o = /** @type {Record<string, unknown>} */ (v);
  for (const k of Object.keys(o)) {
    if (!Object.prototype.hasOwnProperty.call(fields, k)) throw new Invalid(`${what}: unknown field \`${k}\``);
  }
  for (const [k, spec] of Object.entries(fields)) {
    if (!Object.prototype.hasOwnProperty.call(o, k) || o[k] === undefined) {
      if (spec.required) throw new Invalid(`${what}: missing field \`${k}\``);
      continue;
    }
    spec.check(o[k], `${what}.${k}`);
  }
}

/** @param {RegExp} re @param {string} kind */
const str = (re, kind) => (/** @type {any} */ x, /** @type {string} */ path) => {
  if (typeof x !== 'string' || !re.test(x)) throw new Invalid(`${path}: not a valid ${kind}`);
};
const anyString = (/** @type {any} */ x, /** @type {string} */ path) => {
  if (typeof x !== 'string') throw new Invalid(`${path}: expected a string`);
};
const u64 = (/** @type {any} */ x, /** @type {string} */ path) => {
  if (!isU64(x)) throw new Invalid(`${path}: expected an unsigned integer`);
};
const u32 = (/** @type {any} */ x, /** @type {string} */ path) => {
  if (!isU32(x)) throw new Invalid(`${path}: expected an unsigned 32-bit integer`);
};
const i64 = (/** @type {any} */ x, /** @type {string} */ path) => {
  if (!isI64(x)) throw new Invalid(`${path}: expected an integer`);
};
const bool = (/** @type {any} */ x, /** @type {string} */ path) => {
  if (typeof x !== 'boolean') throw new Invalid(`${path}: expected a boolean`);
};
/** @param {(x: any, path: string) => void} inner */
const optional = (inner) => (/** @type {any} */ x, /** @type {string} */ path) => {
  if (x !== null) inner(x, path);
};
/** @param {(x: any, path: string) => void} inner */
const arrayOf = (inner) => (/** @type {any} */ x, /** @type {string} */ path) => {
  if (!Array.isArray(x)) throw new Invalid(`${path}: expected an array`);
  x.forEach((item, i) => inner(item, `${path}[${i}]`));
};
const modelId = str(MODEL_ID, 'identifier');

const offlinePolicy = (/** @type {any} */ x, /** @type {string} */ path) => strictObject(x, path, {
  offline_grace_seconds: { required: true, check: u64 },
  after_grace: {
    required: true,
    check: (v, p) => {
      if (v !== 'allow' && v !== 'deny') throw new Invalid(`${p}: expected allow or deny`);
    },
  },
});

const usageCap = (/** @type {any} */ x, /** @type {string} */ path) => strictObject(x, path, {
  limit: { required: true, check: u64 },
  enforcement: {
    check: (v, p) => {
      if (v !== 'hard' && v !== 'soft') throw new Invalid(`${p}: expected hard or soft`);
    },
  },
  additive: { check: bool },
});

const configValues = (/** @type {any} */ x, /** @type {string} */ path) => {
  if (!isObject(x)) throw new Invalid(`${path}: expected an object`);
  for (const [k, v] of Object.entries(x)) {
    if (!MODEL_ID.test(k)) throw new Invalid(`${path}: key ${JSON.stringify(k.slice(0, 64))} is not a valid config key`);
    anyString(v, `${path}.${k}`);
  }
};

/** The model's GeoRule (with the older `deny_unknown_location`; both at once refused). */
const geoRule = (/** @type {any} */ x, /** @type {string} */ path) => {
  strictObject(x, path, {
    allow_countries: { check: arrayOf(str(COUNTRY, 'country code')) },
    deny_countries: { check: arrayOf(str(COUNTRY, 'country code')) },
    allow_continents: { check: arrayOf(continent) },
    deny_continents: { check: arrayOf(continent) },
    allow_subdivisions: { check: arrayOf(str(SUBDIVISION, 'subdivision code')) },
    deny_subdivisions: { check: arrayOf(str(SUBDIVISION, 'subdivision code')) },
    block_anonymous: { check: bool },
    unknown_location: {
      check: optional((v, p) => {
        if (v !== 'allow' && v !== 'deny') throw new Invalid(`${p}: expected allow or deny`);
      }),
    },
    deny_unknown_location: { check: optional(bool) },
  });
  if (x.unknown_location != null && x.deny_unknown_location != null) {
    throw new Invalid(`${path}.unknown_location: set together with the older deny_unknown_location`);
  }
};
const continent = (/** @type {any} */ x, /** @type {string} */ path) => {
  if (typeof x !== 'string' || !CONTINENTS.has(x)) throw new Invalid(`${path}: not a continent code`);
};

const licenseFeature = (/** @type {any} */ x, /** @type {string} */ path) => strictObject(x, path, {
  feature: { required: true, check: modelId },
  usage_cap: { check: optional(usageCap) },
  config: { check: configValues },
  geo_rule: { check: optional(geoRule) },
  offline_policy: { check: optional(offlinePolicy) },
});

const licenseGrant = (/** @type {any} */ x, /** @type {string} */ path) => {
  if (!isObject(x) || Object.keys(x).length !== 1) throw new Invalid(`${path}: expected one of plan, addon, feature`);
  const [k] = Object.keys(x);
  if (k !== 'plan' && k !== 'addon' && k !== 'feature') throw new Invalid(`${path}: unknown variant \`${k}\``);
  modelId(x[k], `${path}.${k}`);
};

const licenseSeats = (/** @type {any} */ x, /** @type {string} */ path) => strictObject(x, path, {
  count: { required: true, check: u32 },
  mode: {
    required: true,
    check: (v, p) => {
      if (v === 'named') return;
      if (isObject(v) && Object.keys(v).length === 1 && 'floating' in v) {
        strictObject(v.floating, `${p}.floating`, { lease_ttl_seconds: { required: true, check: u32 } });
        return;
      }
      throw new Invalid(`${p}: expected named or floating`);
    },
  },
});

const entitlementStatus = (/** @type {any} */ x, /** @type {string} */ path) => {
  if (x !== 'active' && x !== 'suspended' && x !== 'revoked') throw new Invalid(`${path}: unknown status`);
};

const licenseEntitlement = (/** @type {any} */ x, /** @type {string} */ path) => strictObject(x, path, {
  id: { required: true, check: modelId },
  grant: { required: true, check: licenseGrant },
  features: { required: true, check: arrayOf(licenseFeature) },
  valid_from: { required: true, check: i64 },
  valid_until: { check: optional(i64) },
  grace_period_seconds: { check: u64 },
  status: { required: true, check: entitlementStatus },
  geo_rules: { check: arrayOf(geoRule) },
  offline_policy: { required: true, check: offlinePolicy },
  seats: { check: optional(licenseSeats) },
  trial: { check: bool },
});

const rfc3339 = (/** @type {any} */ x, /** @type {string} */ path) => {
  if (typeof x !== 'string' || parseRfc3339(x) === null) {
    throw new Invalid(`${path}: expected an RFC 3339 UTC timestamp of the form 2026-11-28T07:00:00Z`);
  }
};

/**
 * Exactly `YYYY-MM-DDTHH:MM:SSZ` (the one spelling the Rust side writes
 * and reads); Unix seconds, or null.
 * @param {string} text
 */
export function parseRfc3339(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$/.exec(text);
  if (!m) return null;
  const [year, month, day, hour, minute, second] = m.slice(1).map(Number);
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const dim = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
  if (month < 1 || month > 12 || day < 1 || day > dim || hour > 23 || minute > 59 || second > 59) return null;
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (month > 2 ? month - 3 : month + 9) + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  const days = era * 146097 + doe - 719468;
  return days * 86400 + hour * 3600 + minute * 60 + second;
}

/**
 * Parses and validates the claims (LicenseClaims::from_json).
 * @param {Uint8Array} bytes
 */
function parseClaims(bytes) {
  let claims;
  try {
    claims = parseStrictJsonBytes(bytes, { bigints: true });
  } catch (e) {
    throw new LicenseError('license_claims_invalid', `license claims are invalid: ${truncate(/** @type {Error} */ (e).message)}`);
  }
  try {
    strictObject(claims, 'claims', {
      iss: { required: true, check: anyString },
      sub: { required: true, check: anyString },
      aud: { required: true, check: anyString },
      iat: { required: true, check: rfc3339 },
      nbf: { required: true, check: rfc3339 },
      exp: { required: true, check: rfc3339 },
      jti: { required: true, check: str(RANDOM_ID, 'token id (32 lower-case hex digits)') },
      account: { required: true, check: modelId },
      subject: { check: optional(modelId) },
      revision: { required: true, check: u64 },
      device_bound: { required: true, check: bool },
      entitlements: { required: true, check: arrayOf(licenseEntitlement) },
    });
  } catch (e) {
    if (e instanceof Invalid) throw new LicenseError('license_claims_invalid', `license claims are invalid: ${truncate(e.message)}`);
    throw e;
  }
  bigintsToNumbers(claims);
  const invalid = (/** @type {string} */ reason) => new LicenseError('license_claims_invalid', `license claims are invalid: ${reason}`);
  // validate(): the issuer's form, sub, aud, times, bounds.
  if (claims.iss !== ISSUER_ORIGIN) {
    const region = claims.iss.startsWith(ISSUER_REGION_PREFIX) ? claims.iss.slice(ISSUER_REGION_PREFIX.length) : null;
    if (region === null || !validRegionName(region)) {
      throw invalid(`iss must be "${ISSUER_ORIGIN}" or "${ISSUER_REGION_PREFIX}<region>"`);
    }
  }
  const expectedSub = claims.subject != null ? `${claims.account}/${claims.subject}` : claims.account;
  if (claims.sub !== expectedSub) throw invalid('sub must be the account, or <account>/<subject>');
  const audBytes = Buffer.byteLength(claims.aud, 'utf8');
  if (audBytes === 0 || audBytes > AUDIENCE_BYTES_MAX) throw invalid(`aud must be 1..=${AUDIENCE_BYTES_MAX} bytes`);
  const iat = /** @type {number} */ (parseRfc3339(claims.iat));
  const nbf = /** @type {number} */ (parseRfc3339(claims.nbf));
  const exp = /** @type {number} */ (parseRfc3339(claims.exp));
  for (const [name, t] of /** @type {[string, number][]} */ ([['iat', iat], ['nbf', nbf], ['exp', exp]])) {
    if (t < RFC3339_SECONDS_MIN || t > RFC3339_SECONDS_MAX) throw invalid(`${name} is outside the years 0000..=9999`);
  }
  if (!(iat <= nbf && nbf < exp)) {
    throw invalid(`times must satisfy iat <= nbf < exp (iat ${iat}, nbf ${nbf}, exp ${exp})`);
  }
  if (claims.entitlements.length > ENTITLEMENTS_PER_LICENSE_MAX) {
    throw invalid(`${claims.entitlements.length} entitlements, over the limit of ${ENTITLEMENTS_PER_LICENSE_MAX}`);
  }
  const wide = claims.entitlements.find((/** @type {any} */ e) => e.features.length > GRANTS_PER_BUNDLE_MAX);
  if (wide) throw invalid(`entitlement ${wide.id} lists ${wide.features.length} features, over the limit of ${GRANTS_PER_BUNDLE_MAX}`);
  return { claims, iat, nbf, exp };
}

/**
 * The claims as the Rust side writes them (`serde_json::to_value` of
 * `LicenseClaims`): defaults filled in, defaults left out where it leaves
 * them out, geo rules compact with their sets sorted. A token the origin or
 * a region issued is already in this form; this makes any valid token's
 * claims compare equal to what the Rust verifier returns.
 * @param {any} c
 */
export function canonicalClaims(c) {
  /** @type {Record<string, any>} */
  const out = {
    iss: c.iss, sub: c.sub, aud: c.aud, iat: c.iat, nbf: c.nbf, exp: c.exp, jti: c.jti,
    account: c.account,
  };
  if (c.subject != null) out.subject = c.subject;
  out.revision = c.revision;
  out.device_bound = c.device_bound;
  out.entitlements = c.entitlements.map((/** @type {any} */ e) => {
    /** @type {Record<string, any>} */
    const o = { id: e.id, grant: e.grant, features: e.features.map(canonicalFeature), valid_from: e.valid_from };
    if (e.valid_until != null) o.valid_until = e.valid_until;
    if ((e.grace_period_seconds ?? 0) !== 0) o.grace_period_seconds = e.grace_period_seconds;
    o.status = e.status;
    const rules = e.geo_rules ?? [];
    if (rules.length > 0) o.geo_rules = rules.map(compactGeoRule);
    o.offline_policy = { offline_grace_seconds: e.offline_policy.offline_grace_seconds, after_grace: e.offline_policy.after_grace };
    if (e.seats != null) {
      o.seats = {
        count: e.seats.count,
        mode: e.seats.mode === 'named' ? 'named' : { floating: { lease_ttl_seconds: e.seats.mode.floating.lease_ttl_seconds } },
      };
    }
    if (e.trial === true) o.trial = true;
    return o;
  });
  return out;
}

/** @param {any} f */
function canonicalFeature(f) {
  /** @type {Record<string, any>} */
  const o = { feature: f.feature };
  if (f.usage_cap != null) {
    o.usage_cap = { limit: f.usage_cap.limit, enforcement: f.usage_cap.enforcement ?? 'hard', additive: f.usage_cap.additive ?? false };
  }
  if (f.config != null && Object.keys(f.config).length > 0) {
    o.config = Object.fromEntries(Object.keys(f.config).sort().map((k) => [k, f.config[k]]));
  }
  if (f.geo_rule != null) o.geo_rule = compactGeoRule(f.geo_rule);
  if (f.offline_policy != null) {
    o.offline_policy = { offline_grace_seconds: f.offline_policy.offline_grace_seconds, after_grace: f.offline_policy.after_grace };
  }
  return o;
}

/** claims.rs `compact_geo`: no empty lists or false flags; sets sorted. @param {any} r */
function compactGeoRule(r) {
  /** @type {Record<string, any>} */
  const o = {};
  for (const k of ['allow_countries', 'deny_countries', 'allow_continents', 'deny_continents', 'allow_subdivisions', 'deny_subdivisions']) {
    const list = [...new Set(r[k] ?? [])].sort();
    if (list.length > 0) o[k] = list;
  }
  if (r.block_anonymous === true) o.block_anonymous = true;
  const unknown = r.unknown_location ?? (r.deny_unknown_location === true ? 'deny' : null);
  if (unknown === 'deny') o.deny_unknown_location = true;
  if (unknown === 'allow') o.unknown_location = 'allow';
  return o;
}

/** @param {string} s */
function truncate(s) {
  return [...s].slice(0, 200).join('');
}

// ---------------------------------------------------------------- keys

/**
 * 32 bytes of unpadded base64url that decompress to a curve point; else the
 * reason, as the Rust side words it.
 * @param {unknown} text
 * @returns {Uint8Array|string}
 */
function parsePublicKey(text) {
  const bytes = typeof text === 'string' ? decodeBase64Url(text) : null;
  if (bytes === null || bytes.length !== 32) return 'public key is not 32 bytes of unpadded base64url';
  if (!isCurvePoint(bytes)) return 'public key is not an Ed25519 curve point';
  return bytes;
}

/**
 * @typedef {{kid: string, status: any, pub: {raw: Uint8Array, key: import('node:crypto').KeyObject}}} OriginKey
 */

/**
 * One key of the origin's public key set (keys.rs `OriginKey::parse`).
 * @param {any} publicKey
 * @returns {OriginKey}
 */
function parseOriginKey(publicKey) {
  const kid = isObject(publicKey) && typeof publicKey.kid === 'string' ? publicKey.kid : '';
  const invalid = (/** @type {string} */ reason) => new LicenseError('license_key_set_invalid', `origin public key set is invalid: key ${JSON.stringify(kid)}: ${reason}`);
  if (!isObject(publicKey)) throw invalid('not a key');
  if (!KEY_ID.test(kid)) throw invalid('the key id is not of the form ed25519-<16 lower-case hex digits>');
  if (!isKeyStatus(publicKey.status)) throw invalid('the status is not active, overlap or retired');
  if (publicKey.algorithm !== 'Ed25519') throw invalid('algorithm is not Ed25519');
  const raw = parsePublicKey(publicKey.public_key);
  if (typeof raw === 'string') throw invalid(raw);
  if (isSmallOrder(raw)) {
    throw new LicenseError('license_weak_public_key', `public key ${kid} is weak (a small-order point) and is refused`);
  }
  if (keyIdOf(raw) !== kid) throw invalid('the key id does not match the public key');
  return { kid, status: publicKey.status, pub: makePublicKey(raw) };
}

/** @param {any} s */
function isKeyStatus(s) {
  if (s === 'active' || s === 'retired') return true;
  return isObject(s) && Object.keys(s).length === 1 && isObject(s.overlap) && Number.isInteger(s.overlap.until);
}

/**
 * Whether the key may still vouch for something at `now`.
 * @param {OriginKey} key @param {number} now
 */
function checkUsable(key, now) {
  if (key.status === 'active') return;
  if (key.status === 'retired') throw new LicenseError('license_key_retired', `signed with retired origin key ${key.kid}`);
  const until = key.status.overlap.until;
  if (now > until) {
    throw new LicenseError('license_key_overlap_expired', `signed with origin key ${key.kid}, whose overlap window ended at ${until}`);
  }
}

// ---------------------------------------------------------------- certificates

/**
 * @typedef {{
 *   serial: string, region: string, public_key: string, kid: string,
 *   not_before: number, not_after: number, may_sign: string[], token_ttl_max_seconds: number,
 * }} RegionCertificate
 */

/**
 * The footer's `cert`: a Signed envelope {kid, payload, signature}, the
 * latter two in unpadded base64url.
 * @param {any} signed
 */
function parseSigned(signed) {
  if (!isObject(signed)) throw new Invalid('cert: expected an object');
  if (typeof signed.kid !== 'string') throw new Invalid('cert.kid: expected a string');
  const payload = typeof signed.payload === 'string' ? decodeBase64Url(signed.payload) : null;
  if (payload === null) throw new Invalid('cert.payload: expected unpadded base64url');
  const signature = typeof signed.signature === 'string' ? decodeBase64Url(signed.signature) : null;
  if (signature === null) throw new Invalid('cert.signature: expected unpadded base64url');
  return { kid: signed.kid, payload, signature, text: `${signed.kid}.${signed.payload}.${signed.signature}` };
}

/**
 * The time-independent part of certificate verification: the origin's
 * signature, then the fields (certificate.rs `check_signed_certificate`).
 * @param {OriginKey} origin @param {{payload: Buffer, signature: Buffer}} signed
 */
function checkSignedCertificate(origin, signed) {
  const message = Buffer.concat([Buffer.from(CONTEXT_REGION_CERTIFICATE), Buffer.from([0]), signed.payload]);
  if (!verifyStrict(origin.pub, message, signed.signature)) {
    throw new LicenseError('license_certificate_signature_invalid', 'region certificate is not signed by a known origin key');
  }
  const invalid = (/** @type {string} */ reason) => new LicenseError('license_certificate_invalid', `region certificate is invalid: ${reason}`);
  /** @type {RegionCertificate} */
  let cert;
  try {
    cert = parseStrictJsonBytes(signed.payload, { bigints: true });
    strictObject(cert, 'certificate', {
      serial: { required: true, check: str(RANDOM_ID, 'serial (32 lower-case hex digits)') },
      region: { required: true, check: anyString },
      public_key: { required: true, check: anyString },
      kid: { required: true, check: str(KEY_ID, 'key id') },
      not_before: { required: true, check: i64 },
      not_after: { required: true, check: i64 },
      may_sign: { required: true, check: arrayOf(anyString) },
      token_ttl_max_seconds: { required: true, check: u64 },
    });
  } catch (e) {
    throw invalid(truncate(/** @type {Error} */ (e).message));
  }
  bigintsToNumbers(cert);
  // RegionCertificate::check
  if (!validRegionName(cert.region)) throw invalid('region must be 1..=64 bytes of [a-z0-9-]');
  if (cert.may_sign.length > 8 || cert.may_sign.some((s) => s.length === 0 || Buffer.byteLength(s) > 32)) {
    throw invalid('may_sign must hold at most 8 entries of 1..=32 bytes');
  }
  if (cert.not_before >= cert.not_after) throw invalid('not_before must be before not_after');
  const raw = parsePublicKey(cert.public_key);
  if (typeof raw === 'string') throw invalid(raw);
  if (isSmallOrder(raw)) {
    throw new LicenseError('license_weak_public_key', `public key ${cert.kid} is weak (a small-order point) and is refused`);
  }
  if (keyIdOf(raw) !== cert.kid) throw invalid('kid does not match public_key');
  return { cert, pub: makePublicKey(raw) };
}

// ---------------------------------------------------------------- revocations

/**
 * What the verifier asks about revocations: a `Replica` (which holds the
 * revocations it received), or a plain object/lists.
 * @typedef {{licenseRevoked(jti: string): boolean, certificateRevoked(serial: string): boolean}} Revocations
 */

/**
 * Revocations from lists: `{licenses: [RevokedLicense|id], certificates:
 * [RevokedCertificate|serial]}` (the conformance file's shape).
 * @param {{licenses?: any[], certificates?: any[]}|null|undefined} lists
 * @returns {Revocations}
 */
export function revocationList(lists) {
  const licenses = new Set((lists?.licenses ?? []).map((r) => (typeof r === 'string' ? r : r.id)));
  const certificates = new Set((lists?.certificates ?? []).map((r) => (typeof r === 'string' ? r : r.serial)));
  return {
    licenseRevoked: (jti) => licenses.has(jti),
    certificateRevoked: (serial) => certificates.has(serial),
  };
}

/** @type {Revocations} */
const NOTHING_REVOKED = { licenseRevoked: () => false, certificateRevoked: () => false };

// ---------------------------------------------------------------- the verifier

/**
 * A verified license: its claims (the token's message, as JSON), the
 * footer's key id, and which key signed it.
 * @typedef {{
 *   claims: any,
 *   kid: string,
 *   signer: {type: 'origin', kid: string} | {type: 'region', region: string, serial: string, kid: string, certifiedBy: string},
 *   signerLabel: string,
 *   iat: number, nbf: number, exp: number,
 * }} License
 */

export class LicenseVerifier {
  /**
   * A verifier of tokens for `audience` signed by (or certified by) the keys
   * of `keySet` (the JSON the origin serves at
   * `/.well-known/tollgate-keys.json`). Throws `LicenseError`
   * (`license_key_set_invalid`, `license_weak_public_key`,
   * `license_audience_invalid`): a set with one bad key is refused whole.
   * @param {any} keySet
   * @param {string} audience
   * @param {{leewaySeconds?: number}} [options]
   */
  constructor(keySet, audience, options = {}) {
    const audBytes = typeof audience === 'string' ? Buffer.byteLength(audience) : 0;
    if (audBytes === 0 || audBytes > AUDIENCE_BYTES_MAX) {
      throw new LicenseError('license_audience_invalid', `the verifier's audience must be 1..=${AUDIENCE_BYTES_MAX} bytes`);
    }
    const keys = isObject(keySet) && Array.isArray(keySet.keys) ? keySet.keys : null;
    if (keys === null || keys.length === 0 || keys.length > KEYS_MAX) {
      throw new LicenseError('license_key_set_invalid', `origin public key set is invalid: key "": holds ${keys?.length ?? 0} keys; 1..=${KEYS_MAX} expected`);
    }
    /** @type {OriginKey[]} */
    this.origin = [];
    for (const k of keys) {
      const key = parseOriginKey(k);
      if (this.origin.some((o) => o.kid === key.kid)) {
        throw new LicenseError('license_key_set_invalid', `origin public key set is invalid: key ${JSON.stringify(key.kid)}: listed twice`);
      }
      this.origin.push(key);
    }
    this.audience = audience;
    this.leewaySeconds = Math.min(options.leewaySeconds ?? DEFAULT_LEEWAY_SECONDS, LEEWAY_SECONDS_MAX);
    /** Verified certificates, by their envelope. @type {Map<string, {cert: RegionCertificate, pub: any}>} */
    this.certificates = new Map();
  }

  /**
   * A verifier for `audience` with the key set fetched from the origin
   * (`https://` only; see `fetchKeySet`). Fetch again now and then (keys
   * rotate) and swap in the new verifier.
   * @param {string} url @param {string} audience
   * @param {{ca?: string|Buffer|null, caFile?: string|null, timeoutMs?: number, leewaySeconds?: number}} [options]
   */
  static async fetch(url, audience, options = {}) {
    const keySet = await fetchKeySet(url, options);
    return new LicenseVerifier(keySet, audience, options);
  }

  /** @param {string} kid */
  originKey(kid) {
    return this.origin.find((k) => k.kid === kid);
  }

  /**
   * Verifies `token` (see the module's check order). Throws `LicenseError`
   * with the Rust verifier's code.
   * @param {string} token
   * @param {{now?: number, deviceFingerprint?: string|Uint8Array|null,
   *   revocations?: Revocations|{licenses?: any[], certificates?: any[]}|null}} [options]
   * @returns {License}
   */
  verify(token, options = {}) {
    const now = options.now ?? Math.floor(Date.now() / 1000);
    const revoked = toRevocations(options.revocations);
    const implicit = options.deviceFingerprint != null ? deviceImplicit(options.deviceFingerprint) : null;

    // 1-2. Format, then the footer, unverified: it only picks a key.
    const decoded = decodeToken(token);
    const footer = parseFooter(decoded.footer);

    // 3. The key.
    const selected = this.selectKey(footer, now);

    // 4. The signature.
    const { message, deviceBound } = checkSignature(selected.pub, token, decoded, implicit);

    // 5. The claims.
    const { claims, iat, nbf, exp } = parseClaims(message);
    if (claims.device_bound !== deviceBound) {
      if (claims.device_bound) {
        throw new LicenseError('license_device_fingerprint_required', 'license is bound to a device; a device fingerprint is required');
      }
      throw new LicenseError('license_claims_invalid', 'license claims are invalid: device_bound is false in a token bound to a device');
    }

    // 6. The issuer must be the signer.
    const expectedIss = selected.type === 'origin' ? ISSUER_ORIGIN : `${ISSUER_REGION_PREFIX}${selected.cert.region}`;
    if (claims.iss !== expectedIss) {
      throw new LicenseError('license_issuer_mismatch', `token issuer is ${JSON.stringify(claims.iss)} but it was signed by ${JSON.stringify(expectedIss)}`);
    }

    // 7. Time.
    if (plusSeconds(now, this.leewaySeconds) < nbf) {
      throw new LicenseError('license_not_yet_valid', `license is not valid before ${nbf}`);
    }
    if (now >= plusSeconds(exp, this.leewaySeconds)) {
      throw new LicenseError('license_expired', `license expired at ${exp}`);
    }
    if (selected.type === 'region') {
      const cert = selected.cert;
      if (iat < cert.not_before || exp > cert.not_after) {
        throw new LicenseError('license_outside_certificate_validity', `token validity is outside the window of region certificate ${cert.serial}`);
      }
      const ttl = exp > iat ? exp - iat : 0;
      if (ttl > cert.token_ttl_max_seconds) {
        throw new LicenseError('license_ttl_over_certificate_max', `token lifetime of ${ttl} s exceeds the certificate's maximum of ${cert.token_ttl_max_seconds} s`);
      }
    }

    // 8. Audience.
    if (claims.aud !== this.audience) throw new LicenseError('license_wrong_audience', 'license is for another audience');

    // 9. Revocation.
    if (revoked.licenseRevoked(claims.jti)) throw new LicenseError('license_revoked', `license ${claims.jti} is revoked`);
    /** @type {License['signer']} */
    let signer;
    if (selected.type === 'origin') {
      signer = { type: 'origin', kid: selected.kid };
    } else {
      const cert = selected.cert;
      if (revoked.certificateRevoked(cert.serial)) {
        throw new LicenseError('license_certificate_revoked', `region certificate ${cert.serial} is revoked`);
      }
      signer = { type: 'region', region: cert.region, serial: cert.serial, kid: cert.kid, certifiedBy: selected.certifiedBy };
    }
    return {
      claims: canonicalClaims(claims),
      kid: footer.kid,
      signer,
      signerLabel: signer.type === 'origin' ? 'origin' : `region:${signer.region}`,
      iat, nbf, exp,
    };
  }

  /**
   * Step 3: the key the footer points at, checked as far as it can be
   * before the signature.
   * @param {{kid: string, cert: any}} footer @param {number} now
   * @returns {{type: 'origin', kid: string, pub: any} | {type: 'region', cert: RegionCertificate, pub: any, certifiedBy: string}}
   */
  selectKey(footer, now) {
    const origin = this.originKey(footer.kid);
    if (origin) {
      if (footer.cert != null) {
        throw new LicenseError('license_footer_invalid', 'license footer is invalid: an origin key id with a region certificate');
      }
      checkUsable(origin, now);
      return { type: 'origin', kid: origin.kid, pub: origin.pub };
    }
    if (footer.cert == null) throw new LicenseError('license_unknown_key_id', `license signed with unknown key ${footer.kid}`);
    const signed = footer.cert;
    const certifiedBy = this.originKey(signed.kid);
    if (!certifiedBy) throw new LicenseError('license_certificate_signature_invalid', 'region certificate is not signed by a known origin key');
    checkUsable(certifiedBy, now);
    let verified = this.certificates.get(signed.text);
    if (!verified) {
      verified = checkSignedCertificate(certifiedBy, signed);
      if (this.certificates.size >= CERTIFICATE_CACHE_ENTRIES_MAX) {
        const oldest = this.certificates.keys().next().value;
        if (oldest !== undefined) this.certificates.delete(oldest);
      }
      this.certificates.set(signed.text, verified);
    }
    const cert = verified.cert;
    // check_window
    if (plusSeconds(now, this.leewaySeconds) < cert.not_before) {
      throw new LicenseError('license_certificate_not_yet_valid', `region certificate ${cert.serial} is not valid before ${cert.not_before}`);
    }
    if (now >= plusSeconds(cert.not_after, this.leewaySeconds)) {
      throw new LicenseError('license_certificate_expired', `region certificate ${cert.serial} expired at ${cert.not_after}`);
    }
    if (cert.kid !== footer.kid) {
      throw new LicenseError('license_certificate_key_mismatch', `the footer names key ${footer.kid} but its certificate is for key ${cert.kid}`);
    }
    if (!cert.may_sign.includes('license')) {
      throw new LicenseError('license_certificate_not_for_licenses', `region certificate ${cert.serial} does not allow signing licenses`);
    }
    return { type: 'region', cert, pub: verified.pub, certifiedBy: certifiedBy.kid };
  }
}

/**
 * @param {Revocations|{licenses?: any[], certificates?: any[]}|null|undefined} r
 * @returns {Revocations}
 */
function toRevocations(r) {
  if (r == null) return NOTHING_REVOKED;
  const maybe = /** @type {any} */ (r);
  if (typeof maybe.licenseRevoked === 'function' && typeof maybe.certificateRevoked === 'function') return maybe;
  return revocationList(maybe);
}

/**
 * The implicit assertion for a device fingerprint.
 * @param {string|Uint8Array} fingerprint
 */
function deviceImplicit(fingerprint) {
  const bytes = typeof fingerprint === 'string' ? Buffer.from(fingerprint, 'utf8') : Buffer.from(fingerprint);
  if (bytes.length === 0 || bytes.length > DEVICE_FINGERPRINT_BYTES_MAX) {
    throw new LicenseError('license_device_fingerprint_invalid', `device fingerprint is ${bytes.length} bytes; 1..=${DEVICE_FINGERPRINT_BYTES_MAX} expected`);
  }
  return Buffer.concat([DEVICE_IMPLICIT_PREFIX, bytes]);
}

/**
 * The footer: `{"kid": ...}` or `{"kid": ..., "cert": <Signed>}`, nothing
 * else.
 * @param {Buffer} bytes
 */
function parseFooter(bytes) {
  const invalid = (/** @type {string} */ reason) => new LicenseError('license_footer_invalid', `license footer is invalid: ${truncate(reason)}`);
  if (bytes.length === 0) throw invalid('missing: a license token carries its key id in the footer');
  let footer;
  try {
    footer = parseStrictJsonBytes(bytes);
  } catch (e) {
    throw invalid(/** @type {Error} */ (e).message);
  }
  try {
    strictObject(footer, 'footer', {
      kid: { required: true, check: str(KEY_ID, 'key id') },
      cert: { check: () => {} },
    });
    const cert = footer.cert == null ? null : parseSigned(footer.cert);
    return { kid: /** @type {string} */ (footer.kid), cert };
  } catch (e) {
    throw invalid(/** @type {Error} */ (e).message);
  }
}

/**
 * Step 4: the signature, with this device's implicit assertion if given;
 * only when it fails is the unverified message looked at, to say "device
 * fingerprint required" rather than "bad signature".
 * @param {any} pub @param {string} token
 * @param {{message: Buffer, signature: Buffer, footer: Buffer}} decoded
 * @param {Buffer|null} implicit
 */
function checkSignature(pub, token, decoded, implicit) {
  const verifyWith = (/** @type {Uint8Array} */ assertion) => verifyStrict(
    pub, pae([HEADER_BYTES, decoded.message, decoded.footer, assertion]), decoded.signature,
  );
  if (verifyWith(implicit ?? new Uint8Array(0))) return { message: decoded.message, deviceBound: implicit !== null };
  const peek = peekDeviceBound(decoded.message);
  if (implicit === null && peek === true) {
    throw new LicenseError('license_device_fingerprint_required', 'license is bound to a device; a device fingerprint is required');
  }
  if (implicit !== null && peek === false) {
    if (verifyWith(new Uint8Array(0))) return { message: decoded.message, deviceBound: false };
  }
  throw new LicenseError('license_bad_signature', 'license signature does not verify');
}

/**
 * `device_bound` from the UNVERIFIED message, or null if it cannot be read.
 * @param {Buffer} message
 */
function peekDeviceBound(message) {
  try {
    // As serde reads `struct Peek { #[serde(default)] device_bound: bool }`:
    // valid JSON, other fields ignored whatever they hold.
    const v = parseStrictJsonBytes(message, { lenient: true, strictKeys: ['device_bound'] });
    if (!isObject(v)) return null;
    if (v.device_bound === undefined) return false;
    return typeof v.device_bound === 'boolean' ? v.device_bound : null;
  } catch {
    return null;
  }
}

/**
 * A license's entitlement that lets the holder use `feature` at `now`,
 * offline: the license in force (nbf <= now < exp, no leeway) and the
 * entitlement active and granting the feature (verify.rs `License::allows`).
 * @param {License} license @param {string} feature @param {number} now
 */
export function licenseAllows(license, feature, now) {
  if (now < license.nbf || now >= license.exp) return null;
  return license.claims.entitlements.find((/** @type {any} */ e) => {
    const usableUntil = e.valid_until == null ? null : plusSeconds(e.valid_until, e.grace_period_seconds ?? 0);
    const active = e.status === 'active' && e.valid_from <= now && (usableUntil === null || now < usableUntil);
    return active && e.features.some((/** @type {any} */ f) => f.feature === feature);
  }) ?? null;
}
