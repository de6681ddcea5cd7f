//! The generator's data sets and check cases: model values in, the engine's
//! decisions out. Every instant is an offset from [`NOW`]; nothing reads a
//! clock.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use tollgate_engine::{
    decide, AccountView, Check, Decision, Environment, Freshness, NoLiveState, UpgradeTarget,
};
use tollgate_model::{
    AccountId, AnonymousNetwork, Continent, CountryCode, Dataset, GeoFacts, Mutation,
    SubdivisionCode, UnixSeconds,
};

/// 2026-05-28T20:26:40Z: the instant most cases are decided at.
pub const NOW: i64 = 1_780_000_000;
pub const HOUR: i64 = 3_600;
pub const DAY: i64 = 86_400;

/// A named data set: the mutations that build it, in the order a replica
/// applies them, and the revision they bring it to.
pub struct NamedDataset {
    pub name: &'static str,
    pub revision: u64,
    pub mutations: Vec<Mutation>,
    /// The data set the mutations make, as the model's own `apply` builds
    /// it (validated).
    pub data: Dataset,
}

/// Builds a data set from `initial` followed by `changes` (puts that
/// replace, deletes), as an origin's state then changefeed would deliver it.
fn named(name: &'static str, revision: u64, initial: Value, changes: Vec<Value>) -> NamedDataset {
    let initial: Dataset = serde_json::from_value(initial)
        .unwrap_or_else(|e| panic!("data set {name} does not parse: {e}"));
    let changes: Vec<Mutation> = changes
        .into_iter()
        .map(|m| {
            serde_json::from_value(m)
                .unwrap_or_else(|e| panic!("a change of data set {name} does not parse: {e}"))
        })
        .collect();
    let mut mutations = initial.to_mutations();
    mutations.extend(changes.iter().cloned());
    let mut data = initial;
    for m in changes {
        data.apply(m);
    }
    data.validate()
        .unwrap_or_else(|e| panic!("data set {name} is not valid: {e}"));
    NamedDataset {
        name,
        revision,
        mutations,
        data,
    }
}

