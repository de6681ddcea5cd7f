// The client's failover rules and the replica's watch stream, against local
// mock nodes (plain HTTP): next node on a connection error, a timeout or a
// 502/503/504; never on a 4xx or a decision; start from the last node that
// answered. The replica resumes on the next node with Last-Event-ID.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import {
  Client, Replica, AuthenticationError, InvalidRequestError, UnavailableError, NeedsRegionError,
  RevisionNotAppliedError, ConfigError, RateLimitedError,
} from '../src/index.js';

/** A mock node: `handler(req, body, res)` answers. */
async function node(name, handler) {
  const seen = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : null;
      seen.push({ method: req.method, url: req.url, headers: req.headers, body });
      handler(req, body, res, name);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return { url, seen, close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) };
}

/** A port nothing listens on. */
async function deadUrl() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise((r) => s.close(r));
  return `http://127.0.0.1:${port}`;
}

const decision = (name, over = {}) => ({
  allowed: true, reason: 'ALLOW', explanation: '', entitlement: 'acme-pro', limit: null, remaining: null,
  overage: false, valid_until: null, trial: false, seats: null, upgrade_hint: null, config: {},
  revision: 42, staleness_seconds: 1, answered_by: name, ...over,
});

function json(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': status === 200 ? 'application/json' : 'application/problem+json', ...headers });
  res.end(JSON.stringify(body));
}

const problem = (status, code, detail = 'x') => ({ type: 'about:blank', title: 't', status, code, detail });

test('a check goes to the first node, with the credential and the wire body', async () => {
  const a = await node('eu-1', (req, body, res, name) => json(res, 200, decision(name)));
  const client = new Client({ endpoints: [a.url], credential: 'tgc_abc.def' });
  try {
    const d = await client.check({ account: 'acme', subject: 'alice', feature: 'export', ip: '192.0.2.10', atLeastRevision: 40, explain: true });
    assert.equal(d.reason, 'ALLOW');
    assert.equal(d.answered_by, 'eu-1');
    assert.equal(d.endpoint, a.url);
    const sent = a.seen[0];
    assert.equal(sent.url, '/v1/check');
    assert.equal(sent.headers.authorization, 'Bearer tgc_abc.def');
    assert.equal(sent.headers['content-type'], 'application/json');
    assert.deepEqual(sent.body, { account: 'acme', subject: 'alice', feature: 'export', ip: '192.0.2.10', at_least_revision: 40, explain: true });
    // A consuming check gets an idempotency key, returned to the caller.
    const c = await client.check({ account: 'acme', feature: 'render', consume: 2 });
    assert.match(a.seen[1].body.idempotency_key, /^[0-9a-f]{32}$/);
    assert.equal(c.idempotency_key, a.seen[1].body.idempotency_key);
  } finally {
    client.close();
    await a.close();
  }
});

test('failover: a dead node, a 503 and a timeout are skipped; the answering node is tried first next time', async () => {
  const dead = await deadUrl();
  const busy = await node('eu-2', (req, body, res) => json(res, 503, problem(503, 'OVERLOADED')));
  const slow = await node('eu-3', () => {}); // never answers
  const good = await node('eu-4', (req, body, res, name) => json(res, 200, decision(name)));
  const client = new Client({ endpoints: [dead, busy.url, slow.url, good.url], timeoutMs: 300 });
  try {
    const d = await client.check({ account: 'acme', feature: 'export' });
    assert.equal(d.answered_by, 'eu-4');
    assert.equal(busy.seen.length, 1);
    assert.equal(slow.seen.length, 1);
    const again = await client.check({ account: 'acme', feature: 'export' });
    assert.equal(again.answered_by, 'eu-4');
    assert.equal(busy.seen.length, 1, 'the node that answered last is asked first');
    assert.equal(client.preferred, 3);
  } finally {
    client.close();
    await Promise.all([busy.close(), slow.close(), good.close()]);
  }
});

