// Offline license verification against tokens minted here (origin- and
// region-signed), one refusal code at a time, in the Rust verifier's order.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sign as cryptoSign } from 'node:crypto';
import { LicenseVerifier, keyIdOf, licenseAllows } from '../src/license.js';
import { signToken, publicKeyOfSeed, privateKeyObject } from '../src/paseto.js';
import { Replica } from '../src/replica.js';

const NOW = 1_780_000_000;
const HOUR = 3600;
const DAY = 86400;
const b64 = (/** @type {Uint8Array} */ b) => Buffer.from(b).toString('base64url');

function rfc3339(t) {
  return new Date(t * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function key(seedByte, status = 'active') {
  const seed = Buffer.alloc(32, seedByte);
  const raw = publicKeyOfSeed(seed);
  const kid = keyIdOf(raw);
  return { seed, raw, kid, public: { kid, algorithm: 'Ed25519', public_key: b64(raw), created_at: NOW - DAY, status } };
}

const origin = key(1);
const oldOrigin = key(2, { overlap: { until: NOW + DAY } });
const retired = key(3, 'retired');
const expiredOverlap = key(4, { overlap: { until: NOW - 10 } });
const region = key(9);
const keySet = { keys: [origin.public, oldOrigin.public, retired.public, expiredOverlap.public] };

function claims(over = {}) {
  return {
    iss: 'tollgate-origin', sub: 'acme', aud: 'studio',
    iat: rfc3339(NOW - HOUR), nbf: rfc3339(NOW - HOUR), exp: rfc3339(NOW + DAY),
    jti: 'a'.repeat(32), account: 'acme', revision: 7, device_bound: false,
    entitlements: [{
      id: 'acme-pro', grant: { plan: 'pro' },
      features: [{ feature: 'export', config: { max_resolution: '4k' } }, { feature: 'render', usage_cap: { limit: 1000, enforcement: 'hard', additive: false } }],
      valid_from: NOW - DAY, status: 'active',
      geo_rules: [{ allow_continents: ['EU'] }],
      offline_policy: { offline_grace_seconds: 259200, after_grace: 'deny' },
      seats: { count: 2, mode: 'named' },
    }],
    ...over,
  };
}

function originToken(k = origin, c = claims(), device = null) {
  const implicit = device ? Buffer.concat([Buffer.from('tollgate.device.v1\0'), Buffer.from(device)]) : Buffer.alloc(0);
  return signToken(k.seed, Buffer.from(JSON.stringify(c)), Buffer.from(JSON.stringify({ kid: k.kid })), implicit);
}

function certificate(over = {}, by = origin) {
  const cert = {
    serial: 'c'.repeat(32), region: 'eu', public_key: b64(region.raw), kid: region.kid,
    not_before: NOW - DAY, not_after: NOW + 7 * DAY, may_sign: ['license'], token_ttl_max_seconds: 2 * DAY,
    ...over,
  };
  const payload = Buffer.from(JSON.stringify(cert));
  const message = Buffer.concat([Buffer.from('tollgate.region-certificate.v1\0'), payload]);
  const signature = cryptoSign(null, message, privateKeyObject(by.seed));
  return { kid: by.kid, payload: b64(payload), signature: b64(signature) };
}

function regionToken(c = claims({ iss: 'tollgate-region:eu' }), cert = certificate(), footerKid = region.kid, signer = region) {
  const footer = Buffer.from(JSON.stringify({ kid: footerKid, cert }));
  return signToken(signer.seed, Buffer.from(JSON.stringify(c)), footer);
}

const verifier = new LicenseVerifier(keySet, 'studio');

test('origin and region tokens verify, with their claims and signer', () => {
  const license = verifier.verify(originToken(), { now: NOW });
  assert.equal(license.signerLabel, 'origin');
  assert.deepEqual(license.claims, claims());
  assert.equal(license.kid, origin.kid);
  const r = verifier.verify(regionToken(), { now: NOW });
  assert.equal(r.signerLabel, 'region:eu');
  assert.equal(r.signer.certifiedBy, origin.kid);
  assert.ok(licenseAllows(r, 'export', NOW));
  assert.equal(licenseAllows(r, 'sso', NOW), null);
  // A key in its overlap window still verifies.
  assert.equal(verifier.verify(originToken(oldOrigin), { now: NOW }).signerLabel, 'origin');
});

test('every refusal has the Rust verifier code', () => {
  const device = 'laptop-1';
  const cases = [
    ['license_bad_signature', originToken().replace(/.(\.[^.]*)$/, (m, rest) => (m[0] === 'A' ? 'B' : 'A') + rest), {}],
    ['license_footer_invalid', signToken(origin.seed, Buffer.from(JSON.stringify(claims())), Buffer.from('{"kid":"' + origin.kid + '","x":1}')), {}],
    ['license_footer_invalid', signToken(origin.seed, Buffer.from(JSON.stringify(claims()))), {}],
    ['license_unknown_key_id', originToken(region), {}],
    ['license_key_retired', originToken(retired), {}],
    ['license_key_overlap_expired', originToken(expiredOverlap), {}],
    ['license_certificate_signature_invalid', regionToken(undefined, certificate({}, region)), {}],
    ['license_certificate_expired', regionToken(undefined, certificate({ not_before: NOW - 9 * DAY, not_after: NOW - DAY })), {}],
    ['license_certificate_not_yet_valid', regionToken(undefined, certificate({ not_before: NOW + DAY, not_after: NOW + 9 * DAY })), {}],
    ['license_certificate_key_mismatch', regionToken(undefined, certificate({ public_key: b64(key(10).raw), kid: key(10).kid })), {}],
    ['license_certificate_not_for_licenses', regionToken(undefined, certificate({ may_sign: ['report'] })), {}],
    ['license_certificate_invalid', regionToken(undefined, certificate({ region: 'EU' })), {}],
    ['license_issuer_mismatch', regionToken(claims()), {}],
    ['license_issuer_mismatch', originToken(origin, claims({ iss: 'tollgate-region:eu' })), {}],
    ['license_ttl_over_certificate_max', regionToken(claims({ iss: 'tollgate-region:eu', exp: rfc3339(NOW + 3 * DAY) })), {}],
    ['license_outside_certificate_validity', regionToken(claims({ iss: 'tollgate-region:eu', iat: rfc3339(NOW - 2 * DAY), nbf: rfc3339(NOW - 2 * DAY) })), {}],
    ['license_claims_invalid', originToken(origin, { ...claims(), extra: 1 }), {}],
    ['license_claims_invalid', originToken(origin, claims({ sub: 'globex' })), {}],
    ['license_claims_invalid', originToken(origin, claims({ exp: '2026-01-01T00:00:00+00:00' })), {}],
    ['license_expired', originToken(origin, claims({ exp: rfc3339(NOW - 60) })), {}],
    ['license_not_yet_valid', originToken(origin, claims({ nbf: rfc3339(NOW + 61), exp: rfc3339(NOW + DAY) })), {}],
    ['license_wrong_audience', originToken(origin, claims({ aud: 'other' })), {}],
    ['license_revoked', originToken(), { revocations: { licenses: ['a'.repeat(32)] } }],
    ['license_certificate_revoked', regionToken(), { revocations: { certificates: [{ serial: 'c'.repeat(32) }] } }],
    ['license_device_fingerprint_required', originToken(origin, claims({ device_bound: true }), device), {}],
    ['license_bad_signature', originToken(origin, claims({ device_bound: true }), device), { deviceFingerprint: 'other' }],
    ['license_device_fingerprint_invalid', originToken(), { deviceFingerprint: '' }],
    ['token_wrong_header', 'v3.public.xyz', {}],
  ];
  for (const [code, token, opts] of cases) {
    assert.throws(() => verifier.verify(token, { now: NOW, ...opts }), (e) => {
      assert.equal(e.code, code, `${code}: got ${e.code} (${e.message})`);
      return true;
    });
  }
  // Leeway: 60 s either side.
  assert.doesNotThrow(() => verifier.verify(originToken(origin, claims({ exp: rfc3339(NOW - 59) })), { now: NOW }));
  assert.doesNotThrow(() => verifier.verify(originToken(origin, claims({ nbf: rfc3339(NOW + 60), exp: rfc3339(NOW + DAY) })), { now: NOW }));
});

test('a device-bound token verifies with its fingerprint; an unbound one with any', () => {
  const bound = originToken(origin, claims({ device_bound: true }), 'laptop-1');
  assert.equal(verifier.verify(bound, { now: NOW, deviceFingerprint: 'laptop-1' }).claims.device_bound, true);
  assert.equal(verifier.verify(originToken(), { now: NOW, deviceFingerprint: 'laptop-1' }).claims.device_bound, false);
});

test('revocations come from a replica when one is given', () => {
  const replica = Replica.fromMutations([
    { revoke_license: { id: 'a'.repeat(32), account: 'acme', expires_at: NOW + DAY, revoked_at: NOW - 1 } },
    { revoke_certificate: { serial: 'c'.repeat(32), region: 'eu', not_after: NOW + 7 * DAY, revoked_at: NOW - 1 } },
  ], 3);
  assert.throws(() => verifier.verify(originToken(), { now: NOW, revocations: replica }), { code: 'license_revoked' });
  const other = regionToken(claims({ iss: 'tollgate-region:eu', jti: 'b'.repeat(32) }));
  assert.throws(() => verifier.verify(other, { now: NOW, revocations: replica }), { code: 'license_certificate_revoked' });
});

test('a bad key set or audience is refused whole', () => {
  assert.throws(() => new LicenseVerifier({ keys: [] }, 'studio'), { code: 'license_key_set_invalid' });
  assert.throws(() => new LicenseVerifier(keySet, ''), { code: 'license_audience_invalid' });
  assert.throws(() => new LicenseVerifier({ keys: [origin.public, origin.public] }, 'studio'), { code: 'license_key_set_invalid' });
  assert.throws(() => new LicenseVerifier({ keys: [{ ...origin.public, kid: region.kid }] }, 'studio'), { code: 'license_key_set_invalid' });
  const weak = Buffer.alloc(32); weak[0] = 1;
  assert.throws(() => new LicenseVerifier({ keys: [{ ...origin.public, kid: keyIdOf(weak), public_key: b64(weak) }] }, 'studio'), { code: 'license_weak_public_key' });
});