/// "studio": plans, add-ons, caps, upgrade hints, validity, status, trials,
/// several grants of one feature, configuration values.
fn studio() -> NamedDataset {
    let t = |offset: i64| NOW + offset;
    named(
        "studio",
        42,
        json!({
            "catalog": {
                "products": {"studio": {"id": "studio", "name": "Studio"}},
                "features": {
                    "collab": {"id": "collab", "product": "studio", "name": "Collaboration",
                               "kind": "boolean"},
                    "render-4k": {"id": "render-4k", "product": "studio", "name": "4K render",
                                  "kind": "boolean"},
                    "sso": {"id": "sso", "product": "studio", "name": "Single sign-on",
                            "kind": "boolean"},
                    "plugins": {"id": "plugins", "product": "studio", "name": "Plugins",
                                "kind": "boolean",
                                "config": {"max_plugins": "5", "store": "public"}},
                    "export": {"id": "export", "product": "studio", "name": "Export",
                               "kind": {"metered": {"unit": "exports", "period": "month"}}},
                    "api-calls": {"id": "api-calls", "product": "studio", "name": "API calls",
                                  "kind": {"metered": {"unit": "calls", "period": "day"}}},
                    "ai-assist": {"id": "ai-assist", "product": "studio", "name": "AI assist",
                                  "kind": {"metered": {"unit": "prompts", "period": "month"}}},
                    "archive": {"id": "archive", "product": "studio", "name": "Archive",
                                "kind": {"metered": {"unit": "projects", "period": "lifetime"}}}
                },
                "plans": {
                    "basic": {"id": "basic", "product": "studio", "name": "Basic", "tier": 1,
                              "features": [
                                  {"feature": "collab"},
                                  {"feature": "plugins"},
                                  {"feature": "export", "usage_cap": {"limit": 100}},
                                  {"feature": "archive", "usage_cap": {"limit": 10}}
                              ]},
                    "pro": {"id": "pro", "product": "studio", "name": "Pro", "tier": 2,
                            "included_seats": 10,
                            "features": [
                                {"feature": "collab"},
                                {"feature": "render-4k", "config": {"max_resolution": "4k"}},
                                {"feature": "plugins", "config": {"max_plugins": "50"}},
                                {"feature": "export", "usage_cap": {"limit": 1000}},
                                {"feature": "api-calls",
                                 "usage_cap": {"limit": 10000, "enforcement": "soft"}},
                                {"feature": "archive", "usage_cap": {"limit": 100}}
                            ]},
                    "enterprise": {"id": "enterprise", "product": "studio", "name": "Enterprise",
                                   "tier": 3,
                                   "features": [
                                       {"feature": "collab"},
                                       {"feature": "render-4k",
                                        "config": {"max_resolution": "8k"}},
                                       {"feature": "sso"},
                                       {"feature": "plugins", "config": {"max_plugins": "500"}},
                                       {"feature": "export"},
                                       {"feature": "api-calls"},
                                       {"feature": "ai-assist", "usage_cap": {"limit": 500}},
                                       {"feature": "archive"}
                                   ]}
                },
                "addons": {
                    "ai": {"id": "ai", "product": "studio", "name": "AI pack",
                           "compatible_plans": ["pro", "enterprise"],
                           "features": [{"feature": "ai-assist",
                                         "usage_cap": {"limit": 50, "enforcement": "soft"}}]},
                    "export-pack": {"id": "export-pack", "product": "studio", "name": "Export pack",
                                    "compatible_plans": ["basic", "pro"],
                                    "features": [{"feature": "export",
                                                  "usage_cap": {"limit": 500, "additive": true}}]},
                    "big-export-pack": {"id": "big-export-pack", "product": "studio",
                                        "name": "Big export pack",
                                        "compatible_plans": ["basic", "pro"],
                                        "features": [{"feature": "export",
                                                      "usage_cap": {"limit": 5000,
                                                                    "additive": true}}]},
                    "sso-pack": {"id": "sso-pack", "product": "studio", "name": "SSO pack",
                                 "compatible_plans": ["pro"],
                                 "features": [{"feature": "sso"}]}
                },
                "skus": {
                    "STU-BASIC": {"id": "STU-BASIC", "name": "Studio Basic",
                                  "target": {"plan": "basic"}},
                    "STU-PRO": {"id": "STU-PRO", "name": "Studio Pro", "target": {"plan": "pro"},
                                "quantity": "floating_seats"},
                    "STU-ENT": {"id": "STU-ENT", "name": "Studio Enterprise",
                                "target": {"plan": "enterprise"}, "quantity": "unmetered"},
                    "STU-AI": {"id": "STU-AI", "name": "AI pack", "target": {"addon": "ai"}}
                },
                "default_offline_policy": {"offline_grace_seconds": 259200, "after_grace": "deny"}
            },
            "accounts": [
                {"id": "acme", "name": "Acme"},
                {"id": "globex", "name": "Globex"},
                {"id": "hooli", "name": "Hooli"},
                {"id": "umbrella", "name": "Umbrella"},
                {"id": "vandelay", "name": "Vandelay"},
                {"id": "wayne", "name": "Wayne"},
                {"id": "stark", "name": "Stark"},
                {"id": "tyrell", "name": "Tyrell"},
                {"id": "cyberdyne", "name": "Cyberdyne"},
                {"id": "soylent", "name": "Soylent"},
                {"id": "oscorp", "name": "Oscorp"},
                {"id": "lexcorp", "name": "LexCorp"},
                {"id": "initech", "name": "Initech"},
                {"id": "massive", "name": "Massive Dynamic"}
            ],
            "subjects": [
                {"id": "alice", "account": "acme", "kind": "user",
                 "roles": ["admin"], "groups": ["design"]},
                {"id": "bob", "account": "acme", "kind": "user"},
                {"id": "kiosk-1", "account": "acme", "kind": "device"},
                {"id": "gina", "account": "globex", "kind": "user"},
                {"id": "ian", "account": "initech", "kind": "user"}
            ],
            "entitlements": [
                {"id": "acme-pro", "account": "acme", "grant": {"plan": "pro"},
                 "valid_from": t(-30 * DAY), "valid_until": t(335 * DAY),
                 "grace_period_seconds": 7 * DAY, "source_order": "ord-1001", "revision": 40},
                {"id": "globex-basic", "account": "globex", "grant": {"plan": "basic"},
                 "valid_from": t(-90 * DAY)},
                {"id": "globex-export-pack", "account": "globex", "grant": {"addon": "export-pack"},
                 "valid_from": t(-10 * DAY), "valid_until": t(20 * DAY)},
                {"id": "hooli-basic", "account": "hooli", "grant": {"plan": "basic"},
                 "valid_from": t(-90 * DAY),
                 "usage_cap_overrides": {"export": {"limit": 0}}},
                {"id": "umbrella-pro", "account": "umbrella", "grant": {"plan": "pro"},
                 "valid_from": t(-90 * DAY),
                 "usage_cap_overrides": {"api-calls": {"limit": 0, "enforcement": "soft"},
                                         "archive": {"limit": 0}}},
                {"id": "vandelay-ai", "account": "vandelay",
                 "grant": {"feature": {"feature": "ai-assist", "usage_cap": {"limit": 25}}},
                 "valid_from": t(-DAY)},
                {"id": "wayne-basic", "account": "wayne", "grant": {"plan": "basic"},
                 "valid_from": t(-365 * DAY)},
                {"id": "wayne-collab-short", "account": "wayne",
                 "grant": {"feature": {"feature": "collab", "config": {"room": "short"}}},
                 "valid_from": t(-DAY), "valid_until": t(10 * DAY)},
                {"id": "wayne-plugins-old", "account": "wayne",
                 "grant": {"feature": {"feature": "plugins", "config": {"max_plugins": "99"}}},
                 "valid_from": t(-60 * DAY), "valid_until": t(-DAY),
                 "grace_period_seconds": 7 * DAY},
                {"id": "wayne-render-expired", "account": "wayne",
                 "grant": {"feature": {"feature": "render-4k"}},
                 "valid_from": t(-60 * DAY), "valid_until": t(-30 * DAY)},
                {"id": "wayne-render-revoked", "account": "wayne",
                 "grant": {"feature": {"feature": "render-4k"}},
                 "valid_from": t(-60 * DAY), "status": "revoked"},
                {"id": "wayne-sso-grace", "account": "wayne",
                 "grant": {"feature": {"feature": "sso"}},
                 "valid_from": t(-60 * DAY), "valid_until": t(-DAY),
                 "grace_period_seconds": 3 * DAY},
                {"id": "wayne-sso-suspended", "account": "wayne",
                 "grant": {"feature": {"feature": "sso"}},
                 "valid_from": t(-60 * DAY), "status": "suspended"},
                {"id": "wayne-export-pack", "account": "wayne", "grant": {"addon": "export-pack"},
                 "valid_from": t(-DAY)},
                {"id": "wayne-export-pack-2", "account": "wayne", "grant": {"addon": "export-pack"},
                 "valid_from": t(-DAY)},
                {"id": "stark-ai-trial", "account": "stark", "grant": {"addon": "ai"},
                 "valid_from": t(-3 * DAY), "valid_until": t(11 * DAY), "trial": true},
                {"id": "stark-pro-trial", "account": "stark", "grant": {"plan": "pro"},
                 "valid_from": t(-3 * DAY), "valid_until": t(11 * DAY), "trial": true},
                {"id": "tyrell-basic", "account": "tyrell", "grant": {"plan": "basic"},
                 "valid_from": t(-365 * DAY), "valid_until": t(-2 * DAY),
                 "grace_period_seconds": 7 * DAY},
                {"id": "cyberdyne-basic", "account": "cyberdyne", "grant": {"plan": "basic"},
                 "valid_from": t(-365 * DAY), "valid_until": t(-10 * DAY),
                 "grace_period_seconds": 7 * DAY},
                {"id": "soylent-pro", "account": "soylent", "grant": {"plan": "pro"},
                 "valid_from": t(DAY), "valid_until": t(366 * DAY)},
                {"id": "oscorp-pro", "account": "oscorp", "grant": {"plan": "pro"},
                 "valid_from": t(-30 * DAY)},
                {"id": "lexcorp-pro", "account": "lexcorp", "grant": {"plan": "pro"},
                 "valid_from": t(-30 * DAY), "status": "revoked"},
                {"id": "initech-enterprise", "account": "initech", "grant": {"plan": "enterprise"},
                 "valid_from": t(-30 * DAY)},
                {"id": "massive-enterprise", "account": "massive", "grant": {"plan": "enterprise"},
                 "valid_from": t(-30 * DAY)},
                {"id": "massive-ai", "account": "massive", "grant": {"addon": "ai"},
                 "valid_from": t(-30 * DAY)}
            ]
        }),
        // Changes after the state: a subject added then deleted, an
        // entitlement and an account replaced by later puts.
        vec![
            json!({"put_subject": {"id": "zed", "account": "acme", "kind": "user"}}),
            json!({"delete_subject": {"account": "acme", "subject": "zed"}}),
            json!({"put_entitlement": {"id": "oscorp-pro", "account": "oscorp",
                   "grant": {"plan": "pro"}, "valid_from": t(-30 * DAY),
                   "status": "suspended", "revision": 41}}),
            json!({"put_account": {"id": "initech", "name": "Initech", "status": "suspended"}}),
        ],
    )
}

