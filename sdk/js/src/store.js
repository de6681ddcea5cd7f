// @ts-check
/**
 * The replica's copy of the data, indexed by account, and the engine's
 * views built from it (crates/tollgate-sdk/src/store.rs). Applying a
 * mutation costs a map update; a batch rebuilds only the views of the
 * accounts it touched (every view when the catalog changed). Views list an
 * account's entitlements in id order, as a region node reads them (the
 * engine's tie-breaks follow that order).
 */

import { buildView, emptyCatalog } from './engine.js';

/** @typedef {import('./engine.js').AccountView} AccountView */
/** @typedef {import('./engine.js').Catalog} Catalog */

/**
 * What a batch of mutations touched.
 */
export class Dirty {
  constructor() {
    /** @type {Set<string>} */
    this.accounts = new Set();
    this.catalog = false;
  }
}

/** @param {string} a @param {string} b */
const byId = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

export class Store {
  constructor() {
    /** @type {Catalog} */
    this.catalog = emptyCatalog();
    /** @type {Map<string, {account: any, subjects: Map<string, any>, entitlements: Map<string, any>}>} */
    this.accounts = new Map();
    /** Which account each entitlement belongs to. @type {Map<string, string>} */
    this.owners = new Map();
    /** @type {Map<string, any>} */
    this.revokedLicenses = new Map();
    /** @type {Map<string, any>} */
    this.revokedCertificates = new Map();
    /** Accounts, subjects and entitlements held. */
    this.objects = 0;
    /** Mutation kinds seen and ignored (not known to this SDK). @type {Set<string>} */
    this.ignored = new Set();
  }

  /** @param {string} id */
  data(id) {
    let d = this.accounts.get(id);
    if (!d) {
      d = { account: null, subjects: new Map(), entitlements: new Map() };
      this.accounts.set(id, d);
    }
    return d;
  }

  /** @param {string} id */
  prune(id) {
    const d = this.accounts.get(id);
    if (d && d.account == null && d.subjects.size === 0 && d.entitlements.size === 0) this.accounts.delete(id);
  }

  /** A new catalog object, so cached orderings are dropped. */
  touchCatalog() {
    const c = this.catalog;
    this.catalog = {
      products: c.products, features: c.features, plans: c.plans, addons: c.addons, skus: c.skus,
      default_offline_policy: c.default_offline_policy,
    };
  }

  /**
   * Applies one mutation (the model's externally tagged JSON) as a region
   * applies it. A kind this SDK does not know is ignored.
   * @param {any} mutation @param {Dirty} dirty
   */
  apply(mutation, dirty) {
    if (mutation == null || typeof mutation !== 'object') throw new TypeError('a mutation must be an object');
    const keys = Object.keys(mutation);
    if (keys.length !== 1) throw new TypeError(`a mutation has exactly one kind, got ${keys.length}`);
    const kind = keys[0];
    const v = mutation[kind];
    switch (kind) {
      case 'put_account': {
        requireId(v, 'put_account');
        const d = this.data(v.id);
        if (d.account == null) this.objects++;
        d.account = { ...v, status: v.status ?? 'active' };
        dirty.accounts.add(v.id);
        return;
      }
      case 'put_subject': {
        requireId(v, 'put_subject');
        const d = this.data(v.account);
        if (!d.subjects.has(v.id)) this.objects++;
        d.subjects.set(v.id, v);
        dirty.accounts.add(v.account);
        return;
      }
      case 'delete_subject': {
        const d = this.accounts.get(v.account);
        if (d && d.subjects.delete(v.subject)) this.objects--;
        this.prune(v.account);
        dirty.accounts.add(v.account);
        return;
      }
      case 'put_entitlement': {
        requireId(v, 'put_entitlement');
        const old = this.owners.get(v.id);
        if (old !== undefined) {
          if (old !== v.account) {
            this.accounts.get(old)?.entitlements.delete(v.id);
            this.prune(old);
            dirty.accounts.add(old);
          }
          this.objects--;
        }
        this.owners.set(v.id, v.account);
        this.data(v.account).entitlements.set(v.id, v);
        this.objects++;
        dirty.accounts.add(v.account);
        return;
      }
      case 'revoke_license':
        if (!this.revokedLicenses.has(v.id)) this.revokedLicenses.set(v.id, v);
        if (typeof v.account === 'string') dirty.accounts.add(v.account);
        return;
      case 'revoke_certificate':
        if (!this.revokedCertificates.has(v.serial)) this.revokedCertificates.set(v.serial, v);
        return;
      case 'put_product': this.touchCatalog(); this.catalog.products.set(v.id, v); dirty.catalog = true; return;
      case 'put_feature': this.touchCatalog(); this.catalog.features.set(v.id, v); dirty.catalog = true; return;
      case 'put_plan': this.touchCatalog(); this.catalog.plans.set(v.id, v); dirty.catalog = true; return;
      case 'put_addon': this.touchCatalog(); this.catalog.addons.set(v.id, v); dirty.catalog = true; return;
      case 'put_sku': this.touchCatalog(); this.catalog.skus.set(v.id, v); dirty.catalog = true; return;
      case 'set_default_offline_policy':
        this.touchCatalog();
        this.catalog.default_offline_policy = v;
        dirty.catalog = true;
        return;
      // Region state, never sent to replicas; not part of a data set.
      case 'put_credential':
      case 'release_seat':
        return;
      default:
        this.ignored.add(kind);
    }
  }

