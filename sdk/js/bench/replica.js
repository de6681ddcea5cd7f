#!/usr/bin/env node
// In-process replica checks: median and p99 latency (µs) over the
// conformance data sets and their check cases (sdk/conformance/cases.json,
// or the file named by TOLLGATE_CONFORMANCE_FILE; the demo data set when
// neither exists).
//
//   node sdk/js/bench/replica.js [--seconds 3] [--json] [--scale 20000]
//
// --scale N also times applying a watch `state` of N accounts (3 subjects
// and 3 entitlements each), a one-account change, a catalog change (every
// view rebuilt), and checks against that replica.
//
// Each sample is one `Replica.check` call timed alone with
// process.hrtime.bigint() (whose own cost, ~30-60 ns, is included); the
// cases are cycled in a fixed order after a warm-up.

import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Replica } from '../src/replica.js';
import { datasetToMutations } from '../src/store.js';

const args = process.argv.slice(2);
const seconds = Number(args[args.indexOf('--seconds') + 1] ?? 0) || 3;
const asJson = args.includes('--json');
const scale = args.includes('--scale') ? Number(args[args.indexOf('--scale') + 1]) : 0;

const file = process.env.TOLLGATE_CONFORMANCE_FILE
  ?? fileURLToPath(new URL('../../conformance/cases.json', import.meta.url));

/** @type {{replica: Replica, request: any, options: any, name: string}[]} */
const work = [];
let source;
if (existsSync(file)) {
  source = file;
  const cases = JSON.parse(readFileSync(file, 'utf8'));
  const replicas = new Map(Object.entries(cases.datasets).map(([name, d]) => [name, Replica.fromMutations(d.mutations, d.revision)]));
  for (const c of cases.checks) {
    work.push({
      name: c.name,
      replica: /** @type {Replica} */ (replicas.get(c.dataset)),
      request: { ...c.check, location: c.location },
      options: { now: c.now, lastOriginContact: c.last_origin_contact },
    });
  }
} else {
  source = 'crates/tollgate/data/demo.json';
  const demo = JSON.parse(readFileSync(fileURLToPath(new URL('../../../crates/tollgate/data/demo.json', import.meta.url)), 'utf8'));
  const replica = Replica.fromMutations(datasetToMutations(demo), 1);
  const now = 1_780_000_000;
  for (const [account, subject, feature, location] of [
    ['acme', 'alice', 'export', { country: 'DE', continent: 'EU' }],
    ['acme', 'alice', 'export', { country: 'US', continent: 'NA' }],
    ['acme', 'carol', 'export', { country: 'DE', continent: 'EU' }],
    ['acme', 'alice', 'render', { country: 'DE', continent: 'EU' }],
    ['acme', 'alice', 'ai-assist', null],
    ['globex', 'hank', 'export', null],
    ['initech', 'peter', 'ai-assist', { country: 'DE' }],
    ['umbrella', null, 'sso', null],
  ]) {
    work.push({ name: `${account}/${subject}/${feature}`, replica, request: { account, subject, feature, location }, options: { now, lastOriginContact: now - 10 } });
  }
}

// Warm up (JIT), and make sure every case decides.
for (let round = 0; round < 2000; round++) {
  for (const w of work) w.replica.check(w.request, w.options);
}

const samples = [];
const deadline = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
let sink = 0;
outer: for (;;) {
  for (const w of work) {
    const t0 = process.hrtime.bigint();
    const d = w.replica.check(w.request, w.options);
    const t1 = process.hrtime.bigint();
    sink += d.allowed ? 1 : 0;
    samples.push(Number(t1 - t0));
    if (samples.length % 4096 === 0 && (t1 > deadline || samples.length >= 3_000_000)) break outer;
  }
}

// Throughput without per-call timers.
const n = 200_000;
const t0 = process.hrtime.bigint();
for (let i = 0; i < n; i++) {
  const w = work[i % work.length];
  sink += w.replica.check(w.request, w.options).allowed ? 1 : 0;
}
const meanNs = Number(process.hrtime.bigint() - t0) / n;