/// "geo": geo rules on features, a plan and an entitlement.
fn geo() -> NamedDataset {
    let t = |offset: i64| NOW + offset;
    named(
        "geo",
        7,
        json!({
            "catalog": {
                "products": {"maps": {"id": "maps", "name": "Maps"}},
                "features": {
                    "view": {"id": "view", "product": "maps", "name": "View", "kind": "boolean"},
                    "export-eu": {"id": "export-eu", "product": "maps", "name": "EU export",
                                  "kind": "boolean",
                                  "geo_rule": {"allow_continents": ["EU"]}},
                    "tiles": {"id": "tiles", "product": "maps", "name": "Offline tiles",
                              "kind": "boolean",
                              "geo_rule": {"deny_countries": ["IR", "KP"]}},
                    "lenient": {"id": "lenient", "product": "maps", "name": "Lenient",
                                "kind": "boolean",
                                "geo_rule": {"deny_countries": ["KP"],
                                             "unknown_location": "allow"}},
                    "stream": {"id": "stream", "product": "maps", "name": "Stream",
                               "kind": "boolean",
                               "geo_rule": {"allow_countries": ["DE"],
                                            "allow_subdivisions": ["US-CA"]}},
                    "secure": {"id": "secure", "product": "maps", "name": "Secure",
                               "kind": "boolean",
                               "geo_rule": {"block_anonymous": true}},
                    "strict": {"id": "strict", "product": "maps", "name": "Strict",
                               "kind": "boolean",
                               "geo_rule": {"unknown_location": "deny"}},
                    "sanctioned": {"id": "sanctioned", "product": "maps", "name": "Sanctioned",
                                   "kind": "boolean",
                                   "geo_rule": {"allow_continents": ["EU", "NA"],
                                                "deny_countries": ["BY"],
                                                "deny_continents": ["AN"],
                                                "block_anonymous": true}}
                },
                "plans": {
                    "atlas": {"id": "atlas", "product": "maps", "name": "Atlas", "tier": 1,
                              "features": [{"feature": "view"}, {"feature": "export-eu"},
                                           {"feature": "tiles"}, {"feature": "lenient"},
                                           {"feature": "stream"}, {"feature": "secure"},
                                           {"feature": "strict"}, {"feature": "sanctioned"}]},
                    "regional": {"id": "regional", "product": "maps", "name": "Regional",
                                 "tier": 1,
                                 "features": [{"feature": "view"}],
                                 "geo_rule": {"allow_countries": ["FR"]}}
                }
            },
            "accounts": [
                {"id": "atlas-co", "name": "Atlas Co"},
                {"id": "eurocorp", "name": "Eurocorp"},
                {"id": "gallia", "name": "Gallia"}
            ],
            "subjects": [
                {"id": "ana", "account": "atlas-co", "kind": "user"}
            ],
            "entitlements": [
                {"id": "atlas-co-atlas", "account": "atlas-co", "grant": {"plan": "atlas"},
                 "valid_from": t(-DAY)},
                {"id": "eurocorp-view", "account": "eurocorp",
                 "grant": {"feature": {"feature": "view"}},
                 "valid_from": t(-DAY),
                 "geo_rule": {"deny_subdivisions": ["DE-BY"], "unknown_location": "allow"}},
                {"id": "gallia-regional", "account": "gallia", "grant": {"plan": "regional"},
                 "valid_from": t(-DAY)}
            ]
        }),
        vec![],
    )
}