  /**
   * The view of one account, or null (unknown account, or known only by
   * its subjects or entitlements).
   * @param {string} id @param {Catalog} [catalog]
   * @returns {AccountView|null}
   */
  view(id, catalog = this.catalog) {
    const d = this.accounts.get(id);
    if (!d || d.account == null) return null;
    const ents = [...d.entitlements.keys()].sort(byId).map((k) => d.entitlements.get(k));
    return buildView(d.account, d.subjects.values(), ents, catalog);
  }

  /** Every view, built from scratch. @returns {Map<string, AccountView>} */
  views() {
    const out = new Map();
    for (const id of this.accounts.keys()) {
      const v = this.view(id);
      if (v) out.set(id, v);
    }
    return out;
  }

  /**
   * The views after `dirty`: every view when the catalog changed, else
   * `previous` with the touched accounts' views replaced, in place (checks
   * run on the same thread, between applies, so none sees a half-updated
   * map, and a change costs what it touched, not a copy of every view).
   * @param {Map<string, AccountView>} previous @param {Dirty} dirty
   */
  updateViews(previous, dirty) {
    if (dirty.catalog) return this.views();
    const out = previous;
    for (const id of dirty.accounts) {
      const v = this.view(id);
      if (v) out.set(id, v);
      else out.delete(id);
    }
    return out;
  }

  /** The data held, as the model's Dataset JSON (canonical order). */
  toDataset() {
    const sortedValues = (/** @type {Map<string, any>} */ m) => Object.fromEntries([...m.keys()].sort(byId).map((k) => [k, m.get(k)]));
    const accounts = [];
    const subjects = [];
    const entitlements = [];
    for (const id of [...this.accounts.keys()].sort(byId)) {
      const d = /** @type {any} */ (this.accounts.get(id));
      if (d.account) accounts.push(d.account);
      for (const k of [...d.subjects.keys()].sort(byId)) subjects.push(d.subjects.get(k));
    }
    for (const id of [...this.owners.keys()].sort(byId)) {
      const acc = /** @type {string} */ (this.owners.get(id));
      const e = this.accounts.get(acc)?.entitlements.get(id);
      if (e) entitlements.push(e);
    }
    return {
      catalog: {
        products: sortedValues(this.catalog.products),
        features: sortedValues(this.catalog.features),
        plans: sortedValues(this.catalog.plans),
        addons: sortedValues(this.catalog.addons),
        skus: sortedValues(this.catalog.skus),
        default_offline_policy: this.catalog.default_offline_policy,
      },
      accounts,
      subjects,
      entitlements,
      revoked_licenses: [...this.revokedLicenses.values()],
      revoked_certificates: [...this.revokedCertificates.values()],
    };
  }
}

/** @param {any} v @param {string} kind */
function requireId(v, kind) {
  if (v == null || typeof v !== 'object' || typeof v.id !== 'string') {
    throw new TypeError(`${kind}: an object with an id is expected`);
  }
  if (kind !== 'put_account' && typeof v.account !== 'string') {
    throw new TypeError(`${kind} ${v.id}: an account is expected`);
  }
}

/**
 * The mutations that rebuild a Dataset JSON (the model's `to_mutations`).
 * @param {any} dataset
 */
export function datasetToMutations(dataset) {
  const c = dataset.catalog ?? {};
  const out = [];
  for (const [kind, key] of [['put_product', 'products'], ['put_feature', 'features'], ['put_plan', 'plans'], ['put_addon', 'addons'], ['put_sku', 'skus']]) {
    const m = c[key] ?? {};
    for (const k of Object.keys(m).sort(byId)) out.push({ [kind]: m[k] });
  }
  if (c.default_offline_policy) out.push({ set_default_offline_policy: c.default_offline_policy });
  for (const a of dataset.accounts ?? []) out.push({ put_account: a });
  for (const s of dataset.subjects ?? []) out.push({ put_subject: s });
  for (const e of dataset.entitlements ?? []) out.push({ put_entitlement: e });
  for (const r of dataset.revoked_licenses ?? []) out.push({ revoke_license: r });
  for (const r of dataset.revoked_certificates ?? []) out.push({ revoke_certificate: r });
  return out;
}
