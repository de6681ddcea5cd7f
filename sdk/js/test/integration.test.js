// The SDK against a real deployment: `tollgate dev --base-port 0` (an
// origin and two three-node regions, eu and us, with the demo data, every
// port on TLS with a throwaway CA). The binary is TOLLGATE_BIN, else
// <repo>/target/debug/tollgate (built once with `cargo build -p tollgate`
// when missing). TOLLGATE_SKIP_INTEGRATION=1 skips this file.
//
// Skipped with a message (not failed) when the region nodes do not serve
// the HTTP/JSON API yet (404 on POST /v1/check).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  Client, Replica, LicenseVerifier, AuthenticationError, KEY_SET_PATH,
} from '../src/index.js';
import {
  tollgateBinary, startDev, requestJson, issueRegionLicense, waitUntil,
} from '../testkit/dev.js';

let dev = null;
let skipReason = process.env.TOLLGATE_SKIP_INTEGRATION === '1' ? 'TOLLGATE_SKIP_INTEGRATION=1' : null;

before(async () => {
  if (skipReason) return;
  const { bin, why } = tollgateBinary();
  if (!bin) {
    skipReason = why;
    return;
  }
  dev = await startDev(bin);
  // Does the check port speak HTTP/JSON yet?
  const probe = await requestJson(`${dev.regions.eu[0]}/v1/check`, {
    method: 'POST', ca: dev.ca, body: { account: 'acme', feature: 'export' },
    headers: { authorization: `Bearer ${dev.credential}` },
  });
  if (probe.status === 404) {
    skipReason = `the region nodes answer 404 on POST /v1/check: the HTTP/JSON check API is not in this build of ${bin}`;
  }
});

after(async () => {
  await dev?.stop();
});

/** A URL nothing listens on. */
async function deadUrl() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise((r) => s.close(r));
  return `https://127.0.0.1:${port}`;
}

function admin(path, method = 'GET', body) {
  return requestJson(`${dev.endpoints.origin.rest}${path}`, {
    method, body, ca: dev.ca, headers: { authorization: `Bearer ${dev.adminKey}` },
  });
}

const itest = (name, fn) => test(name, async (t) => {
  if (skipReason) {
    t.skip(skipReason);
    return;
  }
  await fn(t);
});

itest('integration: a check in region eu from Germany is ALLOW; region us from the US is GEO_BLOCKED', async () => {
  const eu = new Client({ endpoints: dev.regions.eu, ca: dev.ca, credential: dev.credential });
  const us = new Client({ endpoints: dev.regions.us, ca: dev.ca, credential: dev.credential });
  try {
    const allowed = await eu.check({ account: 'acme', subject: 'alice', feature: 'export', ip: '192.0.2.10', explain: true });
    assert.equal(allowed.reason, 'ALLOW', JSON.stringify(allowed));
    assert.equal(allowed.allowed, true);
    assert.equal(allowed.entitlement, 'acme-pro');
    assert.deepEqual(allowed.config, { max_resolution: '4k' });
    assert.ok(allowed.answered_by, 'the node says who answered');
    assert.ok(allowed.explanation.length > 0);
    const blocked = await us.check({ account: 'acme', subject: 'alice', feature: 'export', ip: '198.51.100.10' });
    assert.equal(blocked.reason, 'GEO_BLOCKED', JSON.stringify(blocked));
    assert.equal(blocked.allowed, false);
  } finally {
    eu.close();
    us.close();
  }
});

itest('integration: a batch answers each check at one revision', async () => {
  const eu = new Client({ endpoints: dev.regions.eu, ca: dev.ca, credential: dev.credential });
  try {
    const batch = await eu.checkBatch([
      { account: 'acme', subject: 'alice', feature: 'export', ip: '192.0.2.10' },
      { account: 'acme', subject: 'alice', feature: 'export', ip: '198.51.100.10' },
      { account: 'acme', subject: 'carol', feature: 'export', ip: '192.0.2.10' },
      { account: 'nobody', feature: 'export' },
    ]);
    assert.deepEqual(batch.results.map((r) => r.decision?.reason ?? r.error?.code),
      ['ALLOW', 'GEO_BLOCKED', 'SEAT_LIMIT', 'UNKNOWN_ACCOUNT'], JSON.stringify(batch));
    assert.ok(Number.isInteger(batch.revision) && batch.revision > 0);
    assert.ok(batch.answered_by);
  } finally {
    eu.close();
  }
});

itest('integration: failover past a dead first node, then straight to the node that answered', async () => {
  const dead = await deadUrl();
  const eu = new Client({ endpoints: [dead, ...dev.regions.eu], ca: dev.ca, credential: dev.credential, timeoutMs: 2000 });
  try {
    const d = await eu.check({ account: 'acme', subject: 'alice', feature: 'export', ip: '192.0.2.10' });
    assert.equal(d.reason, 'ALLOW');
    assert.equal(d.endpoint, dev.regions.eu[0]);
    assert.equal(eu.preferred, 1);
    const again = await eu.check({ account: 'acme', subject: 'alice', feature: 'export', ip: '192.0.2.10' });
    assert.equal(again.endpoint, dev.regions.eu[0]);
  } finally {
    eu.close();
  }
});