/// "offline": offline policies against the time since the region last
/// heard from the origin.
fn offline() -> NamedDataset {
    let t = |offset: i64| NOW + offset;
    named(
        "offline",
        1000,
        json!({
            "catalog": {
                "products": {"desk": {"id": "desk", "name": "Desk"}},
                "features": {
                    "sync": {"id": "sync", "product": "desk", "name": "Sync", "kind": "boolean"},
                    "render": {"id": "render", "product": "desk", "name": "Render",
                               "kind": "boolean",
                               "offline_policy": {"offline_grace_seconds": 3600,
                                                  "after_grace": "deny"}},
                    "viewer": {"id": "viewer", "product": "desk", "name": "Viewer",
                               "kind": "boolean",
                               "offline_policy": {"offline_grace_seconds": 600,
                                                  "after_grace": "allow"}},
                    "notes": {"id": "notes", "product": "desk", "name": "Notes",
                              "kind": "boolean"},
                    "legacy": {"id": "legacy", "product": "desk", "name": "Legacy",
                               "kind": "boolean"},
                    "admin": {"id": "admin", "product": "desk", "name": "Admin",
                              "kind": "boolean"}
                },
                "plans": {
                    "desk-plan": {"id": "desk-plan", "product": "desk", "name": "Desk",
                                  "tier": 1,
                                  "features": [{"feature": "sync"}, {"feature": "render"},
                                               {"feature": "viewer"}],
                                  "offline_policy": {"offline_grace_seconds": 172800,
                                                     "after_grace": "allow"}}
                },
                "default_offline_policy": {"offline_grace_seconds": 86400, "after_grace": "deny"}
            },
            "accounts": [
                {"id": "field", "name": "Field Ops"},
                {"id": "office", "name": "Office"}
            ],
            "subjects": [
                {"id": "fay", "account": "field", "kind": "user"}
            ],
            "entitlements": [
                {"id": "field-sync", "account": "field", "grant": {"feature": {"feature": "sync"}},
                 "valid_from": t(-30 * DAY)},
                {"id": "field-render", "account": "field",
                 "grant": {"feature": {"feature": "render"}}, "valid_from": t(-30 * DAY)},
                {"id": "field-viewer", "account": "field",
                 "grant": {"feature": {"feature": "viewer"}}, "valid_from": t(-30 * DAY)},
                {"id": "field-notes", "account": "field",
                 "grant": {"feature": {"feature": "notes"}}, "valid_from": t(-30 * DAY),
                 "offline_policy": {"offline_grace_seconds": 60, "after_grace": "deny"}},
                {"id": "field-legacy", "account": "field",
                 "grant": {"feature": {"feature": "legacy"}}, "valid_from": t(-30 * DAY),
                 "status": "revoked"},
                {"id": "field-admin", "account": "field",
                 "grant": {"feature": {"feature": "admin"}}, "valid_from": t(-30 * DAY),
                 "required_role": "admin"},
                {"id": "office-desk", "account": "office", "grant": {"plan": "desk-plan"},
                 "valid_from": t(-30 * DAY)}
            ]
        }),
        vec![],
    )
}

/// "seats": named and floating seats, roles and groups.
fn seats() -> NamedDataset {
    let t = |offset: i64| NOW + offset;
    named(
        "seats",
        3,
        json!({
            "catalog": {
                "products": {"cad": {"id": "cad", "name": "CAD"}},
                "features": {
                    "design": {"id": "design", "product": "cad", "name": "Design",
                               "kind": "boolean"},
                    "review": {"id": "review", "product": "cad", "name": "Review",
                               "kind": "boolean"},
                    "console": {"id": "console", "product": "cad", "name": "Admin console",
                                "kind": "boolean"},
                    "share": {"id": "share", "product": "cad", "name": "Share",
                              "kind": "boolean"},
                    "audit": {"id": "audit", "product": "cad", "name": "Audit",
                              "kind": "boolean"}
                }
            },
            "accounts": [{"id": "contoso", "name": "Contoso"}],
            "subjects": [
                {"id": "alice", "account": "contoso", "kind": "user",
                 "roles": ["admin"], "groups": ["design"]},
                {"id": "bob", "account": "contoso", "kind": "user", "groups": ["sales"]},
                {"id": "carol", "account": "contoso", "kind": "user",
                 "roles": ["auditor"], "groups": ["eng"]},
                {"id": "dave", "account": "contoso", "kind": "user"},
                {"id": "plotter", "account": "contoso", "kind": "device"}
            ],
            "entitlements": [
                {"id": "contoso-design", "account": "contoso",
                 "grant": {"feature": {"feature": "design"}}, "valid_from": t(-DAY),
                 "seats": {"count": 2, "mode": {"named": {"assigned": ["alice", "bob"]}}}},
                {"id": "contoso-review", "account": "contoso",
                 "grant": {"feature": {"feature": "review"}}, "valid_from": t(-DAY),
                 "seats": {"count": 5, "mode": {"floating": {"lease_ttl_seconds": 900}}}},
                {"id": "contoso-console", "account": "contoso",
                 "grant": {"feature": {"feature": "console"}}, "valid_from": t(-DAY),
                 "required_role": "admin"},
                {"id": "contoso-share", "account": "contoso",
                 "grant": {"feature": {"feature": "share"}}, "valid_from": t(-DAY),
                 "allowed_groups": ["design", "eng"]},
                {"id": "contoso-audit", "account": "contoso",
                 "grant": {"feature": {"feature": "audit"}}, "valid_from": t(-DAY),
                 "required_role": "auditor",
                 "seats": {"count": 1, "mode": {"named": {"assigned": ["plotter"]}}}}
            ]
        }),
        vec![],
    )
}

pub fn datasets() -> Vec<NamedDataset> {
    vec![studio(), geo(), offline(), seats()]
}

