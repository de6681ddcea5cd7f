// The engine port against the Rust engine itself, on random data sets:
// `tollgate eval` decides one check with `tollgate_engine::decide` (with
// usage consumed and floating seats held, which a replica never sees), and
// the port must give the same decision, explanation and metering.
//
// Skipped when there is no tollgate binary (TOLLGATE_BIN, else
// <repo>/target/debug/tollgate). TOLLGATE_DIFF_CASES (default 400) and
// TOLLGATE_DIFF_SEED choose how many and which.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decide, buildView, explain, periodKey } from '../src/engine.js';
import { Store, Dirty, datasetToMutations } from '../src/store.js';
import { REPO } from '../testkit/dev.js';

const BIN = process.env.TOLLGATE_BIN ?? join(REPO, 'target', 'debug', 'tollgate');
const CASES = Number(process.env.TOLLGATE_DIFF_CASES ?? 400);
const SEED = Number(process.env.TOLLGATE_DIFF_SEED ?? 20261206);
const NOW = 1_780_000_000;
const DAY = 86400;

function prng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n) => Math.floor(next() * n);
  const pick = (xs) => xs[int(xs.length)];
  const chance = (p) => next() < p;
  const some = (xs, p = 0.3) => xs.filter(() => chance(p));
  return { int, pick, chance, some };
}

const COUNTRIES = ['DE', 'FR', 'US', 'KP', 'JP'];
const CONTINENTS = ['EU', 'NA', 'AS'];
const SUBDIVISIONS = ['DE-BE', 'US-CA', 'FR-75C'];

function geoRule(r) {
  if (!r.chance(0.2)) return undefined;
  const rule = {};
  if (r.chance(0.4)) rule.allow_countries = r.some(COUNTRIES, 0.5);
  if (r.chance(0.3)) rule.deny_countries = r.some(COUNTRIES, 0.3);
  if (r.chance(0.4)) rule.allow_continents = r.some(CONTINENTS, 0.5);
  if (r.chance(0.2)) rule.deny_continents = r.some(CONTINENTS, 0.3);
  if (r.chance(0.2)) rule.allow_subdivisions = r.some(SUBDIVISIONS, 0.5);
  if (r.chance(0.2)) rule.deny_subdivisions = r.some(SUBDIVISIONS, 0.3);
  if (r.chance(0.3)) rule.block_anonymous = true;
  if (r.chance(0.3)) rule.unknown_location = r.pick(['allow', 'deny']);
  else if (r.chance(0.15)) rule.deny_unknown_location = r.chance(0.5); // the older spelling
  return rule;
}

function offline(r) {
  if (!r.chance(0.2)) return undefined;
  return { offline_grace_seconds: r.pick([60, 3600, 3 * DAY, 7 * DAY]), after_grace: r.pick(['allow', 'deny']) };
}

function cap(r) {
  if (!r.chance(0.5)) return undefined;
  return { limit: r.pick([0, 1, 5, 10, 100]), enforcement: r.pick(['hard', 'soft', 'hard']), additive: r.chance(0.25) };
}

function grant(r, feature) {
  const g = { feature };
  const c = cap(r);
  if (c) g.usage_cap = c;
  if (r.chance(0.3)) g.config = { level: r.pick(['1', '2', '3']), [r.pick(['a', 'b'])]: 'x' };
  return g;
}