samples.sort((a, b) => a - b);
const at = (/** @type {number} */ q) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] / 1000;
const result = {
  source,
  cases: work.length,
  samples: samples.length,
  median_us: +at(0.5).toFixed(3),
  p90_us: +at(0.9).toFixed(3),
  p99_us: +at(0.99).toFixed(3),
  max_us: +(samples[samples.length - 1] / 1000).toFixed(3),
  mean_untimed_us: +(meanNs / 1000).toFixed(3),
  node: process.version,
  allowed_sink: sink > 0,
};
if (scale > 0) Object.assign(result, { scale: scaled(scale) });
if (asJson) {
  console.log(JSON.stringify(result));
} else {
  console.log(`In-process replica checks (${result.cases} cases from ${result.source}, ${result.samples} samples, Node ${result.node})`);
  console.log(`  median ${result.median_us} µs   p90 ${result.p90_us} µs   p99 ${result.p99_us} µs   max ${result.max_us} µs`);
  console.log(`  mean without per-call timers: ${result.mean_untimed_us} µs/check`);
  console.log(`  target: median <= 5 µs: ${result.median_us <= 5 ? 'met' : 'NOT met'}`);
  if (result.scale) {
    const s = result.scale;
    console.log(`At scale (${s.accounts} accounts, ${s.mutations} mutations): state applied in ${s.state_ms} ms (heap ${s.heap_mb} MB),`);
    console.log(`  a one-account change ${s.change_ms} ms, a catalog change ${s.catalog_change_ms} ms, check median ${s.check_median_us} µs`);
  }
}

/** A replica of `n` accounts: apply and check costs. @param {number} n */
function scaled(n) {
  const muts = [
    { put_product: { id: 'studio', name: 'Studio' } },
    { put_feature: { id: 'export', product: 'studio', name: 'Export', kind: 'boolean' } },
    { put_feature: { id: 'render', product: 'studio', name: 'Render', kind: { metered: { unit: 'r', period: 'month' } } } },
    { put_plan: { id: 'pro', product: 'studio', name: 'Pro', tier: 2, features: [{ feature: 'export' }, { feature: 'render', usage_cap: { limit: 100 } }], geo_rule: { allow_continents: ['EU'] } } },
  ];
  for (let a = 0; a < n; a++) {
    muts.push({ put_account: { id: `acc-${a}`, name: `A${a}` } });
    for (let s = 0; s < 3; s++) muts.push({ put_subject: { id: `u${s}`, account: `acc-${a}`, kind: 'user', groups: ['eng'] } });
    for (let e = 0; e < 3; e++) {
      muts.push({ put_entitlement: { id: `acc-${a}-e${e}`, account: `acc-${a}`, grant: e === 0 ? { plan: 'pro' } : { feature: { feature: 'export' } }, valid_from: 0 } });
    }
  }
  const now = 1_780_000_000;
  const r = new Replica({ clock: () => now });
  let t = performance.now();
  r.applyEvent('state', { revision: 1, index: 0, last: true, mutations: muts });
  const stateMs = performance.now() - t;
  const heapMb = process.memoryUsage().heapUsed / 1e6;
  r.applyEvent('heartbeat', { applied_revision: 1, staleness_seconds: 1 });
  const k = 1000;
  t = performance.now();
  for (let i = 0; i < k; i++) {
    r.applyEvent('changes', { changes: [{ revision: 2 + i, committed_at: now, mutations: [{ put_account: { id: `acc-${i}`, name: 'x', status: 'suspended' } }] }], through_revision: 2 + i });
  }
  const changeMs = (performance.now() - t) / k;
  t = performance.now();
  r.applyEvent('changes', { changes: [{ revision: 5000, committed_at: now, mutations: [{ put_feature: { id: 'sso', product: 'studio', name: 'SSO', kind: 'boolean' } }] }], through_revision: 5000 });
  const catalogMs = performance.now() - t;
  const times = [];
  const loc = { country: 'DE', continent: 'EU' };
  for (let i = 0; i < 200_000; i++) {
    const req = { account: `acc-${(i * 7919) % n}`, subject: 'u1', feature: i % 2 ? 'export' : 'render', location: loc };
    const t0 = process.hrtime.bigint();
    r.check(req);
    times.push(Number(process.hrtime.bigint() - t0));
  }
  times.sort((a, b) => a - b);
  return {
    accounts: n, mutations: muts.length, state_ms: Math.round(stateMs), heap_mb: Math.round(heapMb),
    change_ms: +changeMs.toFixed(3), catalog_change_ms: Math.round(catalogMs),
    check_median_us: +(times[times.length >> 1] / 1000).toFixed(3),
  };
}