/// Where a check comes from.
#[derive(Clone, Default)]
pub struct Place {
    pub country: Option<&'static str>,
    pub continent: Option<&'static str>,
    pub subdivisions: &'static [&'static str],
    pub anonymous: Option<AnonymousNetwork>,
}

impl Place {
    pub fn facts(&self) -> GeoFacts {
        GeoFacts {
            country: self.country.map(|c| CountryCode::new(c).unwrap()),
            continent: self.continent.map(|c| Continent::from_code(c).unwrap()),
            subdivisions: self
                .subdivisions
                .iter()
                .map(|s| SubdivisionCode::new(s).unwrap())
                .collect(),
            anonymous: self.anonymous,
        }
    }
}

fn at(country: &'static str, continent: &'static str) -> Option<Place> {
    Some(Place {
        country: Some(country),
        continent: Some(continent),
        ..Place::default()
    })
}

fn at_sub(
    country: &'static str,
    continent: &'static str,
    subdivisions: &'static [&'static str],
) -> Option<Place> {
    Some(Place {
        country: Some(country),
        continent: Some(continent),
        subdivisions,
        ..Place::default()
    })
}

fn anonymous(place: Option<Place>, network: AnonymousNetwork) -> Option<Place> {
    place.map(|p| Place {
        anonymous: Some(network),
        ..p
    })
}

fn vpn() -> AnonymousNetwork {
    AnonymousNetwork {
        vpn: true,
        ..AnonymousNetwork::default()
    }
}

/// One check case, before its expected outcome is computed.
pub struct CheckCase {
    pub name: &'static str,
    pub dataset: &'static str,
    pub now: i64,
    pub last_origin_contact: Option<i64>,
    pub account: &'static str,
    pub subject: Option<&'static str>,
    pub feature: &'static str,
    /// `None`: the location is unknown.
    pub location: Option<Place>,
}

/// A check at [`NOW`], the region having heard from the origin a minute
/// ago, from an unknown location.
fn case(
    name: &'static str,
    dataset: &'static str,
    account: &'static str,
    subject: Option<&'static str>,
    feature: &'static str,
) -> CheckCase {
    CheckCase {
        name,
        dataset,
        now: NOW,
        last_origin_contact: Some(NOW - 60),
        account,
        subject,
        feature,
        location: None,
    }
}

impl CheckCase {
    fn from(mut self, location: Option<Place>) -> CheckCase {
        self.location = location;
        self
    }

    fn contact(mut self, last_origin_contact: Option<i64>) -> CheckCase {
        self.last_origin_contact = last_origin_contact;
        self
    }
}