test('no failover on a 4xx or a denial; every node failing is UnavailableError', async () => {
  const unauth = await node('eu-1', (req, body, res) => json(res, 401, problem(401, 'CREDENTIAL_REQUIRED', 'an application credential is required')));
  const other = await node('eu-2', (req, body, res, name) => json(res, 200, decision(name)));
  const client = new Client({ endpoints: [unauth.url, other.url] });
  try {
    await assert.rejects(client.check({ account: 'acme', feature: 'export' }), (e) => {
      assert.ok(e instanceof AuthenticationError);
      assert.equal(e.status, 401);
      assert.equal(e.code, 'CREDENTIAL_REQUIRED');
      assert.equal(e.detail, 'an application credential is required');
      assert.equal(e.endpoint, unauth.url);
      return true;
    });
    assert.equal(other.seen.length, 0, 'a 4xx is not retried elsewhere');
  } finally {
    client.close();
    await Promise.all([unauth.close(), other.close()]);
  }

  const deny = await node('eu-1', (req, body, res, name) => json(res, 200, decision(name, { allowed: false, reason: 'GEO_BLOCKED' })));
  const spare = await node('eu-2', (req, body, res, name) => json(res, 200, decision(name)));
  const c2 = new Client({ endpoints: [deny.url, spare.url] });
  try {
    const d = await c2.check({ account: 'acme', feature: 'export' });
    assert.equal(d.reason, 'GEO_BLOCKED');
    assert.equal(spare.seen.length, 0, 'a decision is an answer');
  } finally {
    c2.close();
    await Promise.all([deny.close(), spare.close()]);
  }

  const limited = await node('eu-1', (req, body, res) => json(res, 429, problem(429, 'RATE_LIMITED'), { 'retry-after': '3' }));
  const c3 = new Client({ endpoints: [limited.url] });
  try {
    await assert.rejects(c3.check({ account: 'acme', feature: 'export' }), (e) => e instanceof RateLimitedError && e.retryAfter === 3);
  } finally {
    c3.close();
    await limited.close();
  }

  const n1 = await node('eu-1', (req, body, res) => json(res, 504, problem(504, 'REVISION_NOT_APPLIED')));
  const n2 = await node('eu-2', (req, body, res) => json(res, 502, 'bad gateway'));
  const c4 = new Client({ endpoints: [n1.url, n2.url, await deadUrl()] });
  try {
    await assert.rejects(c4.check({ account: 'acme', feature: 'export' }), (e) => {
      assert.ok(e instanceof UnavailableError);
      assert.equal(e.code, 'UNAVAILABLE');
      assert.deepEqual(e.attempts.map((a) => a.code), ['REVISION_NOT_APPLIED', 'UNAVAILABLE', 'CONNECTION']);
      return true;
    });
  } finally {
    c4.close();
    await Promise.all([n1.close(), n2.close()]);
  }
});

test('a batch sends checks and at_least_revision and returns results in order', async () => {
  const a = await node('eu-1', (req, body, res, name) => json(res, 200, {
    results: body.checks.map((c, i) => (i === 1 ? { error: { code: 'INVALID_ARGUMENT', message: 'feature' } } : { decision: decision(name) })),
    revision: 42, staleness_seconds: 0, answered_by: name,
  }));
  const client = new Client({ endpoints: [a.url] });
  try {
    const r = await client.checkBatch([
      { account: 'acme', subject: 'alice', feature: 'export' },
      { account: 'acme', feature: 'bad' },
    ], { atLeastRevision: 41 });
    assert.equal(r.results.length, 2);
    assert.equal(r.results[0].decision.reason, 'ALLOW');
    assert.equal(r.results[1].error.code, 'INVALID_ARGUMENT');
    assert.deepEqual(a.seen[0].body, { checks: [{ account: 'acme', subject: 'alice', feature: 'export' }, { account: 'acme', feature: 'bad' }], at_least_revision: 41 });
    await assert.rejects(client.checkBatch(new Array(129).fill({ account: 'a', feature: 'f' })), InvalidRequestError);
    await assert.rejects(client.check({ account: 'acme', feature: 'f', ip: '1.2.3.4', location: { country: 'DE' } }), InvalidRequestError);
  } finally {
    client.close();
    await a.close();
  }
});

test('configuration mistakes are ConfigError', () => {
  assert.throws(() => new Client({ endpoints: [] }), ConfigError);
  assert.throws(() => new Client({ endpoints: ['ftp://x'] }), ConfigError);
  assert.throws(() => new Client({ endpoints: ['https://a', 'http://b'] }), ConfigError);
  assert.throws(() => new Client({ endpoints: ['https://a'], credential: 'nope' }), ConfigError);
});

