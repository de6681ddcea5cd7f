// @ts-check
/**
 * A port of Tollgate's decision engine (crates/tollgate-engine: decide.rs,
 * view.rs, geo.rs, reason.rs) and the model semantics it reads
 * (crates/tollgate-model). Pure: no clock, no I/O. Views are built once per
 * account when its data changes, so a decision only looks at the grants of
 * the feature it is asked about.
 *
 * Numbers: the model's u64/i64 values are JavaScript numbers. Saturating
 * arithmetic saturates at U64_MAX / I64_MAX (as doubles), which is what a
 * JSON number of that size parses to, so comparisons against such values
 * behave as in Rust.
 */

/** u64::MAX as a JavaScript number (2^64). */
export const U64_MAX = 18446744073709551615;
/** i64::MAX as a JavaScript number (2^63). */
export const I64_MAX = 9223372036854775807;

/** Most seat holders listed in a decision. */
export const SEAT_HOLDERS_LISTED_MAX = 16;

/** Reasons, with their permissiveness (higher is more permissive). */
export const REASONS = Object.freeze([
  'ALLOW', 'IN_GRACE', 'NOT_ENTITLED', 'UNKNOWN_ACCOUNT', 'UNKNOWN_SUBJECT',
  'NOT_YET_VALID', 'EXPIRED', 'SUSPENDED', 'REVOKED', 'ROLE_REQUIRED',
  'GEO_BLOCKED', 'ANONYMOUS_NETWORK_BLOCKED', 'SEAT_LIMIT', 'USAGE_CAP_REACHED',
  'STALE_DATA',
]);

/** @type {Record<string, number>} */
const PERMISSIVENESS = {
  UNKNOWN_ACCOUNT: 0, UNKNOWN_SUBJECT: 0, NOT_ENTITLED: 0,
  REVOKED: 1, SUSPENDED: 2, NOT_YET_VALID: 3, EXPIRED: 4, STALE_DATA: 5,
  ROLE_REQUIRED: 6, GEO_BLOCKED: 7, ANONYMOUS_NETWORK_BLOCKED: 8,
  SEAT_LIMIT: 9, USAGE_CAP_REACHED: 10, IN_GRACE: 11, ALLOW: 12,
};

/** @param {string} reason */
export function isAllowed(reason) {
  return reason === 'ALLOW' || reason === 'IN_GRACE';
}

/** @param {string} reason */
export function permissiveness(reason) {
  return PERMISSIVENESS[reason] ?? 0;
}

/** The catalog's default offline policy: three days, then deny. */
export const DEFAULT_OFFLINE_POLICY = Object.freeze({ offline_grace_seconds: 259200, after_grace: 'deny' });

// ---------------------------------------------------------------- numbers

/** `a + b`, saturating at I64_MAX. @param {number} a @param {number} b */
function plusSeconds(a, b) {
  const s = a + b;
  return s > I64_MAX ? I64_MAX : s;
}

/** `a + b`, saturating at U64_MAX. @param {number} a @param {number} b */
function satAddU64(a, b) {
  const s = a + b;
  return s > U64_MAX ? U64_MAX : s;
}

/** Whole seconds from `earlier` to `now`; 0 if `earlier` is later. */
export function secondsSince(/** @type {number} */ now, /** @type {number} */ earlier) {
  return now > earlier ? now - earlier : 0;
}

// ---------------------------------------------------------------- geo

/**
 * A geo rule compiled for matching: sets instead of arrays.
 * @typedef {{
 *   allowCountries: Set<string>, denyCountries: Set<string>,
 *   allowContinents: Set<string>, denyContinents: Set<string>,
 *   allowSubdivisions: Set<string>, denySubdivisions: Set<string>,
 *   hasAllow: boolean, hasLists: boolean, blockAnonymous: boolean,
 *   unknownLocation: 'deny'|'allow'|null, unknownEffective: 'deny'|'allow',
 * }} CompiledGeoRule
 */

/**
 * The model's `GeoRule` JSON (with the older `deny_unknown_location`) to a
 * compiled rule.
 * @param {any} rule
 * @returns {CompiledGeoRule}
 */