pub fn check_cases() -> Vec<CheckCase> {
    let s = "studio";
    let g = "geo";
    let o = "offline";
    let st = "seats";
    vec![
        // ---- Plans, add-ons, hints, caps, configuration (studio) ----
        case(
            "plan: a boolean feature of the held plan is ALLOW",
            s,
            "acme",
            Some("alice"),
            "collab",
        ),
        case(
            "plan: a check without a subject is decided for the account",
            s,
            "acme",
            None,
            "collab",
        ),
        case(
            "plan: a device subject is ALLOW like a user",
            s,
            "acme",
            Some("kiosk-1"),
            "collab",
        ),
        case(
            "config: the plan's grant overrides the feature's defaults key by key",
            s,
            "acme",
            Some("alice"),
            "plugins",
        ),
        case(
            "config: a grant without values gets the feature's defaults",
            s,
            "globex",
            Some("gina"),
            "plugins",
        ),
        case(
            "config: a plan grant's own values",
            s,
            "acme",
            Some("bob"),
            "render-4k",
        ),
        case(
            "metered: a hard cap with nothing consumed reports limit and remaining",
            s,
            "acme",
            Some("alice"),
            "export",
        ),
        case(
            "metered: a soft cap with nothing consumed is ALLOW without overage",
            s,
            "acme",
            Some("alice"),
            "api-calls",
        ),
        case(
            "metered: a lifetime-period cap",
            s,
            "acme",
            Some("alice"),
            "archive",
        ),
        case(
            "metered: an unlimited metered feature has no limit",
            s,
            "massive",
            None,
            "export",
        ),
        case(
            "metered: an additive add-on cap adds to the plan's cap",
            s,
            "globex",
            Some("gina"),
            "export",
        ),
        case(
            "metered: two additive add-ons both add to the plan's cap",
            s,
            "wayne",
            None,
            "export",
        ),
        case(
            "metered: an add-on's soft cap next to a plan's hard cap: the larger base cap, soft",
            s,
            "massive",
            None,
            "ai-assist",
        ),
        case(
            "cap: a hard cap of zero with nothing consumed is ALLOW with nothing remaining",
            s,
            "hooli",
            None,
            "export",
        ),
        case(
            "cap: a soft cap of zero with nothing consumed is ALLOW without overage",
            s,
            "umbrella",
            None,
            "api-calls",
        ),
        case(
            "cap: an entitlement's cap override replaces the plan's cap",
            s,
            "umbrella",
            None,
            "archive",
        ),
        case(
            "cap: a single-feature grant carries its own cap",
            s,
            "vandelay",
            None,
            "ai-assist",
        ),
        case(
            "hint: a feature of a higher plan is NOT_ENTITLED with a plan hint",
            s,
            "globex",
            Some("gina"),
            "sso",
        ),
        case(
            "hint: a compatible add-on comes before a plan that grants the feature",
            s,
            "acme",
            Some("alice"),
            "sso",
        ),
        case(
            "hint: an add-on hint carries the add-on's cap",
            s,
            "acme",
            Some("alice"),
            "ai-assist",
        ),
        case(
            "hint: the lowest tier above the account's plan that grants the feature",
            s,
            "globex",
            Some("gina"),
            "render-4k",
        ),
        case(
            "hint: no add-on compatible with basic grants ai-assist, so the plan that caps it",
            s,
            "globex",
            None,
            "ai-assist",
        ),
        case(
            "not entitled: a feature not in the catalog has no hint",
            s,
            "acme",
            Some("alice"),
            "teleport",
        ),
        case(
            "unknown account: an account not in the data",
            s,
            "nobody",
            Some("alice"),
            "collab",
        ),
        case(
            "unknown subject: a subject not in the account",
            s,
            "acme",
            Some("mallory"),
            "collab",
        ),
        case(
            "unknown subject: a subject of another account",
            s,
            "acme",
            Some("gina"),
            "collab",
        ),
        case(
            "unknown subject: a subject put then deleted is gone",
            s,
            "acme",
            Some("zed"),
            "collab",
        ),
        case(
            "suspended: an account suspended by a later put is SUSPENDED before anything else",
            s,
            "initech",
            Some("ian"),
            "collab",
        ),
        case(
            "suspended: an unknown subject of a suspended account is still SUSPENDED",
            s,
            "initech",
            Some("nobody"),
            "collab",
        ),
        case(
            "suspended: an entitlement suspended by a later put",
            s,
            "oscorp",
            None,
            "collab",
        ),
        case(
            "revoked: a revoked entitlement",
            s,
            "lexcorp",
            None,
            "collab",
        ),
        case("validity: not yet valid", s, "soylent", None, "collab"),
        case(
            "validity: expired, inside the grace period, is IN_GRACE",
            s,
            "tyrell",
            None,
            "collab",
        ),
        case(
            "validity: expired and past the grace period is EXPIRED",
            s,
            "cyberdyne",
            None,
            "collab",
        ),
        case(
            "validity: IN_GRACE keeps the cap of a metered feature",
            s,
            "tyrell",
            None,
            "export",
        ),
        CheckCase {
            now: NOW - 30 * DAY,
            last_origin_contact: Some(NOW - 30 * DAY),
            ..case(
                "validity: valid from exactly now is ALLOW",
                s,
                "acme",
                None,
                "collab",
            )
        },
        CheckCase {
            now: NOW + 342 * DAY,
            last_origin_contact: Some(NOW + 342 * DAY),
            ..case(
                "validity: the last second of the grace period is IN_GRACE",
                s,
                "acme",
                None,
                "collab",
            )
        },
        CheckCase {
            now: NOW + 342 * DAY + 1,
            last_origin_contact: Some(NOW + 342 * DAY + 1),
            ..case(
                "validity: one second past the grace period is EXPIRED",
                s,
                "acme",
                None,
                "collab",
            )
        },
        case(
            "trial: an add-on trial is ALLOW and says trial",
            s,
            "stark",
            None,
            "ai-assist",
        ),
        case(
            "trial: a plan trial is ALLOW and says trial",
            s,
            "stark",
            None,
            "collab",
        ),
        case(
            "grants: the grant usable longest wins",
            s,
            "wayne",
            None,
            "collab",
        ),
        case(
            "grants: an active grant beats one in grace (its config applies)",
            s,
            "wayne",
            None,
            "plugins",
        ),
        case(
            "grants: among denials the most permissive is reported (EXPIRED over REVOKED)",
            s,
            "wayne",
            None,
            "render-4k",
        ),
        case(
            "grants: IN_GRACE beats a suspended grant",
            s,
            "wayne",
            None,
            "sso",
        ),
        // ---- Geography (geo) ----
        case(
            "geo: a feature without a rule allows an unknown location",
            g,
            "atlas-co",
            Some("ana"),
            "view",
        ),
        case(
            "geo: a feature without a rule allows any country",
            g,
            "atlas-co",
            Some("ana"),
            "view",
        )
        .from(at("KP", "AS")),
        case(
            "geo: a continent allow-list admits a country on it",
            g,
            "atlas-co",
            Some("ana"),
            "export-eu",
        )
        .from(at("DE", "EU")),
        case(
            "geo: a continent allow-list blocks a country elsewhere",
            g,
            "atlas-co",
            Some("ana"),
            "export-eu",
        )
        .from(at("US", "NA")),
        case(
            "geo: a continent allow-list admits the continent alone",
            g,
            "atlas-co",
            None,
            "export-eu",
        )
        .from(Some(Place {
            continent: Some("EU"),
            ..Place::default()
        })),
        case(
            "geo: an allow-list blocks an unknown location by default",
            g,
            "atlas-co",
            None,
            "export-eu",
        ),
        case(
            "geo: a location with no field set is unknown",
            g,
            "atlas-co",
            None,
            "export-eu",
        )
        .from(Some(Place::default())),
        case(
            "geo: an allow-list without block_anonymous admits a VPN",
            g,
            "atlas-co",
            None,
            "export-eu",
        )
        .from(anonymous(at("FR", "EU"), vpn())),
        case(
            "geo: a country deny-list blocks the country",
            g,
            "atlas-co",
            None,
            "tiles",
        )
        .from(at("KP", "AS")),
        case(
            "geo: a country deny-list admits other countries",
            g,
            "atlas-co",
            None,
            "tiles",
        )
        .from(at("FR", "EU")),
        case(
            "geo: a deny-list blocks an unknown location by default",
            g,
            "atlas-co",
            None,
            "tiles",
        ),
        case(
            "geo: unknown_location allow lets an unknown location through a deny-list",
            g,
            "atlas-co",
            None,
            "lenient",
        ),
        case(
            "geo: unknown_location allow still blocks a denied country",
            g,
            "atlas-co",
            None,
            "lenient",
        )
        .from(at("KP", "AS")),
        case(
            "geo: a subdivision allow-list admits the subdivision",
            g,
            "atlas-co",
            None,
            "stream",
        )
        .from(at_sub("US", "NA", &["US-CA"])),
        case(
            "geo: a subdivision allow-list blocks another subdivision",
            g,
            "atlas-co",
            None,
            "stream",
        )
        .from(at_sub("US", "NA", &["US-NY"])),
        case(
            "geo: a country allow-list next to a subdivision list admits the country",
            g,
            "atlas-co",
            None,
            "stream",
        )
        .from(at_sub("DE", "EU", &["DE-BE"])),
        case(
            "geo: block_anonymous blocks a VPN",
            g,
            "atlas-co",
            None,
            "secure",
        )
        .from(anonymous(at("DE", "EU"), vpn())),
        case(
            "geo: block_anonymous blocks a Tor exit node",
            g,
            "atlas-co",
            None,
            "secure",
        )
        .from(anonymous(
            at("DE", "EU"),
            AnonymousNetwork {
                tor_exit_node: true,
                ..AnonymousNetwork::default()
            },
        )),
        case(
            "geo: block_anonymous blocks a hosting provider",
            g,
            "atlas-co",
            None,
            "secure",
        )
        .from(anonymous(
            at("US", "NA"),
            AnonymousNetwork {
                hosting_provider: true,
                ..AnonymousNetwork::default()
            },
        )),
        case(
            "geo: block_anonymous admits a caller known not to be anonymous",
            g,
            "atlas-co",
            None,
            "secure",
        )
        .from(anonymous(at("DE", "EU"), AnonymousNetwork::default())),
        case(
            "geo: block_anonymous admits a caller without anonymous-network data",
            g,
            "atlas-co",
            None,
            "secure",
        )
        .from(at("DE", "EU")),
        case(
            "geo: block_anonymous without location lists admits an unknown location",
            g,
            "atlas-co",
            None,
            "secure",
        ),
        case(
            "geo: block_anonymous applies to an anonymous caller of unknown location",
            g,
            "atlas-co",
            None,
            "secure",
        )
        .from(Some(Place {
            anonymous: Some(vpn()),
            ..Place::default()
        })),
        case(
            "geo: unknown_location deny without lists blocks an unknown location",
            g,
            "atlas-co",
            None,
            "strict",
        ),
        case(
            "geo: unknown_location deny without lists admits any known location",
            g,
            "atlas-co",
            None,
            "strict",
        )
        .from(at("BR", "SA")),
        case(
            "geo: outside the allow-list and on a VPN is GEO_BLOCKED (tested first)",
            g,
            "atlas-co",
            None,
            "sanctioned",
        )
        .from(anonymous(at("JP", "AS"), vpn())),
        case(
            "geo: a deny-listed country on an allowed continent is blocked",
            g,
            "atlas-co",
            None,
            "sanctioned",
        )
        .from(at("BY", "EU")),
        case(
            "geo: a deny-listed continent is blocked",
            g,
            "atlas-co",
            None,
            "sanctioned",
        )
        .from(Some(Place {
            continent: Some("AN"),
            ..Place::default()
        })),
        case(
            "geo: inside every list and not anonymous is ALLOW",
            g,
            "atlas-co",
            None,
            "sanctioned",
        )
        .from(at("CA", "NA")),
        case(
            "geo: an entitlement's subdivision deny-list blocks it",
            g,
            "eurocorp",
            None,
            "view",
        )
        .from(at_sub("DE", "EU", &["DE-BY"])),
        case(
            "geo: an entitlement's subdivision deny-list admits other subdivisions",
            g,
            "eurocorp",
            None,
            "view",
        )
        .from(at_sub("DE", "EU", &["DE-BE"])),
        case(
            "geo: an entitlement's rule with unknown_location allow admits an unknown location",
            g,
            "eurocorp",
            None,
            "view",
        ),
        case(
            "geo: a plan's country allow-list blocks other countries",
            g,
            "gallia",
            None,
            "view",
        )
        .from(at("BE", "EU")),
        case(
            "geo: a plan's country allow-list admits its country",
            g,
            "gallia",
            None,
            "view",
        )
        .from(at("FR", "EU")),
        // ---- Offline policy and staleness (offline) ----
        case(
            "offline: within the default grace is ALLOW with the staleness",
            o,
            "field",
            None,
            "sync",
        )
        .contact(Some(NOW - HOUR)),
        case(
            "offline: exactly the default grace is still ALLOW",
            o,
            "field",
            None,
            "sync",
        )
        .contact(Some(NOW - DAY)),
        case(
            "offline: one second past the default grace is STALE_DATA",
            o,
            "field",
            None,
            "sync",
        )
        .contact(Some(NOW - DAY - 1)),
        case(
            "offline: never heard from the origin is STALE_DATA under a deny policy",
            o,
            "field",
            None,
            "sync",
        )
        .contact(None),
        case(
            "offline: a feature's shorter grace applies",
            o,
            "field",
            None,
            "render",
        )
        .contact(Some(NOW - 2 * HOUR)),
        case(
            "offline: after_grace allow keeps allowing past the grace",
            o,
            "field",
            None,
            "viewer",
        )
        .contact(Some(NOW - 30 * DAY)),
        case(
            "offline: after_grace allow allows when never heard from the origin",
            o,
            "field",
            None,
            "viewer",
        )
        .contact(None),
        case(
            "offline: an entitlement's policy applies to its grant",
            o,
            "field",
            None,
            "notes",
        )
        .contact(Some(NOW - 120)),
        case(
            "offline: an entitlement's policy within its grace",
            o,
            "field",
            None,
            "notes",
        )
        .contact(Some(NOW - 30)),
        case(
            "offline: a plan's lenient policy replaces the default",
            o,
            "office",
            None,
            "sync",
        )
        .contact(Some(NOW - 2 * DAY)),
        case(
            "offline: the strictest of plan and feature policies applies",
            o,
            "office",
            None,
            "render",
        )
        .contact(Some(NOW - 2 * HOUR)),
        case(
            "offline: REVOKED is reported before STALE_DATA",
            o,
            "field",
            None,
            "legacy",
        )
        .contact(None),
        case(
            "offline: STALE_DATA is reported before ROLE_REQUIRED",
            o,
            "field",
            Some("fay"),
            "admin",
        )
        .contact(None),
        case(
            "offline: a contact later than now counts as no staleness",
            o,
            "field",
            None,
            "sync",
        )
        .contact(Some(NOW + 300)),
        // ---- Seats, roles and groups (seats) ----
        case(
            "seats: a subject with a named seat is ALLOW",
            st,
            "contoso",
            Some("alice"),
            "design",
        ),
        case(
            "seats: a subject without a named seat is SEAT_LIMIT, listing the holders",
            st,
            "contoso",
            Some("carol"),
            "design",
        ),
        case(
            "seats: a check without a subject cannot hold a named seat",
            st,
            "contoso",
            None,
            "design",
        ),
        case(
            "seats: floating seats with no leases held are ALLOW",
            st,
            "contoso",
            Some("dave"),
            "review",
        ),
        case(
            "seats: floating seats admit a check without a subject",
            st,
            "contoso",
            None,
            "review",
        ),
        case(
            "role: a subject with the required role is ALLOW",
            st,
            "contoso",
            Some("alice"),
            "console",
        ),
        case(
            "role: a subject without the required role is ROLE_REQUIRED",
            st,
            "contoso",
            Some("bob"),
            "console",
        ),
        case(
            "role: a check without a subject is ROLE_REQUIRED",
            st,
            "contoso",
            None,
            "console",
        ),
        case(
            "group: a subject in an allowed group is ALLOW",
            st,
            "contoso",
            Some("carol"),
            "share",
        ),
        case(
            "group: a subject in no allowed group is ROLE_REQUIRED",
            st,
            "contoso",
            Some("bob"),
            "share",
        ),
        case(
            "group: a subject in no group at all is ROLE_REQUIRED",
            st,
            "contoso",
            Some("plotter"),
            "share",
        ),
        case(
            "role: ROLE_REQUIRED is reported before SEAT_LIMIT",
            st,
            "contoso",
            Some("alice"),
            "audit",
        ),
        case(
            "role: with the role but no seat is SEAT_LIMIT",
            st,
            "contoso",
            Some("carol"),
            "audit",
        ),
    ]
}

