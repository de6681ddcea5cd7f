// The replica's parts without a network: the SSE parser, the store's
// apply and views, events out of order, staleness from heartbeats and
// change records, and what only the region can answer.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SseParser } from '../src/sse.js';
import { Store, Dirty, datasetToMutations } from '../src/store.js';
import { Replica } from '../src/replica.js';
import { NeedsRegionError, ProtocolError } from '../src/errors.js';

test('SSE: fields, comments, multi-line data, CRLF split across chunks, ids', () => {
  const p = new SseParser();
  const text = '\ufeff: a comment\r\nevent: state\r\nid: 5\r\ndata: {"a":\r\ndata: 1}\r\n\r\nevent: heartbeat\ndata:{"b":2}\n\ndata: plain\r\rretry: 10\nid\n\n';
  const events = [];
  // Every split point gives the same events.
  for (let cut = 0; cut <= text.length; cut++) {
    const q = new SseParser();
    const got = [...q.push(text.slice(0, cut)), ...q.push(text.slice(cut))];
    events.push(JSON.stringify(got));
  }
  assert.equal(new Set(events).size, 1, 'split-independent');
  const got = p.push(text);
  assert.deepEqual(got, [
    { event: 'state', data: '{"a":\n1}', id: '5' },
    { event: 'heartbeat', data: '{"b":2}', id: '5' },
    { event: 'message', data: 'plain', id: '5' },
  ]);
  assert.equal(p.lastEventId, '', 'a bare id line resets it');
  // An event without data is not dispatched.
  assert.deepEqual(new SseParser().push('event: x\n\n'), []);
});

const base = [
  { put_product: { id: 'p', name: 'P' } },
  { put_feature: { id: 'f', product: 'p', name: 'F', kind: 'boolean', config: { level: '1' } } },
  { put_feature: { id: 'm', product: 'p', name: 'M', kind: { metered: { unit: 'calls', period: 'month' } } } },
  { put_plan: { id: 'basic', product: 'p', name: 'Basic', tier: 1, features: [{ feature: 'f' }, { feature: 'm', usage_cap: { limit: 10 } }] } },
  { put_account: { id: 'acme', name: 'Acme' } },
  { put_account: { id: 'globex', name: 'Globex' } },
  { put_subject: { id: 'alice', account: 'acme', kind: 'user' } },
  { put_subject: { id: 'bob', account: 'acme', kind: 'user' } },
  { put_entitlement: { id: 'e1', account: 'acme', grant: { plan: 'basic' }, valid_from: 0 } },
  { put_entitlement: { id: 'e2', account: 'globex', grant: { feature: { feature: 'f' } }, valid_from: 0 } },
];

test('store: puts replace, deletes remove, an entitlement can move, views follow', () => {
  const store = new Store();
  const dirty = new Dirty();
  for (const m of base) store.apply(m, dirty);
  assert.equal(store.objects, 2 + 2 + 2);
  assert.ok(dirty.catalog);
  let views = store.views();
  assert.deepEqual([...views.keys()].sort(), ['acme', 'globex']);
  const d2 = new Dirty();
  store.apply({ delete_subject: { account: 'acme', subject: 'bob' } }, d2);
  store.apply({ put_entitlement: { id: 'e2', account: 'acme', grant: { feature: { feature: 'f' } }, valid_from: 0 } }, d2);
  assert.deepEqual([...d2.accounts].sort(), ['acme', 'globex']);
  assert.equal(d2.catalog, false);
  views = store.updateViews(views, d2);
  assert.deepEqual(views.get('acme').entitlements.map((e) => e.id), ['e1', 'e2']);
  assert.deepEqual(views.get('globex').entitlements, []);
  assert.equal(store.objects, 2 + 1 + 2);
  // An account known only by its subjects has no view.
  store.apply({ put_subject: { id: 'x', account: 'initech', kind: 'user' } }, d2);
  assert.equal(store.view('initech'), null);
  // The data set round-trips.
  const again = new Store();
  for (const m of datasetToMutations(store.toDataset())) again.apply(m, new Dirty());
  assert.deepEqual(again.toDataset(), store.toDataset());
});