export function compileGeoRule(rule) {
  if (rule == null || typeof rule !== 'object') return UNRESTRICTED_RULE;
  // A plan's or feature's rule is shared by every account's view: compile
  // it once, so checks across accounts read the same (cached) sets.
  let compiled = COMPILED.get(rule);
  if (compiled === undefined) {
    compiled = compileGeoRuleNow(rule);
    COMPILED.set(rule, compiled);
  }
  return compiled;
}

/** @type {WeakMap<object, CompiledGeoRule>} */
const COMPILED = new WeakMap();

/** @param {any} r @returns {CompiledGeoRule} */
function compileGeoRuleNow(r) {
  const set = (/** @type {any} */ v) => new Set(Array.isArray(v) ? v : []);
  let unknownLocation = r.unknown_location ?? null;
  if (unknownLocation == null && r.deny_unknown_location === true) unknownLocation = 'deny';
  const allowCountries = set(r.allow_countries);
  const denyCountries = set(r.deny_countries);
  const allowContinents = set(r.allow_continents);
  const denyContinents = set(r.deny_continents);
  const allowSubdivisions = set(r.allow_subdivisions);
  const denySubdivisions = set(r.deny_subdivisions);
  const hasAllow = allowCountries.size > 0 || allowContinents.size > 0 || allowSubdivisions.size > 0;
  const hasDeny = denyCountries.size > 0 || denyContinents.size > 0 || denySubdivisions.size > 0;
  const hasLists = hasAllow || hasDeny;
  return {
    allowCountries, denyCountries, allowContinents, denyContinents,
    allowSubdivisions, denySubdivisions, hasAllow, hasLists,
    blockAnonymous: r.block_anonymous === true,
    unknownLocation,
    unknownEffective: unknownLocation ?? (hasLists ? 'deny' : 'allow'),
  };
}

/** The rule that restricts nothing (an absent one). */
const UNRESTRICTED_RULE = Object.freeze(compileGeoRuleNow({}));

/** @param {CompiledGeoRule} rule */
function isUnrestricted(rule) {
  return !rule.hasLists && !rule.blockAnonymous && rule.unknownLocation !== 'deny';
}

/**
 * Geo facts as the engine reads them.
 * @typedef {{country: string|null, continent: string|null, subdivisions: string[],
 *   anonymous: null | {vpn?: boolean, tor_exit_node?: boolean, public_proxy?: boolean,
 *   residential_proxy?: boolean, hosting_provider?: boolean}}} GeoFacts
 */

/** @type {GeoFacts} */
export const UNKNOWN_LOCATION = Object.freeze({ country: null, continent: null, subdivisions: [], anonymous: null });

/**
 * Normalises a location: the model's GeoFacts JSON (`anonymous` object or
 * null) or the HTTP API's location (`anonymous_network` boolean, read as a
 * public proxy as a node reads it). `null`/`undefined`: unknown.
 * @param {any} loc
 * @returns {GeoFacts}
 */
export function geoFacts(loc) {
  if (loc == null) return UNKNOWN_LOCATION;
  let anonymous = null;
  if (loc.anonymous != null && typeof loc.anonymous === 'object') anonymous = loc.anonymous;
  else if ('anonymous_network' in loc) anonymous = { public_proxy: loc.anonymous_network === true };
  return {
    country: loc.country || null,
    continent: loc.continent || null,
    subdivisions: Array.isArray(loc.subdivisions) ? loc.subdivisions : [],
    anonymous,
  };
}

/** @param {GeoFacts} f */
function isLocationKnown(f) {
  return f.country != null || f.continent != null || f.subdivisions.length > 0;
}

/** @param {GeoFacts['anonymous']} a */
function isAnonymous(a) {
  return a != null && (a.vpn === true || a.tor_exit_node === true || a.public_proxy === true
    || a.residential_proxy === true || a.hosting_provider === true);
}

const PASS = 0;
const BLOCKED = 1;
const ANONYMOUS = 2;