/// The views a region node builds: every account of the data set, with its
/// subjects and entitlements in id order.
fn views(data: &Dataset) -> BTreeMap<AccountId, AccountView> {
    data.accounts
        .iter()
        .map(|account| {
            let (subjects, entitlements) = data.of_account(&account.id);
            let mut subjects: Vec<_> = subjects.cloned().collect();
            subjects.sort_by(|a, b| a.id.cmp(&b.id));
            let mut entitlements: Vec<_> = entitlements.cloned().collect();
            entitlements.sort_by(|a, b| a.id.cmp(&b.id));
            (
                account.id.clone(),
                AccountView::build(account.clone(), subjects, entitlements, &data.catalog),
            )
        })
        .collect()
}

/// The engine's decision for `case` over `dataset`, as a client replica
/// decides it: nothing consumed, no seat leases.
pub fn decide_case(case: &CheckCase, dataset: &NamedDataset) -> Decision {
    let views = views(&dataset.data);
    let check = Check {
        account: case.account.parse().expect("case account ids are valid"),
        subject: case
            .subject
            .map(|s| s.parse().expect("case subject ids are valid")),
        feature: case.feature.parse().expect("case feature ids are valid"),
        consume: 0,
    };
    let geo = case
        .location
        .as_ref()
        .map(Place::facts)
        .unwrap_or_else(GeoFacts::unknown);
    let env = Environment {
        catalog: &dataset.data.catalog,
        live: &NoLiveState,
        freshness: Freshness {
            applied_revision: dataset.revision,
            last_origin_contact: case.last_origin_contact.map(UnixSeconds),
        },
        now: UnixSeconds(case.now),
    };
    decide(&check, views.get(&check.account), &geo, &env)
}