itest('integration: no credential is a 401 CREDENTIAL_REQUIRED problem, not retried', async () => {
  const eu = new Client({ endpoints: dev.regions.eu, ca: dev.ca });
  try {
    await assert.rejects(eu.check({ account: 'acme', subject: 'alice', feature: 'export' }), (e) => {
      assert.ok(e instanceof AuthenticationError, e.stack);
      assert.equal(e.status, 401);
      assert.equal(e.code, 'CREDENTIAL_REQUIRED');
      assert.ok(e.detail);
      assert.equal(e.endpoint, dev.regions.eu[0]);
      return true;
    });
  } finally {
    eu.close();
  }
});

itest('integration: a replica follows region eu and answers the change an origin write made', async () => {
  const eu = new Client({ endpoints: dev.regions.eu, ca: dev.ca, credential: dev.credential });
  const events = [];
  const replica = new Replica({ client: eu, onEvent: (e) => events.push(e) });
  try {
    replica.start();
    const current = await eu.check({ account: 'initech', subject: 'peter', feature: 'export' });
    await replica.waitForRevision(current.revision, 30_000);
    const before = replica.check({ account: 'initech', subject: 'peter', feature: 'export', location: { country: 'DE', continent: 'EU' } });
    assert.equal(before.reason, 'ALLOW', JSON.stringify(before));
    assert.equal(before.approximate, true, 'floating seats are the region\'s');
    const local = replica.check({ account: 'acme', subject: 'alice', feature: 'export', location: { country: 'DE', continent: 'EU' } });
    assert.equal(local.reason, 'ALLOW');

    const put = await admin('/v1/accounts/initech', 'PUT', { id: 'initech', name: 'Initech', status: 'suspended' });
    assert.ok(put.status >= 200 && put.status < 300, put.text);
    const revision = put.json.revision;
    assert.ok(revision > current.revision, put.text);
    await replica.waitForRevision(revision, 30_000);
    const after = replica.check({ account: 'initech', subject: 'peter', feature: 'export' });
    assert.equal(after.reason, 'SUSPENDED', JSON.stringify(after));
    assert.equal(after.revision, replica.revision);
    // The region agrees.
    const remote = await eu.check({ account: 'initech', subject: 'peter', feature: 'export', atLeastRevision: revision });
    assert.equal(remote.reason, 'SUSPENDED');
    // A heartbeat or a change dated the origin contact.
    await waitUntil('a staleness estimate', () => (replica.staleness().origin_seconds !== null ? true : undefined), 15_000);
    assert.ok(events.some((e) => e.type === 'following'));
  } finally {
    await replica.close();
    eu.close();
  }
});

itest('integration: licenses issued by the origin and by region eu verify offline; a revoked one is refused', async () => {
  const keys = await requestJson(dev.endpoints.origin.public_keys, { ca: dev.ca });
  assert.equal(keys.status, 200, keys.text);
  assert.ok(dev.endpoints.origin.public_keys.endsWith(KEY_SET_PATH));
  const verifier = new LicenseVerifier(keys.json, 'studio');
  const fetched = await LicenseVerifier.fetch(dev.endpoints.origin.rest, 'studio', { ca: dev.ca });
  await assert.rejects(LicenseVerifier.fetch(dev.endpoints.origin.rest.replace('https:', 'http:'), 'studio'), { code: 'CONFIG' });

  const issued = await admin('/v1/accounts/acme/licenses', 'POST', { audience: 'studio' });
  assert.ok(issued.status === 200 || issued.status === 201, issued.text);
  const fromOrigin = verifier.verify(issued.json.token);
  assert.deepEqual(fetched.verify(issued.json.token).claims, fromOrigin.claims);
  assert.equal(fromOrigin.signerLabel, 'origin');
  assert.equal(fromOrigin.claims.account, 'acme');
  assert.equal(fromOrigin.claims.jti, issued.json.id);
  assert.ok(fromOrigin.claims.entitlements.some((e) => e.id === 'acme-pro'));

  const regional = await issueRegionLicense(dev.regions.eu[0], {
    ca: dev.ca, credential: dev.credential, account: 'acme', audience: 'studio',
  });
  const fromRegion = verifier.verify(regional.token);
  assert.equal(fromRegion.signerLabel, 'region:eu');
  assert.equal(fromRegion.signer.certifiedBy, keys.json.keys.find((k) => k.status === 'active').kid);
  assert.throws(() => new LicenseVerifier(keys.json, 'other').verify(regional.token), { code: 'license_wrong_audience' });

  // Revoked at the origin: a replica that received the revocation refuses it.
  const eu = new Client({ endpoints: dev.regions.eu, ca: dev.ca, credential: dev.credential });
  const replica = new Replica({ client: eu, scope: 'acme' });
  try {
    replica.start();
    const revoked = await admin(`/v1/accounts/acme/licenses/${issued.json.id}/revoke`, 'POST');
    assert.ok(revoked.status >= 200 && revoked.status < 300, revoked.text);
    await replica.waitForRevision(revoked.json.revision, 30_000);
    assert.throws(() => verifier.verify(issued.json.token, { revocations: replica }), { code: 'license_revoked' });
    assert.equal(verifier.verify(regional.token, { revocations: replica }).signerLabel, 'region:eu');
  } finally {
    await replica.close();
    eu.close();
  }
});
