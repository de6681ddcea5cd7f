//! The fixture every engine test and the benchmark share: a small catalog,
//! one account with three subjects, and builders for entitlements and checks.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use tollgate_engine::{
    decide, AccountView, Check, Decision, Environment, Freshness, LiveState, SeatLease,
};
use tollgate_model::*;

/// 2026-11-27T23:21:02Z.
pub const NOW: UnixSeconds = UnixSeconds(1_795_821_662);
pub const DAY: i64 = 86_400;

pub fn id<T: TryFrom<String, Error = ModelError>>(s: &str) -> T {
    T::try_from(s.to_string()).expect("fixture ids are valid")
}

pub fn country(c: &str) -> CountryCode {
    CountryCode::new(c).unwrap()
}

fn feature(fid: &str, kind: FeatureKind) -> Feature {
    Feature {
        id: id(fid),
        product: id("studio"),
        name: fid.to_string(),
        kind,
        geo_rule: GeoRule::default(),
        offline_policy: None,
        config: ConfigValues::new(),
        auto_approve: None,
    }
}

pub fn capped(feature: &str, limit: u64) -> FeatureGrant {
    FeatureGrant {
        feature: id(feature),
        usage_cap: Some(UsageCap {
            limit,
            enforcement: CapEnforcement::Hard,
            additive: false,
        }),
        config: ConfigValues::new(),
    }
}

pub fn plain(feature: &str) -> FeatureGrant {
    FeatureGrant::new(id(feature))
}

/// studio: `export` (boolean), `render` (metered monthly), `sso`, `ai`
/// (denied in KP by the feature's own rule), `beta` (only in an add-on).
/// Plans basic (tier 1, 100 renders), pro (tier 2, 1000 renders, sso),
/// enterprise (tier 3, unlimited renders, sso, ai). Add-ons render-pack
/// (+500 renders, additive, any plan), sso-addon (for basic), beta-access.
pub fn catalog() -> Catalog {
    let mut c = Catalog::default();
    c.products.insert(
        id("studio"),
        Product {
            id: id("studio"),
            name: "Studio".into(),
        },
    );
    let metered = FeatureKind::Metered {
        unit: "renders".into(),
        period: UsagePeriod::Month,
    };
    let mut export = feature("export", FeatureKind::Boolean);
    export.config.insert(id("max_resolution"), "1080p".into());
    let mut ai = feature("ai", FeatureKind::Boolean);
    ai.geo_rule.deny_countries.insert(country("KP"));
    for f in [
        export,
        feature("render", metered),
        feature("sso", FeatureKind::Boolean),
        ai,
        feature("beta", FeatureKind::Boolean),
    ] {
        c.features.insert(f.id.clone(), f);
    }
    let plan = |pid: &str, tier: u32, features: Vec<FeatureGrant>| Plan {
        id: id(pid),
        product: id("studio"),
        name: pid.to_string(),
        tier,
        features,
        included_seats: None,
        geo_rule: GeoRule::default(),
        offline_policy: None,
    };
    let mut pro_export = plain("export");
    pro_export.config.insert(id("max_resolution"), "4k".into());
    for p in [
        plan("basic", 1, vec![plain("export"), capped("render", 100)]),
        plan(
            "pro",
            2,
            vec![pro_export, capped("render", 1000), plain("sso")],
        ),
        plan(
            "enterprise",
            3,
            vec![plain("export"), plain("render"), plain("sso"), plain("ai")],
        ),
    ] {
        c.plans.insert(p.id.clone(), p);
    }
    let addon = |aid: &str, features: Vec<FeatureGrant>, compatible: &[&str]| Addon {
        id: id(aid),
        product: id("studio"),
        name: aid.to_string(),
        features,
        compatible_plans: compatible.iter().map(|p| id(p)).collect(),
        geo_rule: GeoRule::default(),
        offline_policy: None,
        auto_approve: None,
    };
    let mut pack = capped("render", 500);
    pack.usage_cap.as_mut().unwrap().additive = true;
    for a in [
        addon("render-pack", vec![pack], &[]),
        addon("sso-addon", vec![plain("sso")], &["basic"]),
        addon("beta-access", vec![plain("beta")], &[]),
    ] {
        c.addons.insert(a.id.clone(), a);
    }
    c.validate().expect("fixture catalog is valid");
    c
}

pub fn account() -> Account {
    Account {
        id: id("acme"),
        name: "Acme Corp".into(),
        status: AccountStatus::Active,
    }
}

/// alice: admin, group eng. bob: no role, group sales. laptop-1: a device.
pub fn subjects() -> Vec<Subject> {
    let subject = |sid: &str, kind, roles: &[&str], groups: &[&str]| Subject {
        id: id(sid),
        account: id("acme"),
        kind,
        roles: roles.iter().map(|r| id(r)).collect(),
        groups: groups.iter().map(|g| id(g)).collect(),
    };
    vec![
        subject("alice", SubjectKind::User, &["admin"], &["eng"]),
        subject("bob", SubjectKind::User, &[], &["sales"]),
        subject("laptop-1", SubjectKind::Device, &[], &[]),
    ]
}