/// A decision in the shape of PROTOCOL.md section 2's `expected`.
pub fn decision_json(d: &Decision) -> Value {
    let config: serde_json::Map<String, Value> = d
        .config
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), Value::from(v.as_str())))
        .collect();
    json!({
        "allowed": d.allowed(),
        "reason": d.reason.code(),
        "entitlement": d.entitlement.as_ref().map(|e| e.as_str()),
        "limit": d.limit,
        "remaining": d.remaining,
        "overage": d.overage,
        "valid_until": d.valid_until.map(|t| t.0),
        "trial": d.trial,
        "seats": d.seats.as_ref().map(|s| json!({
            "used": s.used,
            "total": s.total,
            "holders": s.holders.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
        })),
        "upgrade_hint": d.upgrade_hint.as_ref().map(|h| match &h.target {
            UpgradeTarget::Plan(p) => json!({"plan": p.as_str(), "limit": h.limit}),
            UpgradeTarget::Addon(a) => json!({"addon": a.as_str(), "limit": h.limit}),
        }),
        "config": config,
        "staleness_seconds": d.staleness_seconds,
    })
}

/// The `check` object of a case (the HTTP check body's fields).
pub fn check_json(case: &CheckCase) -> Value {
    let mut check = serde_json::Map::new();
    check.insert("account".into(), case.account.into());
    if let Some(subject) = case.subject {
        check.insert("subject".into(), subject.into());
    }
    check.insert("feature".into(), case.feature.into());
    Value::Object(check)
}