const STUDIO = [
  { put_product: { id: 'studio', name: 'Studio' } },
  { put_feature: { id: 'export', product: 'studio', name: 'Export', kind: 'boolean' } },
  { put_plan: { id: 'pro', product: 'studio', name: 'Pro', tier: 2, features: [{ feature: 'export' }] } },
  { put_account: { id: 'acme', name: 'Acme' } },
  { put_subject: { id: 'alice', account: 'acme', kind: 'user' } },
  { put_entitlement: { id: 'acme-pro', account: 'acme', grant: { plan: 'pro' }, valid_from: 0 } },
];

function sse(res, events) {
  for (const [event, data, id] of events) {
    res.write(`event: ${event}\r\n${id != null ? `id: ${id}\r\n` : ''}data: ${JSON.stringify(data)}\r\n\r\n`);
  }
}

test('the replica follows a watch stream and resumes on the next node with Last-Event-ID', async () => {
  const now = Math.floor(Date.now() / 1000);
  let firstHits = 0;
  const first = await node('eu-1', (req, body, res) => {
    firstHits++;
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    if (firstHits > 1) return; // later: a stream that says nothing
    sse(res, [
      ['state', { revision: 5, index: 0, last: false, mutations: STUDIO.slice(0, 3) }],
      ['state', { revision: 5, index: 1, last: true, mutations: STUDIO.slice(3) }, 5],
      ['heartbeat', { applied_revision: 5, staleness_seconds: 2 }],
    ]);
    // The node goes away mid-stream.
    setTimeout(() => res.destroy(), 50);
  });
  const second = await node('eu-2', (req, body, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    sse(res, [
      ['changes', { changes: [{ revision: 6, committed_at: now - 1, mutations: [{ put_account: { id: 'acme', name: 'Acme', status: 'suspended' } }, { some_future_kind: {} }] }], through_revision: 6 }, 6],
      ['heartbeat', { applied_revision: 6, staleness_seconds: null }],
    ]);
  });
  const client = new Client({ endpoints: [first.url, second.url], credential: 'tgc_a.b' });
  const replica = new Replica({ client, scope: 'acme', reconnectBackoffMinMs: 10 });
  try {
    replica.start();
    await replica.waitForRevision(5, 5000);
    const allowed = replica.check({ account: 'acme', subject: 'alice', feature: 'export' });
    assert.equal(allowed.reason, 'ALLOW');
    assert.equal(allowed.revision, 5);
    await replica.waitForRevision(6, 5000);
    const suspended = replica.check({ account: 'acme', subject: 'alice', feature: 'export' });
    assert.equal(suspended.reason, 'SUSPENDED');
    assert.ok(suspended.staleness_seconds <= 3, `staleness ${suspended.staleness_seconds}`);
    const resumed = second.seen[0];
    assert.equal(resumed.headers['last-event-id'], '5');
    assert.equal(resumed.url, '/v1/watch?account=acme&from_revision=5');
    assert.equal(resumed.headers.authorization, 'Bearer tgc_a.b');
    assert.equal(first.seen[0].url, '/v1/watch?account=acme&from_revision=0');
    assert.throws(() => replica.check({ account: 'globex', feature: 'export' }), NeedsRegionError);
    assert.throws(() => replica.check({ account: 'acme', feature: 'export', consume: 1 }), NeedsRegionError);
    assert.throws(() => replica.check({ account: 'acme', feature: 'export', ip: '192.0.2.1' }), NeedsRegionError);
    assert.throws(() => replica.check({ account: 'acme', feature: 'export', atLeastRevision: 7 }), RevisionNotAppliedError);
    assert.ok(replica.store.ignored.has('some_future_kind'));
  } finally {
    await replica.close();
    client.close();
    await Promise.all([first.close(), second.close()]);
  }
});

test('deadlineMs bounds the whole call, failovers included', async () => {
  const slow1 = await node('eu-1', () => {});
  const slow2 = await node('eu-2', () => {});
  const client = new Client({ endpoints: [slow1.url, slow2.url], timeoutMs: 5000, deadlineMs: 300 });
  try {
    const started = Date.now();
    await assert.rejects(client.check({ account: 'acme', feature: 'export' }), (e) => {
      assert.ok(e instanceof UnavailableError);
      assert.deepEqual(e.attempts.map((a) => a.code), ['TIMEOUT', 'TIMEOUT']);
      return true;
    });
    const took = Date.now() - started;
    assert.ok(took < 1500, `took ${took} ms`);
  } finally {
    client.close();
    await Promise.all([slow1.close(), slow2.close()]);
  }
});
