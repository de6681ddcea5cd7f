// The license verifier against the Rust verifier itself, on tokens made
// here: the conformance key set's origin key (fixed seed) signs mutated
// claims and footers, and re-signs mutated region certificates; `tollgate
// ctl license verify --keys ... --at ...` (tollgate_license::Verifier)
// must agree on valid/refused, the refusal code, and the claims.
//
// Skipped without a tollgate binary or the conformance file.
// TOLLGATE_LICENSE_DIFF_CASES (default 200), TOLLGATE_DIFF_SEED.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { sign as cryptoSign } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LicenseVerifier, keyIdOf } from '../src/license.js';
import { signToken, publicKeyOfSeed, privateKeyObject } from '../src/paseto.js';
import { REPO } from '../testkit/dev.js';

const BIN = process.env.TOLLGATE_BIN ?? join(REPO, 'target', 'debug', 'tollgate');
const FILE = process.env.TOLLGATE_CONFORMANCE_FILE ?? fileURLToPath(new URL('../../conformance/cases.json', import.meta.url));
const CASES = Number(process.env.TOLLGATE_LICENSE_DIFF_CASES ?? 200);
const SEED = Number(process.env.TOLLGATE_DIFF_SEED ?? 7);
const skip = !existsSync(BIN) ? `no ${BIN}` : !existsSync(FILE) ? `no ${FILE}` : false;

function prng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { int: (n) => Math.floor(next() * n), pick: (xs) => xs[Math.floor(next() * xs.length)], chance: (p) => next() < p };
}

/** Values to put somewhere; `RAW:` ones go into the JSON text as written. */
const ODD_VALUES = [
  null, 0, -1, 1, 7, 'x', '', true, false, [], {}, [1], { a: 1 }, 'AB', 'eu-west', 'EU', 'DE', 'US-CA',
  'RAW:1.5', 'RAW:1e3', 'RAW:18446744073709551615', 'RAW:18446744073709551616', 'RAW:9223372036854775808',
  'RAW:-9223372036854775809', '2026-11-28T07:00:00Z', '2026-11-28T07:00:00+00:00', '2026-11-28t07:00:00Z',
  'a'.repeat(300), 'hard', 'soft', 'named', 'allow', 'deny', 'active', 'revoked', 'tollgate-origin',
  'tollgate-region:eu-west', 'acme', 'acme/alice', 'studio', '\ud800', 'é', 'cececececececececececececececece',
];

/** Every [container, key] inside `v`. */
function slots(v, out = []) {
  if (Array.isArray(v)) v.forEach((x, i) => { out.push([v, i]); slots(x, out); });
  else if (v && typeof v === 'object') for (const k of Object.keys(v)) { out.push([v, k]); slots(v[k], out); }
  return out;
}

/** A mutated copy of `doc`, as JSON text. */
function mutate(r, doc, unknownKey = 'zz') {
  const copy = structuredClone(doc);
  const n = r.int(2) + 1;
  let rawDuplicate = null;
  for (let k = 0; k < n; k++) {
    const all = slots(copy);
    if (all.length === 0) break;
    const [container, key] = r.pick(all);
    const op = r.int(5);
    if (op === 0 && !Array.isArray(container)) delete container[key];
    else if (op === 1 && container[key] && typeof container[key] === 'object' && !Array.isArray(container[key])) container[key][unknownKey] = 1;
    else if (op === 2 && !Array.isArray(container)) rawDuplicate = key;
    else container[key] = r.pick(ODD_VALUES);
  }
  let text = JSON.stringify(copy).replace(/"RAW:([^"]*)"/g, '$1');
  if (rawDuplicate !== null && text.startsWith('{')) {
    text = `{${JSON.stringify(String(rawDuplicate))}:${JSON.stringify(copy[rawDuplicate] ?? 1)},${text.slice(1)}`;
    if (text.endsWith(',}')) text = text.replace(/,}$/, '}');
  }
  return text;
}

function ctlVerify(dir, token, now, device) {
  const tokenFile = join(dir, `t-${Math.random().toString(16).slice(2)}`);
  writeFileSync(tokenFile, token);
  const args = ['ctl', '--output', 'json', 'license', 'verify', `@${tokenFile}`, '--keys', join(dir, 'keys.json'), '--audience', 'studio', '--at', String(now)];
  if (device) args.push('--device-fingerprint', device);
  return new Promise((resolve, reject) => {
    execFile(BIN, args, { maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      if (err && err.code !== 10) reject(new Error(`tollgate ${args.join(' ')}: ${stderr || err.message}`));
      else {
        const out = JSON.parse(stdout);
        resolve(out.valid ? { valid: true, claims: out.claims } : { valid: false, code: out.code });
      }
    });
  });
}