test('replica: local decisions, approximate answers, refusals', () => {
  const r = Replica.fromMutations(base, 5);
  const f = r.check({ account: 'acme', subject: 'alice', feature: 'f' });
  assert.equal(f.reason, 'ALLOW');
  assert.deepEqual(f.config, { level: '1' });
  assert.equal(f.revision, 5);
  assert.equal(f.staleness_seconds, 0, 'data built in counts as current');
  assert.equal(f.approximate, false);
  const m = r.check({ account: 'acme', subject: 'alice', feature: 'm' });
  assert.equal(m.remaining, 10, 'nothing counted locally');
  assert.equal(m.approximate, true, 'a capped counter lives in the region');
  assert.equal(m.metering.limit, 10);
  assert.equal(r.check({ account: 'nobody', feature: 'f' }).reason, 'UNKNOWN_ACCOUNT');
  assert.equal(r.check({ account: 'acme', subject: 'zed', feature: 'f' }).reason, 'UNKNOWN_SUBJECT');
  assert.equal(r.check({ account: 'globex', feature: 'm' }).reason, 'NOT_ENTITLED');
  assert.deepEqual(r.check({ account: 'globex', feature: 'm' }).upgrade_hint, { plan: 'basic', limit: 10 });
  assert.throws(() => r.check({ account: 'acme', feature: 'm', consume: 1 }), NeedsRegionError);
  const explained = r.check({ account: 'acme', subject: 'alice', feature: 'f', explain: true });
  assert.equal(explained.explanation, 'Allowed by entitlement e1.');
  // Never heard from the origin: the default policy (3 days, deny) denies.
  const never = r.check({ account: 'acme', feature: 'f' }, { now: 1000, lastOriginContact: null });
  assert.equal(never.reason, 'STALE_DATA');
  assert.equal(never.staleness_seconds, null);
  const stale = r.check({ account: 'acme', feature: 'f' }, { now: 1_000_000, lastOriginContact: 1_000_000 - 259_201 });
  assert.equal(stale.reason, 'STALE_DATA');
  const fresh = r.check({ account: 'acme', feature: 'f' }, { now: 1_000_000, lastOriginContact: 1_000_000 - 259_200 });
  assert.equal(fresh.reason, 'ALLOW');
});

test('replica: state in parts, then changes; staleness from records and heartbeats; out of order refused', () => {
  let now = 2_000_000_000;
  const r = new Replica({ clock: () => now, scope: 'acme' });
  assert.equal(r.staleness().origin_seconds, null);
  r.applyEvent('state', { revision: 7, index: 0, last: false, mutations: base.slice(0, 4) });
  assert.equal(r.revision, 0, 'published only when whole');
  r.applyEvent('state', { revision: 7, index: 1, last: true, mutations: base.slice(4) });
  assert.equal(r.revision, 7);
  // Never heard from the origin: stale.
  assert.equal(r.check({ account: 'acme', feature: 'f' }).reason, 'STALE_DATA');
  r.applyEvent('heartbeat', { applied_revision: 7, staleness_seconds: 30 });
  assert.equal(r.staleness().origin_seconds, 30);
  now += 5;
  assert.equal(r.check({ account: 'acme', feature: 'f' }).staleness_seconds, 35);
  r.applyEvent('changes', {
    changes: [{ revision: 8, committed_at: now - 2, mutations: [{ put_entitlement: { id: 'e1', account: 'acme', grant: { plan: 'basic' }, valid_from: 0, status: 'revoked' } }] }],
    through_revision: 9,
  });
  assert.equal(r.revision, 9, 'through_revision, not the last record');
  assert.equal(r.staleness().origin_seconds, 2, 'no earlier than the commit');
  r.applyEvent('heartbeat', { applied_revision: 9, staleness_seconds: 100 });
  assert.equal(r.staleness().origin_seconds, 2, 'an older contact never moves it back');
  assert.equal(r.check({ account: 'acme', subject: 'alice', feature: 'f' }).reason, 'REVOKED');
  assert.throws(() => r.check({ account: 'globex', feature: 'f' }), NeedsRegionError);
  assert.throws(() => r.applyEvent('state', { revision: 10, index: 1, last: true, mutations: [] }), ProtocolError);
  r.applyEvent('state', { revision: 10, index: 0, last: false, mutations: [] });
  assert.throws(() => r.applyEvent('changes', { changes: [], through_revision: 11 }), ProtocolError);
  const small = new Replica({ objectsMax: 2 });
  assert.throws(() => small.applyEvent('state', { revision: 1, index: 0, last: true, mutations: base }), /more than 2 objects/);
  assert.equal(small.revision, 0);
});