function dataset(r) {
  const features = ['f1', 'f2', 'f3', 'f4', 'f5'];
  const catalog = {
    products: { p: { id: 'p', name: 'P' } },
    features: {},
    plans: {},
    addons: {},
    default_offline_policy: { offline_grace_seconds: r.pick([3600, 3 * DAY]), after_grace: r.pick(['deny', 'allow']) },
  };
  for (const id of features) {
    const f = { id, product: 'p', name: id.toUpperCase(), kind: r.chance(0.5) ? 'boolean' : { metered: { unit: 'u', period: r.pick(['day', 'month', 'lifetime']) } } };
    const g = geoRule(r);
    if (g) f.geo_rule = g;
    const o = offline(r);
    if (o) f.offline_policy = o;
    if (r.chance(0.4)) f.config = { level: '0', mode: r.pick(['x', 'y']) };
    catalog.features[id] = f;
  }
  const plans = ['bronze', 'silver', 'gold', 'platinum'];
  for (const id of plans) {
    const fs = r.some(features, 0.5);
    const plan = { id, product: 'p', name: id, tier: r.int(4) + 1, features: fs.map((f) => grant(r, f)) };
    const g = geoRule(r);
    if (g) plan.geo_rule = g;
    const o = offline(r);
    if (o) plan.offline_policy = o;
    catalog.plans[id] = plan;
  }
  for (const id of ['pack-a', 'pack-b', 'pack-c']) {
    const addon = { id, product: 'p', name: id, features: r.some(features, 0.4).map((f) => grant(r, f)) };
    if (r.chance(0.4)) addon.compatible_plans = r.some(plans, 0.4);
    const g = geoRule(r);
    if (g) addon.geo_rule = g;
    const o = offline(r);
    if (o) addon.offline_policy = o;
    catalog.addons[id] = addon;
  }
  const accounts = [
    { id: 'acme', name: 'Acme' },
    { id: 'globex', name: 'Globex', status: r.chance(0.3) ? 'suspended' : 'active' },
  ];
  const subjects = [];
  for (const account of ['acme', 'globex']) {
    for (const id of ['alice', 'bob', 'carol']) {
      subjects.push({
        id, account, kind: 'user',
        roles: r.some(['admin', 'dev'], 0.4),
        groups: r.some(['eng', 'sales'], 0.4),
      });
    }
  }
  const entitlements = [];
  const n = r.int(6) + 2;
  for (let i = 0; i < n; i++) {
    const account = r.chance(0.75) ? 'acme' : 'globex';
    const kind = r.int(3);
    const g = kind === 0 ? { plan: r.pick(plans) } : kind === 1 ? { addon: r.pick(['pack-a', 'pack-b', 'pack-c']) } : { feature: grant(r, r.pick(features)) };
    const validFrom = r.chance(0.9) ? NOW - r.int(100) * DAY - 1 : NOW + r.int(10) * DAY + 1;
    const e = { id: `e${r.int(90) + 10}-${i}`, account, grant: g, valid_from: validFrom };
    if (r.chance(0.35)) e.valid_until = r.pick([NOW - DAY, NOW - 40 * DAY, NOW + DAY, NOW + 100 * DAY, NOW + 400 * DAY]);
    if (e.valid_until != null && e.valid_until <= validFrom) e.valid_until = validFrom + DAY;
    if (r.chance(0.5)) e.grace_period_seconds = r.pick([0, 2 * DAY, 30 * DAY]);
    if (r.chance(0.3)) {
      const count = r.int(3) + 1;
      e.seats = r.chance(0.5)
        ? { count, mode: { named: { assigned: r.some(['alice', 'bob', 'carol'], 0.5).slice(0, count) } } }
        : { count, mode: { floating: { lease_ttl_seconds: 300 } } };
    }
    if (r.chance(0.25)) e.usage_cap_overrides = { [r.pick(features)]: cap(r) ?? { limit: 3 } };
    if (r.chance(0.12)) e.status = r.pick(['suspended', 'revoked']);
    const geo = geoRule(r);
    if (geo) e.geo_rule = geo;
    const o = offline(r);
    if (o) e.offline_policy = o;
    if (r.chance(0.12)) e.required_role = r.pick(['admin', 'dev']);
    if (r.chance(0.12)) e.allowed_groups = r.some(['eng', 'sales'], 0.6);
    if (r.chance(0.2)) e.trial = true;
    entitlements.push(e);
  }
  return { catalog, accounts, subjects, entitlements };
}

function checkCase(r, data) {
  const account = r.chance(0.05) ? 'initech' : r.chance(0.75) ? 'acme' : 'globex';
  // Mostly a feature the account's entitlements grant (or might).
  const granted = [];
  for (const e of data.entitlements) {
    if (e.account !== account) continue;
    const g = e.grant;
    const bundle = g.plan ? data.catalog.plans[g.plan] : g.addon ? data.catalog.addons[g.addon] : null;
    for (const fg of bundle ? bundle.features : [g.feature]) granted.push(fg.feature);
  }
  const c = {
    account,
    subject: r.chance(0.05) ? 'zed' : r.chance(0.15) ? null : r.pick(['alice', 'bob', 'carol']),
    feature: granted.length > 0 && r.chance(0.85) ? r.pick(granted) : r.pick(['f1', 'f2', 'f3', 'f4', 'f5', 'nope']),
    consume: r.pick([0, 0, 0, 1, 5, 200]),
    consumed: r.pick([0, 0, 3, 10, 1000]),
    holders: r.some(['alice', 'bob', 'dave', 'erin'], 0.25),
    country: r.chance(0.85) ? r.pick(COUNTRIES) : null,
    continent: r.chance(0.75) ? r.pick(CONTINENTS) : null,
    subdivisions: r.some(SUBDIVISIONS, 0.15),
    anonymous: r.chance(0.15),
    now: NOW + r.pick([0, 0, 0, 35 * DAY, 300 * DAY]),
    stale: r.pick([0, 0, 0, 59, 3601, 4 * DAY]),
  };
  return c;
}