/// An active, perpetual entitlement of acme, valid since a day ago.
pub fn ent(eid: &str, grant: Grant) -> Entitlement {
    Entitlement {
        id: id(eid),
        account: id("acme"),
        grant,
        valid_from: UnixSeconds(NOW.0 - DAY),
        valid_until: None,
        grace_period_seconds: 0,
        seats: None,
        usage_cap_overrides: BTreeMap::new(),
        status: EntitlementStatus::Active,
        geo_rule: GeoRule::default(),
        offline_policy: None,
        required_role: None,
        allowed_groups: BTreeSet::new(),
        source_order: None,
        revision: 1,
        trial: false,
    }
}

pub fn plan(pid: &str) -> Grant {
    Grant::Plan(id(pid))
}

pub fn addon(aid: &str) -> Grant {
    Grant::Addon(id(aid))
}

/// Usage and leases given as plain values.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub consumed: HashMap<String, u64>,
    pub leases: HashMap<String, Vec<SeatLease>>,
    /// Features whose hard-cap share this node has used up.
    pub share_exhausted: Vec<String>,
}

impl LiveState for Live {
    fn usage_consumed(&self, _: &AccountId, feature: &FeatureId, _: PeriodKey) -> u64 {
        self.consumed.get(feature.as_str()).copied().unwrap_or(0)
    }
    fn floating_leases(&self, entitlement: &EntitlementId) -> &[SeatLease] {
        self.leases
            .get(entitlement.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
    fn hard_cap_share_exhausted(&self, _: &AccountId, feature: &FeatureId, _: PeriodKey) -> bool {
        self.share_exhausted.iter().any(|f| f == feature.as_str())
    }
}

/// One check with everything around it; defaults: alice checks `export`
/// from Germany, data fresh, nothing consumed, no leases.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub entitlements: Vec<Entitlement>,
    pub account: Option<Account>,
    pub check: Check,
    pub geo: GeoFacts,
    pub live: Live,
    pub freshness: Freshness,
    pub now: UnixSeconds,
}

impl Scenario {
    pub fn new(entitlements: Vec<Entitlement>) -> Self {
        Scenario {
            entitlements,
            account: Some(account()),
            check: Check {
                account: id("acme"),
                subject: Some(id("alice")),
                feature: id("export"),
                consume: 0,
            },
            geo: GeoFacts {
                country: Some(country("DE")),
                continent: Some(Continent::Europe),
                subdivisions: vec![SubdivisionCode::new("DE-BE").unwrap()],
                anonymous: None,
            },
            live: Live::default(),
            freshness: Freshness::current(42, NOW),
            now: NOW,
        }
    }

    pub fn feature(mut self, f: &str) -> Self {
        self.check.feature = id(f);
        self
    }
    pub fn subject(mut self, s: Option<&str>) -> Self {
        self.check.subject = s.map(id);
        self
    }
    pub fn consume(mut self, n: u64) -> Self {
        self.check.consume = n;
        self
    }
    /// This node's share of `feature`'s hard cap is used up.
    pub fn share_exhausted(mut self, feature: &str) -> Self {
        self.live.share_exhausted.push(feature.into());
        self
    }
    pub fn consumed(mut self, feature: &str, n: u64) -> Self {
        self.live.consumed.insert(feature.into(), n);
        self
    }
    pub fn located_in(mut self, c: Option<&str>, continent: Option<Continent>) -> Self {
        self.geo.country = c.map(country);
        self.geo.continent = continent;
        self.geo.subdivisions.clear();
        self
    }
    pub fn lease(mut self, entitlement: &str, holder: &str, expires_at: UnixSeconds) -> Self {
        self.live
            .leases
            .entry(entitlement.into())
            .or_default()
            .push(SeatLease {
                holder: id(holder),
                expires_at,
                acquired_at: None,
            });
        self
    }
    pub fn stale_for(mut self, seconds: i64) -> Self {
        self.freshness.last_origin_contact = Some(UnixSeconds(self.now.0 - seconds));
        self
    }
    pub fn at(mut self, now: UnixSeconds) -> Self {
        self.now = now;
        self
    }

    pub fn view(&self, catalog: &Catalog) -> Option<AccountView> {
        self.account
            .clone()
            .map(|a| AccountView::build(a, subjects(), self.entitlements.clone(), catalog))
    }

    pub fn decide_with(&self, catalog: &Catalog) -> Decision {
        let view = self.view(catalog);
        let env = Environment {
            catalog,
            live: &self.live,
            freshness: self.freshness,
            now: self.now,
        };
        decide(&self.check, view.as_ref(), &self.geo, &env)
    }

    pub fn decide(&self) -> Decision {
        self.decide_with(&catalog())
    }
}