/** geo.rs `geo_verdict`. @param {CompiledGeoRule} rule @param {GeoFacts} facts */
function geoVerdict(rule, facts) {
  if (!isLocationKnown(facts)) {
    if (rule.unknownEffective === 'deny') return BLOCKED;
  } else {
    let denied = (facts.country != null && rule.denyCountries.has(facts.country))
      || (facts.continent != null && rule.denyContinents.has(facts.continent));
    if (!denied) {
      for (const s of facts.subdivisions) if (rule.denySubdivisions.has(s)) { denied = true; break; }
    }
    if (denied) return BLOCKED;
    if (rule.hasAllow) {
      let allowed = (facts.country != null && rule.allowCountries.has(facts.country))
        || (facts.continent != null && rule.allowContinents.has(facts.continent));
      if (!allowed) {
        for (const s of facts.subdivisions) if (rule.allowSubdivisions.has(s)) { allowed = true; break; }
      }
      if (!allowed) return BLOCKED;
    }
  }
  if (rule.blockAnonymous && isAnonymous(facts.anonymous)) return ANONYMOUS;
  return PASS;
}

// ---------------------------------------------------------------- offline policy

/**
 * @typedef {{offline_grace_seconds: number, after_grace: 'allow'|'deny'}} OfflinePolicy
 */

/** The stricter of two policies. @param {OfflinePolicy} a @param {OfflinePolicy} b @returns {OfflinePolicy} */
export function strictest(a, b) {
  return {
    offline_grace_seconds: Math.min(a.offline_grace_seconds, b.offline_grace_seconds),
    after_grace: a.after_grace === 'deny' || b.after_grace === 'deny' ? 'deny' : 'allow',
  };
}

// ---------------------------------------------------------------- periods

/** Proleptic Gregorian (y, m) of a day count since 1970-01-01. @param {number} days */
function civilYearMonth(days) {
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const m = mp < 10 ? mp + 3 : mp - 9;
  const y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  return [y, m];
}

/**
 * The usage counter a metered feature's period has at `now`: `day-N`,
 * `month-N` or `lifetime-0` (the spelling the nodes use).
 * @param {'day'|'month'|'lifetime'} period @param {number} now
 */
export function periodKey(period, now) {
  const days = Math.floor(now / 86400);
  if (period === 'day') return `day-${days}`;
  if (period === 'month') {
    const [y, m] = civilYearMonth(days);
    return `month-${y * 12 + m - 1}`;
  }
  return 'lifetime-0';
}

// ---------------------------------------------------------------- views

/**
 * One feature as one entitlement grants it, resolved against the catalog.
 * @typedef {{
 *   ent: any, index: number,
 *   usageCap: null | {limit: number, enforcement?: string, additive?: boolean},
 *   period: null | 'day'|'month'|'lifetime',
 *   config: Record<string, string>,
 *   geoRules: CompiledGeoRule[],
 *   offline: OfflinePolicy,
 *   usableUntil: number|null,
 *   allowedGroups: Set<string>|null,
 *   assigned: Set<string>|null,
 * }} ResolvedGrant
 */

/**
 * @typedef {{
 *   account: any,
 *   subjects: Map<string, any>,
 *   entitlements: any[],
 *   byFeature: Map<string, ResolvedGrant[]>,
 *   plansHeld: string[],
 *   dangling: string[],
 *   hints: Map<string, any>,
 * }} AccountView
 */

/**
 * The catalog as the engine reads it: maps keyed by id, iterated in id order
 * (the Rust BTreeMaps' order, which upgrade hints' tie-breaks follow).
 * @typedef {{
 *   products: Map<string, any>, features: Map<string, any>, plans: Map<string, any>,
 *   addons: Map<string, any>, skus: Map<string, any>,
 *   default_offline_policy: OfflinePolicy,
 *   sortedPlans?: any[], sortedAddons?: any[],
 * }} Catalog
 */

/** @returns {Catalog} */
export function emptyCatalog() {
  return {
    products: new Map(), features: new Map(), plans: new Map(), addons: new Map(), skus: new Map(),
    default_offline_policy: DEFAULT_OFFLINE_POLICY,
  };
}