function rustEval(dataFile, c) {
  const args = ['eval', '--data', dataFile, '--account', c.account, '--feature', c.feature, '--output', 'json',
    '--now', String(c.now), '--stale-seconds', String(c.stale), '--consume', String(c.consume), '--consumed', String(c.consumed)];
  if (c.subject) args.push('--subject', c.subject);
  for (const h of c.holders) args.push('--seat-held-by', h);
  if (c.country) args.push('--country', c.country);
  if (c.continent) args.push('--continent', c.continent);
  for (const s of c.subdivisions) args.push('--subdivision', s);
  if (c.anonymous) args.push('--anonymous');
  return new Promise((resolve, reject) => {
    execFile(BIN, args, { maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      // Exit 10 is a denial: an answer.
      if (err && err.code !== 10) reject(new Error(`tollgate eval ${args.join(' ')}: ${stderr || err.message}`));
      else resolve(JSON.parse(stdout));
    });
  });
}

function jsDecide(data, c) {
  const store = new Store();
  for (const m of datasetToMutations({ ...data, accounts: [], subjects: [], entitlements: [] })) store.apply(m, new Dirty());
  const account = data.accounts.find((a) => a.id === c.account);
  // tollgate eval builds the view from the data set's order.
  const view = account ? buildView({ ...account, status: account.status ?? 'active' }, data.subjects, data.entitlements, store.catalog) : null;
  const leases = c.holders.map((holder) => ({ holder, expires_at: c.now + 60 }));
  const d = decide(
    { account: c.account, subject: c.subject, feature: c.feature, consume: c.consume },
    view,
    { country: c.country, continent: c.continent, subdivisions: c.subdivisions, anonymous: { vpn: c.anonymous } },
    {
      catalog: store.catalog, now: c.now, revision: 0, lastOriginContact: c.now - c.stale,
      live: { usageConsumed: () => c.consumed, floatingLeases: () => leases },
    },
  );
  return d;
}

/** The Rust decision in the port's shape. */
function fromRust(d) {
  const hint = d.upgrade_hint;
  const period = d.metering?.period;
  return {
    allowed: d.allowed, reason: d.reason, entitlement: d.entitlement, limit: d.limit, remaining: d.remaining,
    overage: d.overage, valid_until: d.valid_until, trial: d.trial, seats: d.seats,
    upgrade_hint: hint ? { ...hint.target, limit: hint.limit } : null,
    config: d.config, staleness_seconds: d.staleness_seconds, explanation: d.explanation,
    metering: d.metering ? { period: `${period.period}-${period.index}`, limit: d.metering.limit, hard: d.metering.hard } : null,
  };
}

test('differential: the engine port decides as `tollgate eval` on random data sets', { skip: existsSync(BIN) ? false : `no ${BIN}` }, async () => {
  const r = prng(SEED);
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-js-diff-'));
  const failures = [];
  const reasons = new Map();
  try {
    let done = 0;
    let datasetIndex = 0;
    while (done < CASES) {
      const data = dataset(r);
      const file = join(dir, `data-${datasetIndex++}.json`);
      writeFileSync(file, JSON.stringify(data));
      const checks = Array.from({ length: 10 }, () => checkCase(r, data));
      const rust = await Promise.all(checks.map((c) => rustEval(file, c)));
      checks.forEach((c, i) => {
        const want = fromRust(rust[i]);
        const got = jsDecide(data, c);
        got.explanation = explain(got);
        reasons.set(want.reason, (reasons.get(want.reason) ?? 0) + 1);
        const wrong = Object.keys(want).filter((k) => {
          try {
            assert.deepStrictEqual(got[k] ?? null, want[k]);
            return false;
          } catch {
            return true;
          }
        });
        if (wrong.length) {
          failures.push(`${file} ${JSON.stringify(c)}: ${wrong.map((k) => `${k}: rust ${JSON.stringify(want[k])}, js ${JSON.stringify(got[k])}`).join('; ')}`);
        }
      });
      done += checks.length;
    }
    assert.deepEqual(failures, [], `${failures.length} of ${done} differ:\n${failures.slice(0, 10).join('\n')}`);
    // The cases reach most reasons.
    assert.ok(reasons.size >= 10, `reasons reached: ${[...reasons.keys()]}`);
    if (process.env.TOLLGATE_DIFF_VERBOSE) console.log(Object.fromEntries(reasons));
  } finally {
    if (failures.length === 0) rmSync(dir, { recursive: true, force: true });
  }
});

test('period keys are the nodes\' spelling', () => {
  assert.equal(periodKey('day', 86400 * 20500 + 5), 'day-20500');
  assert.equal(periodKey('lifetime', NOW), 'lifetime-0');
  // 2026-11-27: month index 2026 * 12 + 10.
  assert.equal(periodKey('month', 1_795_821_662), `month-${2026 * 12 + 10}`);
});
