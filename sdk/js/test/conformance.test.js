// The conformance cases every SDK runs (sdk/conformance/cases.json; the
// format is in sdk/PROTOCOL.md §2). Each data set's mutations go into a
// Replica; each check is decided at the case's `now` and origin contact;
// each token is verified at the case's `now` with its revocations. Only the
// fields in `expected` are compared. Mismatches are reported by case name.
//
// TOLLGATE_CONFORMANCE_FILE names another file.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Replica } from '../src/replica.js';
import { LicenseVerifier } from '../src/license.js';

const FILE = process.env.TOLLGATE_CONFORMANCE_FILE
  ?? fileURLToPath(new URL('../../conformance/cases.json', import.meta.url));
const present = existsSync(FILE);
const cases = present ? JSON.parse(readFileSync(FILE, 'utf8')) : null;

/** Fields of `expected` that `actual` does not match. */
function mismatches(expected, actual) {
  const wrong = [];
  for (const [field, want] of Object.entries(expected)) {
    const got = actual[field] === undefined ? null : actual[field];
    if (!deepEqual(want, got)) wrong.push(`${field}: expected ${JSON.stringify(want)}, got ${JSON.stringify(got)}`);
  }
  return wrong;
}

function deepEqual(a, b) {
  try {
    assert.deepStrictEqual(a, b);
    return true;
  } catch {
    return false;
  }
}

test('conformance: the file is a version-1 case file', { skip: present ? false : `no ${FILE}` }, () => {
  assert.equal(cases.version, 1);
  assert.ok(cases.checks.length > 0);
  assert.ok(cases.tokens.cases.length > 0);
});

test('conformance: every check case decides as expected through the replica', { skip: present ? false : `no ${FILE}` }, () => {
  const replicas = new Map();
  for (const [name, dataset] of Object.entries(cases.datasets)) {
    replicas.set(name, Replica.fromMutations(dataset.mutations, dataset.revision));
  }
  const failures = [];
  for (const c of cases.checks) {
    const replica = replicas.get(c.dataset);
    if (!replica) {
      failures.push(`${c.name}: no data set ${c.dataset}`);
      continue;
    }
    let local;
    try {
      local = replica.check({ ...c.check, location: c.location }, { now: c.now, lastOriginContact: c.last_origin_contact });
    } catch (e) {
      failures.push(`${c.name}: refused: ${e.message}`);
      continue;
    }
    if (local.revision !== cases.datasets[c.dataset].revision) failures.push(`${c.name}: decided at revision ${local.revision}`);
    const wrong = mismatches(c.expected, local);
    if (wrong.length) failures.push(`${c.name}: ${wrong.join('; ')}`);
  }
  assert.deepEqual(failures, [], `${failures.length} of ${cases.checks.length} check cases differ:\n${failures.join('\n')}`);
});

test('conformance: every token case verifies as expected', { skip: present ? false : `no ${FILE}` }, () => {
  const verifier = new LicenseVerifier(cases.tokens.key_set, cases.tokens.audience);
  const failures = [];
  for (const c of cases.tokens.cases) {
    let outcome;
    try {
      const license = verifier.verify(c.token, {
        now: c.now,
        deviceFingerprint: c.device_fingerprint ?? null,
        revocations: c.revocations,
      });
      outcome = { valid: true, claims: license.claims, signer: license.signerLabel };
    } catch (e) {
      if (typeof e.code !== 'string' || !e.code.match(/^(license|token)_/)) {
        failures.push(`${c.name}: threw ${e.stack}`);
        continue;
      }
      outcome = { valid: false, code: e.code };
    }
    const wrong = mismatches(c.expected, outcome);
    if (wrong.length) failures.push(`${c.name}: ${wrong.join('; ')}`);
  }
  assert.deepEqual(failures, [], `${failures.length} of ${cases.tokens.cases.length} token cases differ:\n${failures.join('\n')}`);
});