/** Byte-order comparison of ids (ASCII ids: the Rust order). */
function byId(/** @type {string} */ a, /** @type {string} */ b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Plans and add-ons in id order, cached on the catalog. @param {Catalog} catalog */
function sortedBundles(catalog) {
  if (!catalog.sortedPlans) {
    catalog.sortedPlans = [...catalog.plans.keys()].sort(byId).map((k) => catalog.plans.get(k));
    catalog.sortedAddons = [...catalog.addons.keys()].sort(byId).map((k) => catalog.addons.get(k));
  }
  return { plans: /** @type {any[]} */ (catalog.sortedPlans), addons: /** @type {any[]} */ (catalog.sortedAddons) };
}

/** The feature's period when it is metered. @param {any} feature */
function featurePeriod(feature) {
  const kind = feature?.kind;
  if (kind && typeof kind === 'object' && kind.metered) return kind.metered.period ?? null;
  return null;
}

/** @type {WeakMap<object, WeakMap<object, Record<string, string>>>} */
const CONFIGS = new WeakMap();
/** @type {WeakMap<object, Record<string, string>>} */
const CONFIGS_NO_FEATURE = new WeakMap();

/**
 * The feature's configuration defaults overlaid with the grant's; shared
 * (frozen) by every view that resolves the same feature and grant objects.
 * @param {any} feature @param {any} grant
 * @returns {Record<string, string>}
 */
function resolvedConfig(feature, grant) {
  const byGrant = feature ? (CONFIGS.get(feature) ?? CONFIGS.set(feature, new WeakMap()).get(feature)) : CONFIGS_NO_FEATURE;
  let config = /** @type {WeakMap<object, Record<string, string>>} */ (byGrant).get(grant);
  if (config === undefined) {
    config = Object.freeze({ ...(feature?.config ?? {}), ...(grant.config ?? {}) });
    /** @type {WeakMap<object, Record<string, string>>} */ (byGrant).set(grant, config);
  }
  return config;
}

/**
 * view.rs `AccountView::build`: indexes `entitlements` (in the order given:
 * pass them in id order, as a node reads them) by the features they grant.
 * @param {any} account
 * @param {Iterable<any>} subjects
 * @param {Iterable<any>} entitlements
 * @param {Catalog} catalog
 * @returns {AccountView}
 */
export function buildView(account, subjects, entitlements, catalog) {
  /** @type {Map<string, any>} */
  const subjectMap = new Map();
  for (const s of subjects) {
    if (s.account === account.id) {
      subjectMap.set(s.id, s);
    }
  }
  const ents = [];
  for (const e of entitlements) if (e.account === account.id) ents.push(e);
  /** @type {Map<string, ResolvedGrant[]>} */
  const byFeature = new Map();
  const dangling = [];
  const plansHeld = [];
  for (let index = 0; index < ents.length; index++) {
    const ent = ents[index];
    const grant = ent.grant ?? {};
    if (typeof grant.plan === 'string') plansHeld.push(grant.plan);
    /** @type {any[]} */
    let grants;
    /** @type {CompiledGeoRule|null} */
    let bundleGeo = null;
    /** @type {OfflinePolicy|null} */
    let bundleOffline = null;
    if (typeof grant.plan === 'string') {
      const plan = catalog.plans.get(grant.plan);
      if (!plan) { dangling.push(ent.id); continue; }
      grants = plan.features ?? [];
      bundleGeo = compileGeoRule(plan.geo_rule);
      bundleOffline = plan.offline_policy ?? null;
    } else if (typeof grant.addon === 'string') {
      const addon = catalog.addons.get(grant.addon);
      if (!addon) { dangling.push(ent.id); continue; }
      grants = addon.features ?? [];
      bundleGeo = compileGeoRule(addon.geo_rule);
      bundleOffline = addon.offline_policy ?? null;
    } else if (grant.feature && typeof grant.feature === 'object') {
      grants = [grant.feature];
    } else {
      dangling.push(ent.id);
      continue;
    }
    const entGeo = compileGeoRule(ent.geo_rule);
    const usableUntil = ent.valid_until == null ? null : plusSeconds(ent.valid_until, ent.grace_period_seconds ?? 0);
    const allowedGroups = Array.isArray(ent.allowed_groups) && ent.allowed_groups.length > 0 ? new Set(ent.allowed_groups) : null;
    const named = ent.seats?.mode?.named;
    const assigned = named ? new Set(named.assigned ?? []) : null;
    const overrides = ent.usage_cap_overrides ?? {};
    for (const g of grants) {
      const feature = catalog.features.get(g.feature);
      const config = resolvedConfig(feature, g);
      const geoRules = [];
      for (const rule of [entGeo, bundleGeo, feature ? compileGeoRule(feature.geo_rule) : null]) {
        if (rule && !isUnrestricted(rule)) geoRules.push(rule);
      }
      /** @type {OfflinePolicy|null} */
      let offline = null;
      for (const p of [ent.offline_policy, bundleOffline, feature?.offline_policy]) {
        if (p != null) offline = offline ? strictest(offline, p) : p;
      }
      let list = byFeature.get(g.feature);
      if (!list) { list = []; byFeature.set(g.feature, list); }
      const override = Object.prototype.hasOwnProperty.call(overrides, g.feature) ? overrides[g.feature] : undefined;
      list.push({
        ent, index,
        usageCap: override ?? g.usage_cap ?? null,
        period: featurePeriod(feature),
        config,
        geoRules,
        offline: offline ?? catalog.default_offline_policy,
        usableUntil,
        allowedGroups,
        assigned,
      });
    }
  }
  return { account, subjects: subjectMap, entitlements: ents, byFeature, plansHeld, dangling, hints: new Map() };
}

// ---------------------------------------------------------------- decide

/**
 * A decision, in the HTTP/JSON API's shape (PROTOCOL.md), plus the
 * revision and staleness it was made at. `metering` is the engine's
 * counter for an allowed (or cap-reached) metered check.
 * @typedef {{
 *   allowed: boolean, reason: string, explanation: string,
 *   entitlement: string|null, limit: number|null, remaining: number|null,
 *   overage: boolean, valid_until: number|null, trial: boolean,
 *   seats: null | {used: number, total: number, holders: string[]},
 *   upgrade_hint: null | {plan?: string, addon?: string, limit: number|null},
 *   config: Record<string, string>,
 *   revision: number, staleness_seconds: number|null,
 *   metering?: null | {period: string, limit: number|null, hard: boolean},
 * }} Decision
 */

/**
 * Region-local state the decision reads: usage counters and floating-seat
 * leases. A replica has neither (`NO_LIVE_STATE`).
 * @typedef {{
 *   usageConsumed(account: string, feature: string, period: string): number,
 *   floatingLeases(entitlement: string): {holder: string, expires_at: number}[],
 * }} LiveState
 */

/** @type {LiveState} */
export const NO_LIVE_STATE = Object.freeze({
  usageConsumed: () => 0,
  floatingLeases: () => [],
});

/**
 * @typedef {{
 *   catalog: Catalog, live?: LiveState, now: number,
 *   revision: number, lastOriginContact: number|null,
 * }} Environment
 */

/** @param {string} reason @param {Environment} env @param {number|null} staleness @returns {Decision} */
function newDecision(reason, env, staleness) {
  return {
    allowed: reason === 'ALLOW' || reason === 'IN_GRACE',
    reason,
    explanation: '',
    entitlement: null,
    limit: null,
    remaining: null,
    overage: false,
    valid_until: null,
    trial: false,
    seats: null,
    upgrade_hint: null,
    config: {},
    revision: env.revision,
    staleness_seconds: staleness,
    metering: null,
  };
}

/**
 * @typedef {{account: string, subject?: string|null, feature: string, consume?: number}} Check
 */

/**
 * decide.rs `decide`: `view` is `undefined`/`null` when the account is not
 * known.
 * @param {Check} check
 * @param {AccountView|null|undefined} view
 * @param {GeoFacts} geo
 * @param {Environment} env
 * @returns {Decision}
 */
export function decide(check, view, geo, env) {
  const staleness = env.lastOriginContact == null ? null : secondsSince(env.now, env.lastOriginContact);
  if (!view) return newDecision('UNKNOWN_ACCOUNT', env, staleness);
  if (view.account.status === 'suspended') return newDecision('SUSPENDED', env, staleness);
  let subject = null;
  if (check.subject != null) {
    subject = view.subjects.get(check.subject);
    if (subject === undefined) return newDecision('UNKNOWN_SUBJECT', env, staleness);
  }
  const grants = view.byFeature.get(check.feature);
  if (grants === undefined || grants.length === 0) {
    const d = newDecision('NOT_ENTITLED', env, staleness);
    d.upgrade_hint = upgradeHint(env.catalog, view, check.feature, null);
    return d;
  }
  const live = env.live ?? NO_LIVE_STATE;
  const stale = staleness ?? U64_MAX;
  /** @type {string|null} */
  let denialReason = null;
  /** @type {ResolvedGrant|null} */
  let denialGrant = null;
  /** @type {ResolvedGrant|null} */
  let winner = null;
  let winnerGrace = false;
  let unlimited = false;
  /** @type {ResolvedGrant|null} */
  let baseCap = null;
  let additiveSum = 0;
  let soft = false;

  for (let i = 0; i < grants.length; i++) {
    const grant = grants[i];
    const verdict = judge(grant, subject, geo, env, stale, live);
    if (typeof verdict === 'string') {
      if (denialReason === null || PERMISSIVENESS[verdict] > PERMISSIVENESS[denialReason]) {
        denialReason = verdict;
        denialGrant = grant;
      }
      continue;
    }
    const inGrace = verdict;
    let better;
    if (winner === null) {
      better = true;
    } else {
      const a = !inGrace;
      const b = !winnerGrace;
      if (a !== b) better = a;
      else better = (grant.usableUntil ?? I64_MAX) > (winner.usableUntil ?? I64_MAX);
    }
    if (better) {
      winner = grant;
      winnerGrace = inGrace;
    }
    const cap = grant.usageCap;
    if (cap == null) {
      unlimited = true;
    } else {
      if (cap.enforcement === 'soft') soft = true;
      if (cap.additive === true) {
        additiveSum = satAddU64(additiveSum, cap.limit);
      } else if (baseCap === null || (baseCap.usageCap?.limit ?? 0) < cap.limit) {
        baseCap = grant;
      }
    }
  }

  if (winner === null) {
    const reason = /** @type {string} */ (denialReason);
    const grant = /** @type {ResolvedGrant} */ (denialGrant);
    const d = decisionFrom(reason, grant, env, staleness, live);
    if (reason === 'SEAT_LIMIT' && d.seats) d.seats.holders = seatHolders(grant, env, live);
    return d;
  }

  const d = decisionFrom(winnerGrace ? 'IN_GRACE' : 'ALLOW', winner, env, staleness, live);
  if (winner.period == null) return d;
  const period = periodKey(winner.period, env.now);
  if (unlimited) {
    d.metering = { period, limit: null, hard: false };
    return d;
  }
  const limit = satAddU64(baseCap?.usageCap?.limit ?? 0, additiveSum);
  const metering = { period, limit, hard: !soft };
  d.metering = metering;
  const consumed = live.usageConsumed(check.account, check.feature, period);
  const consume = check.consume ?? 0;
  const after = satAddU64(consumed, consume);
  d.limit = limit;
  if (after <= limit) {
    d.remaining = limit - after;
  } else if (soft) {
    d.remaining = 0;
    d.overage = true;
  } else {
    const decider = baseCap ?? winner;
    const capped = decisionFrom('USAGE_CAP_REACHED', decider, env, staleness, live);
    capped.metering = metering;
    capped.limit = limit;
    capped.remaining = limit > consumed ? limit - consumed : 0;
    capped.upgrade_hint = upgradeHint(env.catalog, view, check.feature, limit);
    return capped;
  }
  return d;
}

/**
 * decide.rs `judge`: `false`/`true` (allows, in grace) or the failing reason.
 * @param {ResolvedGrant} grant @param {any} subject @param {GeoFacts} geo
 * @param {Environment} env @param {number} staleness @param {LiveState} live
 * @returns {boolean|string}
 */
function judge(grant, subject, geo, env, staleness, live) {
  const ent = grant.ent;
  const status = ent.status;
  if (status === 'revoked') return 'REVOKED';
  if (status === 'suspended') return 'SUSPENDED';
  const now = env.now;
  if (now < ent.valid_from) return 'NOT_YET_VALID';
  let inGrace = false;
  if (ent.valid_until != null && now > ent.valid_until) {
    if (grant.usableUntil != null && now > grant.usableUntil) return 'EXPIRED';
    inGrace = true;
  }
  const policy = grant.offline;
  if (policy.after_grace === 'deny' && staleness > policy.offline_grace_seconds) return 'STALE_DATA';
  if (ent.required_role != null) {
    if (!subject || !Array.isArray(subject.roles) || !subject.roles.includes(ent.required_role)) return 'ROLE_REQUIRED';
  }
  if (grant.allowedGroups !== null) {
    const groups = subject?.groups;
    let member = false;
    if (Array.isArray(groups)) {
      for (const g of groups) if (grant.allowedGroups.has(g)) { member = true; break; }
    }
    if (!member) return 'ROLE_REQUIRED';
  }
  if (grant.geoRules.length > 0) {
    let anonymous = false;
    for (const rule of grant.geoRules) {
      const v = geoVerdict(rule, geo);
      if (v === BLOCKED) return 'GEO_BLOCKED';
      if (v === ANONYMOUS) anonymous = true;
    }
    if (anonymous) return 'ANONYMOUS_NETWORK_BLOCKED';
  }
  const seats = ent.seats;
  if (seats != null) {
    let hasSeat;
    if (grant.assigned !== null) {
      hasSeat = subject != null && grant.assigned.has(subject.id);
    } else {
      const leases = live.floatingLeases(ent.id);
      let holds = false;
      if (subject != null) {
        for (const l of leases) if (l.holder === subject.id && l.expires_at > now) { holds = true; break; }
      }
      hasSeat = holds || liveLeaseCount(leases, now) < seats.count;
    }
    if (!hasSeat) return 'SEAT_LIMIT';
  }
  return inGrace;
}

/** @param {{expires_at: number}[]} leases @param {number} now */
function liveLeaseCount(leases, now) {
  let n = 0;
  for (const l of leases) if (l.expires_at > now) n++;
  return n;
}

/**
 * @param {string} reason @param {ResolvedGrant} grant @param {Environment} env
 * @param {number|null} staleness @param {LiveState} live @returns {Decision}
 */
function decisionFrom(reason, grant, env, staleness, live) {
  const ent = grant.ent;
  const d = newDecision(reason, env, staleness);
  d.entitlement = ent.id;
  d.valid_until = ent.valid_until ?? null;
  d.trial = ent.trial === true;
  if (d.allowed) d.config = { ...grant.config };
  const seats = ent.seats;
  if (seats != null) {
    d.seats = {
      used: grant.assigned !== null ? grant.assigned.size : liveLeaseCount(live.floatingLeases(ent.id), env.now),
      total: seats.count,
      holders: [],
    };
  }
  return d;
}

/** @param {ResolvedGrant} grant @param {Environment} env @param {LiveState} live */
function seatHolders(grant, env, live) {
  if (grant.assigned !== null) {
    return [...grant.assigned].sort(byId).slice(0, SEAT_HOLDERS_LISTED_MAX);
  }
  const out = [];
  for (const l of live.floatingLeases(grant.ent.id)) {
    if (l.expires_at > env.now) {
      out.push(l.holder);
      if (out.length >= SEAT_HOLDERS_LISTED_MAX) break;
    }
  }
  return out;
}

/**
 * decide.rs `upgrade_hint`: add-ons compatible with a held plan first (the
 * smallest that helps), then the lowest-tier plan above the account's that
 * helps. Cached per view for `NOT_ENTITLED` (it depends only on the view,
 * the catalog and the feature).
 * @param {Catalog} catalog @param {AccountView} view @param {string} feature
 * @param {number|null} currentLimit
 */
function upgradeHint(catalog, view, feature, currentLimit) {
  if (currentLimit === null) {
    const cached = view.hints.get(feature);
    if (cached !== undefined) return cached === null ? null : { ...cached };
    const hint = computeUpgradeHint(catalog, view, feature, null);
    view.hints.set(feature, hint);
    return hint === null ? null : { ...hint };
  }
  return computeUpgradeHint(catalog, view, feature, currentLimit);
}

/**
 * @param {Catalog} catalog @param {AccountView} view @param {string} feature
 * @param {number|null} currentLimit
 * @returns {null | {plan?: string, addon?: string, limit: number|null}}
 */
function computeUpgradeHint(catalog, view, feature, currentLimit) {
  const held = view.plansHeld;
  /** The limit a grant would give, if it helps: `undefined` if not. */
  const helps = (/** @type {any} */ cap) => {
    if (currentLimit === null) return cap == null ? null : cap.limit;
    if (cap == null) return null;
    if (cap.additive === true) return satAddU64(currentLimit, cap.limit);
    if (cap.limit > currentLimit) return cap.limit;
    return undefined;
  };
  const order = (/** @type {number|null} */ limit) => (limit === null ? U64_MAX : limit);
  // Rust's `None` (unlimited) sorts after every finite limit, equal to
  // u64::MAX; keep that tie with a secondary flag so a finite u64::MAX and
  // unlimited compare equal, as they do there.
  const { plans, addons } = sortedBundles(catalog);

  /** @type {null | {limit: number|null, id: string}} */
  let bestAddon = null;
  for (const a of addons) {
    const compatible = a.compatible_plans;
    if (Array.isArray(compatible) && compatible.length > 0 && !held.some((p) => compatible.includes(p))) continue;
    const grant = (a.features ?? []).find((/** @type {any} */ g) => g.feature === feature);
    if (!grant) continue;
    const limit = helps(grant.usage_cap);
    if (limit === undefined) continue;
    if (bestAddon === null || order(limit) < order(bestAddon.limit)) bestAddon = { limit, id: a.id };
  }
  if (bestAddon !== null) return { addon: bestAddon.id, limit: bestAddon.limit };

  /** @type {number|null} */
  let currentTier = null;
  for (const p of held) {
    const plan = catalog.plans.get(p);
    if (plan && (currentTier === null || plan.tier > currentTier)) currentTier = plan.tier;
  }
  /** @type {null | {tier: number, limit: number|null, id: string}} */
  let best = null;
  for (const p of plans) {
    if (currentTier !== null && !(p.tier > currentTier)) continue;
    const grant = (p.features ?? []).find((/** @type {any} */ g) => g.feature === feature);
    if (!grant) continue;
    const limit = helps(grant.usage_cap);
    if (limit === undefined) continue;
    if (best === null || p.tier < best.tier || (p.tier === best.tier && order(limit) < order(best.limit))) {
      best = { tier: p.tier, limit, id: p.id };
    }
  }
  return best === null ? null : { plan: best.id, limit: best.limit };
}

// ---------------------------------------------------------------- explain

/**
 * One line for a human (decide.rs `Decision::explain`); not stable.
 * @param {Decision} d
 */
export function explain(d) {
  const ent = d.entitlement != null ? ` by entitlement ${d.entitlement}` : '';
  const until = d.valid_until != null ? formatTime(d.valid_until) : '';
  /** @type {Record<string, () => string>} */
  const texts = {
    ALLOW: () => (d.trial ? `Allowed${ent} (a trial).` : `Allowed${ent}.`),
    IN_GRACE: () => `Allowed${ent} in its grace period (expired ${until}).`,
    NOT_ENTITLED: () => 'No entitlement of the account grants the feature.',
    UNKNOWN_ACCOUNT: () => 'The account is not known here.',
    UNKNOWN_SUBJECT: () => 'The subject is not known in this account.',
    NOT_YET_VALID: () => `Denied${ent}: not valid yet.`,
    EXPIRED: () => `Denied${ent}: expired ${until} and past its grace period.`,
    SUSPENDED: () => `Denied${ent}: suspended.`,
    REVOKED: () => `Denied${ent}: revoked.`,
    ROLE_REQUIRED: () => `Denied${ent}: the subject lacks the required role or group.`,
    GEO_BLOCKED: () => `Denied${ent}: the caller's location is outside the geo rules.`,
    ANONYMOUS_NETWORK_BLOCKED: () => `Denied${ent}: the caller is on an anonymous network.`,
    SEAT_LIMIT: () => (d.seats
      ? `Denied${ent}: no seat for this subject (${d.seats.used} of ${d.seats.total} in use).`
      : `Denied${ent}: no seat for this subject.`),
    USAGE_CAP_REACHED: () => `Denied${ent}: the usage cap of ${d.limit ?? 0} is reached.`,
    STALE_DATA: () => `Denied${ent}: no word from the origin for ${d.staleness_seconds ?? 'ever'} s, longer than the offline grace.`,
  };
  let text = (texts[d.reason] ?? (() => d.reason))();
  if (d.overage) text += ' Over the soft cap: billed as overage.';
  const hint = d.upgrade_hint;
  if (hint) {
    const what = hint.plan != null ? `plan ${hint.plan}` : `add-on ${hint.addon}`;
    if (hint.limit != null) text += ` Upgrade: ${what} raises the cap to ${hint.limit}.`;
    else if (d.reason === 'USAGE_CAP_REACHED') text += ` Upgrade: ${what} removes the cap.`;
    else text += ` Upgrade: ${what} grants it.`;
  }
  return text;
}

/** RFC 3339 UTC, as the model displays an instant. @param {number} t */
function formatTime(t) {
  const date = new Date(t * 1000);
  if (Number.isNaN(date.getTime())) return String(t);
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