test('differential: license tokens verify as `tollgate ctl license verify` does', { skip }, async () => {
  const cases = JSON.parse(readFileSync(FILE, 'utf8'));
  const keySet = cases.tokens.key_set;
  const seeds = new Map();
  for (let s = 0; s < 256; s++) seeds.set(keyIdOf(publicKeyOfSeed(Buffer.alloc(32, s))), Buffer.alloc(32, s));
  const active = keySet.keys.find((k) => k.status === 'active');
  const originSeed = seeds.get(active.kid);
  assert.ok(originSeed, 'the conformance origin key comes from a fixed seed');
  const originCase = cases.tokens.cases.find((c) => c.expected.valid && c.expected.signer === 'origin');
  const regionCase = cases.tokens.cases.find((c) => c.expected.valid && c.expected.signer.startsWith('region:'));
  const regionFooter = JSON.parse(Buffer.from(regionCase.token.split('.')[3], 'base64url').toString());
  const regionSeed = seeds.get(regionFooter.kid);
  assert.ok(regionSeed, 'the conformance region key comes from a fixed seed');
  const certificate = JSON.parse(Buffer.from(regionFooter.cert.payload, 'base64url').toString());

  const dir = mkdtempSync(join(tmpdir(), 'tollgate-js-ldiff-'));
  writeFileSync(join(dir, 'keys.json'), JSON.stringify(keySet));
  const verifier = new LicenseVerifier(keySet, cases.tokens.audience);
  const r = prng(SEED);
  const failures = [];
  const outcomes = new Map();
  try {
    const work = [];
    for (let i = 0; i < CASES; i++) {
      const kind = r.int(4);
      let token;
      let now = originCase.now;
      const device = r.chance(0.1) ? 'device-1' : null;
      const implicit = r.chance(0.1) ? Buffer.from('tollgate.device.v1\0device-1') : Buffer.alloc(0);
      if (kind === 0 || kind === 1) {
        // Origin-signed, mutated claims (kind 1: and a mutated footer).
        const claims = r.chance(0.15) ? JSON.stringify(originCase.expected.claims) : mutate(r, originCase.expected.claims);
        const footer = kind === 1 ? mutate(r, { kid: active.kid }, 'cert') : JSON.stringify({ kid: active.kid });
        token = signToken(originSeed, Buffer.from(claims), Buffer.from(footer), implicit);
      } else {
        // Region-signed, with a (possibly mutated) certificate re-signed by the origin key.
        const certText = kind === 3 ? mutate(r, certificate) : JSON.stringify(certificate);
        const payload = Buffer.from(certText);
        const sig = cryptoSign(null, Buffer.concat([Buffer.from('tollgate.region-certificate.v1\0'), payload]), privateKeyObject(originSeed));
        const cert = { kid: active.kid, payload: payload.toString('base64url'), signature: sig.toString('base64url') };
        const claims = kind === 2 && r.chance(0.5) ? mutate(r, regionCase.expected.claims) : JSON.stringify(regionCase.expected.claims);
        token = signToken(regionSeed, Buffer.from(claims), Buffer.from(JSON.stringify({ kid: regionFooter.kid, cert })), implicit);
        now = regionCase.now + r.pick([0, 0, 3600, -86400 * 400, 86400 * 30]);
      }
      work.push({ token, now, device });
    }
    // A few at a time: each is a process.
    for (let i = 0; i < work.length; i += 8) {
      const batch = work.slice(i, i + 8);
      const rust = await Promise.all(batch.map((w) => ctlVerify(dir, w.token, w.now, w.device)));
      batch.forEach((w, j) => {
        let js;
        try {
          const license = verifier.verify(w.token, { now: w.now, deviceFingerprint: w.device });
          js = { valid: true, claims: license.claims };
        } catch (e) {
          js = typeof e.code === 'string' && /^(license|token)_/.test(e.code) ? { valid: false, code: e.code } : { valid: false, code: `THREW ${e.stack}` };
        }
        const key = rust[j].valid ? 'valid' : rust[j].code;
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
        try {
          assert.deepStrictEqual(js, rust[j]);
        } catch {
          const claims = Buffer.from(w.token.split('.')[2], 'base64url');
          const footer = Buffer.from(w.token.split('.')[3] ?? '', 'base64url').toString();
          let cert = '';
          try {
            cert = Buffer.from(JSON.parse(footer).cert.payload, 'base64url').toString();
          } catch { /* none */ }
          failures.push(`now ${w.now}, device ${w.device}: rust ${JSON.stringify(rust[j]).slice(0, 200)}, js ${JSON.stringify(js).slice(0, 200)}; message ${claims.subarray(0, claims.length - 64).toString().slice(0, 300)}; footer ${footer.slice(0, 200)}; certificate ${cert}`);
        }
      });
    }
    if (process.env.TOLLGATE_DIFF_VERBOSE) console.log(Object.fromEntries(outcomes));
    assert.deepEqual(failures, [], `${failures.length} of ${work.length} differ:\n${failures.slice(0, 8).join('\n')}`);
    assert.ok(outcomes.get('valid') > 0 && outcomes.size >= 4, JSON.stringify(Object.fromEntries(outcomes)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
