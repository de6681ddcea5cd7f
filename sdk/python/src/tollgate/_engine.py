"""A port of Tollgate's decision engine (crates/tollgate-engine) and the model
semantics it reads (crates/tollgate-model), for the local replica.

The model JSON (``tollgate_model::Mutation`` and the types it names) is read
into small slotted objects once, when it is applied; per-account views index
every entitlement's grants by feature (``AccountView``), so a check only looks
at the grants of the feature it is asked about. ``decide`` is a pure function
of the check, the view, the location, the catalog, freshness and ``now``, like
``tollgate_engine::decide``; every rule and tie-break follows the Rust code.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Iterable, Mapping, Optional

from .model import Decision, GeoFacts, Seats, UpgradeHint, format_unix

U64_MAX = (1 << 64) - 1
I64_MAX = (1 << 63) - 1
SEAT_HOLDERS_LISTED_MAX = 16

# Reason -> permissiveness (higher is more permissive), as reason.rs.
PERMISSIVENESS = {
    "UNKNOWN_ACCOUNT": 0,
    "UNKNOWN_SUBJECT": 0,
    "NOT_ENTITLED": 0,
    "REVOKED": 1,
    "SUSPENDED": 2,
    "NOT_YET_VALID": 3,
    "EXPIRED": 4,
    "STALE_DATA": 5,
    "ROLE_REQUIRED": 6,
    "GEO_BLOCKED": 7,
    "ANONYMOUS_NETWORK_BLOCKED": 8,
    "SEAT_LIMIT": 9,
    "USAGE_CAP_REACHED": 10,
    "IN_GRACE": 11,
    "ALLOW": 12,
}

Json = Mapping[str, Any]


class ModelError(ValueError):
    """A model object that cannot be read."""


def _u64(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > U64_MAX:
        raise ModelError(f"{field}: expected an unsigned integer, got {value!r}")
    return value


def _i64(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (-(1 << 63) <= value <= I64_MAX):
        raise ModelError(f"{field}: expected an integer, got {value!r}")
    return value


def _str(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ModelError(f"{field}: expected a string, got {value!r}")
    return value


def _strs(value: Any, field: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ModelError(f"{field}: expected a list of strings")
    return frozenset(value)


def _saturating_add_i64(a: int, b: int) -> int:
    return min(a + b, I64_MAX)


# ---------------------------------------------------------------- geo rules


class GeoRule:
    """``tollgate_model::GeoRule`` with what the engine asks of it precomputed."""

    __slots__ = (
        "allow_countries",
        "deny_countries",
        "allow_continents",
        "deny_continents",
        "allow_subdivisions",
        "deny_subdivisions",
        "block_anonymous",
        "unknown_location",
        "has_allow_lists",
        "unknown_denied",
        "unrestricted",
    )

    def __init__(self, value: Optional[Json]) -> None:
        value = value or {}
        if not isinstance(value, Mapping):
            raise ModelError("geo_rule: expected an object")
        self.allow_countries = _strs(value.get("allow_countries"), "geo_rule.allow_countries")
        self.deny_countries = _strs(value.get("deny_countries"), "geo_rule.deny_countries")
        self.allow_continents = _strs(value.get("allow_continents"), "geo_rule.allow_continents")
        self.deny_continents = _strs(value.get("deny_continents"), "geo_rule.deny_continents")
        self.allow_subdivisions = _strs(value.get("allow_subdivisions"), "geo_rule.allow_subdivisions")
        self.deny_subdivisions = _strs(value.get("deny_subdivisions"), "geo_rule.deny_subdivisions")
        self.block_anonymous = bool(value.get("block_anonymous", False))
        unknown = value.get("unknown_location")
        legacy = value.get("deny_unknown_location")
        if unknown is not None and legacy is not None:
            raise ModelError("geo_rule.unknown_location: set together with the older deny_unknown_location")
        if unknown is None and legacy is True:
            unknown = "deny"
        if unknown not in (None, "deny", "allow"):
            raise ModelError(f"geo_rule.unknown_location: {unknown!r}")
        self.unknown_location: Optional[str] = unknown
        self.has_allow_lists = bool(self.allow_countries or self.allow_continents or self.allow_subdivisions)
        has_deny = bool(self.deny_countries or self.deny_continents or self.deny_subdivisions)
        has_lists = self.has_allow_lists or has_deny
        if unknown is not None:
            self.unknown_denied = unknown == "deny"
        else:
            self.unknown_denied = has_lists
        self.unrestricted = not has_lists and not self.block_anonymous and unknown != "deny"


# geo verdicts
PASS, BLOCKED, ANONYMOUS = 0, 1, 2


def geo_verdict(rule: GeoRule, facts: GeoFacts) -> int:
    """``tollgate_engine::geo::geo_verdict``."""
    country = facts.country
    continent = facts.continent
    subdivisions = facts.subdivisions
    if country is None and continent is None and not subdivisions:
        if rule.unknown_denied:
            return BLOCKED
    else:
        if (
            (country is not None and country in rule.deny_countries)
            or (continent is not None and continent in rule.deny_continents)
            or any(s in rule.deny_subdivisions for s in subdivisions)
        ):
            return BLOCKED
        if rule.has_allow_lists:
            if not (
                (country is not None and country in rule.allow_countries)
                or (continent is not None and continent in rule.allow_continents)
                or any(s in rule.allow_subdivisions for s in subdivisions)
            ):
                return BLOCKED
    if rule.block_anonymous and facts.anonymous is not None and facts.anonymous.is_anonymous:
        return ANONYMOUS
    return PASS


# ------------------------------------------------------------------ catalog

# An offline policy: (offline_grace_seconds, deny_after_grace).
OfflinePolicy = tuple[int, bool]
DEFAULT_OFFLINE_POLICY: OfflinePolicy = (3 * 86_400, True)


def parse_offline_policy(value: Any, field: str = "offline_policy") -> Optional[OfflinePolicy]:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ModelError(f"{field}: expected an object")
    grace = _u64(value.get("offline_grace_seconds"), f"{field}.offline_grace_seconds")
    after = value.get("after_grace")
    if after not in ("allow", "deny"):
        raise ModelError(f"{field}.after_grace: {after!r}")
    return (grace, after == "deny")


def strictest(a: OfflinePolicy, b: OfflinePolicy) -> OfflinePolicy:
    return (min(a[0], b[0]), a[1] or b[1])


class UsageCap:
    __slots__ = ("limit", "soft", "additive")

    def __init__(self, value: Json, field: str = "usage_cap") -> None:
        if not isinstance(value, Mapping):
            raise ModelError(f"{field}: expected an object")
        self.limit = _u64(value.get("limit"), f"{field}.limit")
        enforcement = value.get("enforcement", "hard")
        if enforcement not in ("hard", "soft"):
            raise ModelError(f"{field}.enforcement: {enforcement!r}")
        self.soft = enforcement == "soft"
        self.additive = bool(value.get("additive", False))


def parse_cap(value: Any, field: str = "usage_cap") -> Optional[UsageCap]:
    return None if value is None else UsageCap(value, field)


def _config(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ModelError(f"{field}: expected an object of strings")
    return dict(value)


class FeatureGrant:
    __slots__ = ("feature", "usage_cap", "config")

    def __init__(self, value: Json) -> None:
        if not isinstance(value, Mapping):
            raise ModelError("feature grant: expected an object")
        self.feature = _str(value.get("feature"), "feature_grant.feature")
        self.usage_cap = parse_cap(value.get("usage_cap"))
        self.config = _config(value.get("config"), "feature_grant.config")


class Feature:
    __slots__ = ("id", "period", "geo_rule", "offline_policy", "config")

    def __init__(self, value: Json) -> None:
        self.id = _str(value.get("id"), "feature.id")
        kind = value.get("kind")
        period: Optional[str] = None
        if isinstance(kind, Mapping) and "metered" in kind:
            metered = kind["metered"]
            period = _str(metered.get("period"), "feature.kind.metered.period")
        elif kind != "boolean" and not (isinstance(kind, Mapping) and "boolean" in kind):
            raise ModelError(f"feature.kind: {kind!r}")
        self.period = period
        self.geo_rule = GeoRule(value.get("geo_rule"))
        self.offline_policy = parse_offline_policy(value.get("offline_policy"), "feature.offline_policy")
        self.config = _config(value.get("config"), "feature.config")


class Plan:
    __slots__ = ("id", "tier", "features", "geo_rule", "offline_policy")

    def __init__(self, value: Json) -> None:
        self.id = _str(value.get("id"), "plan.id")
        self.tier = _u64(value.get("tier"), "plan.tier")
        self.features = [FeatureGrant(g) for g in (value.get("features") or [])]
        self.geo_rule = GeoRule(value.get("geo_rule"))
        self.offline_policy = parse_offline_policy(value.get("offline_policy"), "plan.offline_policy")


class Addon:
    __slots__ = ("id", "features", "compatible_plans", "geo_rule", "offline_policy")

    def __init__(self, value: Json) -> None:
        self.id = _str(value.get("id"), "addon.id")
        self.features = [FeatureGrant(g) for g in (value.get("features") or [])]
        self.compatible_plans = _strs(value.get("compatible_plans"), "addon.compatible_plans")
        self.geo_rule = GeoRule(value.get("geo_rule"))
        self.offline_policy = parse_offline_policy(value.get("offline_policy"), "addon.offline_policy")


class Catalog:
    """The catalog as the engine reads it (products and SKUs are kept raw)."""

    __slots__ = ("products", "features", "plans", "addons", "skus", "default_offline_policy")

    def __init__(self) -> None:
        self.products: dict[str, Json] = {}
        self.features: dict[str, Feature] = {}
        self.plans: dict[str, Plan] = {}
        self.addons: dict[str, Addon] = {}
        self.skus: dict[str, Json] = {}
        self.default_offline_policy: OfflinePolicy = DEFAULT_OFFLINE_POLICY

    def copy(self) -> "Catalog":
        c = Catalog()
        c.products = dict(self.products)
        c.features = dict(self.features)
        c.plans = dict(self.plans)
        c.addons = dict(self.addons)
        c.skus = dict(self.skus)
        c.default_offline_policy = self.default_offline_policy
        return c


# ----------------------------------------------------- accounts and entitlements


class Account:
    __slots__ = ("id", "suspended")

    def __init__(self, value: Json) -> None:
        self.id = _str(value.get("id"), "account.id")
        status = value.get("status", "active")
        if status not in ("active", "suspended"):
            raise ModelError(f"account.status: {status!r}")
        self.suspended = status == "suspended"


class Subject:
    __slots__ = ("id", "account", "roles", "groups")

    def __init__(self, value: Json) -> None:
        self.id = _str(value.get("id"), "subject.id")
        self.account = _str(value.get("account"), "subject.account")
        self.roles = _strs(value.get("roles"), "subject.roles")
        self.groups = _strs(value.get("groups"), "subject.groups")


class Entitlement:
    __slots__ = (
        "id",
        "account",
        "grant_kind",
        "grant_id",
        "grant_feature",
        "valid_from",
        "valid_until",
        "grace_period_seconds",
        "usable_until",
        "seats_count",
        "seats_floating",
        "seats_assigned",
        "usage_cap_overrides",
        "status",
        "geo_rule",
        "offline_policy",
        "required_role",
        "allowed_groups",
        "trial",
    )

    def __init__(self, value: Json) -> None:
        self.id = _str(value.get("id"), "entitlement.id")
        self.account = _str(value.get("account"), "entitlement.account")
        grant = value.get("grant")
        if not isinstance(grant, Mapping) or len(grant) != 1:
            raise ModelError(f"entitlement.grant: {grant!r}")
        ((kind, target),) = grant.items()
        self.grant_feature: Optional[FeatureGrant] = None
        if kind == "plan" or kind == "addon":
            self.grant_kind = kind
            self.grant_id = _str(target, f"entitlement.grant.{kind}")
        elif kind == "feature":
            self.grant_kind = kind
            self.grant_feature = FeatureGrant(target)
            self.grant_id = self.grant_feature.feature
        else:
            raise ModelError(f"entitlement.grant: unknown kind {kind!r}")
        self.valid_from = _i64(value.get("valid_from"), "entitlement.valid_from")
        until = value.get("valid_until")
        self.valid_until: Optional[int] = None if until is None else _i64(until, "entitlement.valid_until")
        self.grace_period_seconds = _u64(value.get("grace_period_seconds", 0), "entitlement.grace_period_seconds")
        self.usable_until: Optional[int] = (
            None if self.valid_until is None else _saturating_add_i64(self.valid_until, self.grace_period_seconds)
        )
        seats = value.get("seats")
        self.seats_count: Optional[int] = None
        self.seats_floating = False
        self.seats_assigned: tuple[str, ...] = ()
        if seats is not None:
            self.seats_count = _u64(seats.get("count"), "entitlement.seats.count")
            mode = seats.get("mode")
            if mode == "named":
                pass
            elif isinstance(mode, Mapping) and "named" in mode:
                named = mode["named"] or {}
                self.seats_assigned = tuple(sorted(_strs(named.get("assigned"), "seats.mode.named.assigned")))
            elif isinstance(mode, Mapping) and "floating" in mode:
                self.seats_floating = True
            else:
                raise ModelError(f"entitlement.seats.mode: {mode!r}")
        overrides = value.get("usage_cap_overrides") or {}
        self.usage_cap_overrides = {
            _str(f, "usage_cap_overrides"): UsageCap(c, "usage_cap_overrides") for f, c in overrides.items()
        }
        status = value.get("status", "active")
        if status not in ("active", "suspended", "revoked"):
            raise ModelError(f"entitlement.status: {status!r}")
        self.status = status
        self.geo_rule = GeoRule(value.get("geo_rule"))
        self.offline_policy = parse_offline_policy(value.get("offline_policy"), "entitlement.offline_policy")
        role = value.get("required_role")
        self.required_role: Optional[str] = None if role is None else _str(role, "entitlement.required_role")
        self.allowed_groups = _strs(value.get("allowed_groups"), "entitlement.allowed_groups")
        self.trial = bool(value.get("trial", False))


# ------------------------------------------------------------------- views


class ResolvedGrant:
    """One feature as one entitlement grants it, resolved against the catalog."""

    __slots__ = ("ent", "usage_cap", "period", "config", "geo_rules", "offline_grace", "offline_deny")

    def __init__(
        self,
        ent: Entitlement,
        usage_cap: Optional[UsageCap],
        period: Optional[str],
        config: dict[str, str],
        geo_rules: tuple[GeoRule, ...],
        offline: OfflinePolicy,
    ) -> None:
        self.ent = ent
        self.usage_cap = usage_cap
        self.period = period
        # Read-only: decisions hand it out as is.
        self.config: Mapping[str, str] = MappingProxyType(config)
        self.geo_rules = geo_rules
        self.offline_grace = offline[0]
        self.offline_deny = offline[1]


class AccountView:
    """``tollgate_engine::AccountView``: an account's grants indexed by feature."""

    __slots__ = ("account", "suspended", "subjects", "entitlements", "by_feature", "plans_held", "dangling")

    def __init__(
        self,
        account: Account,
        subjects: Iterable[Subject],
        entitlements: Iterable[Entitlement],
        catalog: Catalog,
    ) -> None:
        self.account = account.id
        self.suspended = account.suspended
        self.subjects = {s.id: s for s in subjects if s.account == account.id}
        # Entitlement id order, as the Rust store's BTreeMap gives them.
        self.entitlements = sorted((e for e in entitlements if e.account == account.id), key=lambda e: e.id)
        self.by_feature: dict[str, list[ResolvedGrant]] = {}
        self.dangling: list[str] = []
        self.plans_held = [e.grant_id for e in self.entitlements if e.grant_kind == "plan"]
        for ent in self.entitlements:
            bundle_geo: Optional[GeoRule]
            grants: list[FeatureGrant]
            if ent.grant_kind == "plan":
                plan = catalog.plans.get(ent.grant_id)
                if plan is None:
                    self.dangling.append(ent.id)
                    continue
                grants, bundle_geo, bundle_offline = plan.features, plan.geo_rule, plan.offline_policy
            elif ent.grant_kind == "addon":
                addon = catalog.addons.get(ent.grant_id)
                if addon is None:
                    self.dangling.append(ent.id)
                    continue
                grants, bundle_geo, bundle_offline = addon.features, addon.geo_rule, addon.offline_policy
            else:
                assert ent.grant_feature is not None
                grants, bundle_geo, bundle_offline = [ent.grant_feature], None, None
            for grant in grants:
                feature = catalog.features.get(grant.feature)
                config = dict(feature.config) if feature is not None else {}
                config.update(grant.config)
                rules = [ent.geo_rule]
                if bundle_geo is not None:
                    rules.append(bundle_geo)
                if feature is not None:
                    rules.append(feature.geo_rule)
                geo_rules = tuple(r for r in rules if not r.unrestricted)
                policies = [
                    p
                    for p in (
                        ent.offline_policy,
                        bundle_offline,
                        feature.offline_policy if feature is not None else None,
                    )
                    if p is not None
                ]
                offline = catalog.default_offline_policy
                if policies:
                    offline = policies[0]
                    for p in policies[1:]:
                        offline = strictest(offline, p)
                cap = ent.usage_cap_overrides.get(grant.feature)
                if cap is None:
                    cap = grant.usage_cap
                self.by_feature.setdefault(grant.feature, []).append(
                    ResolvedGrant(
                        ent,
                        cap,
                        feature.period if feature is not None else None,
                        config,
                        geo_rules,
                        offline,
                    )
                )


# ----------------------------------------------------------------- decide


def _explain(d: dict[str, Any]) -> str:
    """``Decision::explain``: one line for a human; not stable."""
    reason = d["reason"]
    ent = f" by entitlement {d['entitlement']}" if d.get("entitlement") else ""
    until = format_unix(d["valid_until"]) if d.get("valid_until") is not None else ""
    seats: Optional[Seats] = d.get("seats")
    if reason == "ALLOW":
        text = f"Allowed{ent} (a trial)." if d.get("trial") else f"Allowed{ent}."
    elif reason == "IN_GRACE":
        text = f"Allowed{ent} in its grace period (expired {until})."
    elif reason == "NOT_ENTITLED":
        text = "No entitlement of the account grants the feature."
    elif reason == "UNKNOWN_ACCOUNT":
        text = "The account is not known here."
    elif reason == "UNKNOWN_SUBJECT":
        text = "The subject is not known in this account."
    elif reason == "NOT_YET_VALID":
        text = f"Denied{ent}: not valid yet."
    elif reason == "EXPIRED":
        text = f"Denied{ent}: expired {until} and past its grace period."
    elif reason == "SUSPENDED":
        text = f"Denied{ent}: suspended."
    elif reason == "REVOKED":
        text = f"Denied{ent}: revoked."
    elif reason == "ROLE_REQUIRED":
        text = f"Denied{ent}: the subject lacks the required role or group."
    elif reason == "GEO_BLOCKED":
        text = f"Denied{ent}: the caller's location is outside the geo rules."
    elif reason == "ANONYMOUS_NETWORK_BLOCKED":
        text = f"Denied{ent}: the caller is on an anonymous network."
    elif reason == "SEAT_LIMIT":
        if seats is not None:
            text = f"Denied{ent}: no seat for this subject ({seats.used} of {seats.total} in use)."
        else:
            text = f"Denied{ent}: no seat for this subject."
    elif reason == "USAGE_CAP_REACHED":
        text = f"Denied{ent}: the usage cap of {d.get('limit') or 0} is reached."
    else:
        stale = d.get("staleness_seconds")
        text = (
            f"Denied{ent}: no word from the origin for {'ever' if stale is None else stale} s, "
            "longer than the offline grace."
        )
    if d.get("overage"):
        text += " Over the soft cap: billed as overage."
    hint: Optional[UpgradeHint] = d.get("upgrade_hint")
    if hint is not None:
        what = f"plan {hint.plan}" if hint.plan is not None else f"add-on {hint.addon}"
        if hint.limit is not None:
            text += f" Upgrade: {what} raises the cap to {hint.limit}."
        elif reason == "USAGE_CAP_REACHED":
            text += f" Upgrade: {what} removes the cap."
        else:
            text += f" Upgrade: {what} grants it."
    return text


def _judge(
    grant: ResolvedGrant,
    subject: Optional[Subject],
    geo: GeoFacts,
    now: int,
    staleness: int,
) -> Optional[str]:
    """``judge``: ``None`` or ``"IN_GRACE"`` when the grant allows, else the first failing reason."""
    ent = grant.ent
    status = ent.status
    if status != "active":
        return "REVOKED" if status == "revoked" else "SUSPENDED"
    if now < ent.valid_from:
        return "NOT_YET_VALID"
    in_grace = False
    until = ent.valid_until
    if until is not None and now > until:
        end = ent.usable_until
        if end is not None and now > end:
            return "EXPIRED"
        in_grace = True
    if grant.offline_deny and staleness > grant.offline_grace:
        return "STALE_DATA"
    role = ent.required_role
    if role is not None and (subject is None or role not in subject.roles):
        return "ROLE_REQUIRED"
    groups = ent.allowed_groups
    if groups and (subject is None or groups.isdisjoint(subject.groups)):
        return "ROLE_REQUIRED"
    if grant.geo_rules:
        anonymous = False
        for rule in grant.geo_rules:
            verdict = geo_verdict(rule, geo)
            if verdict == BLOCKED:
                return "GEO_BLOCKED"
            if verdict == ANONYMOUS:
                anonymous = True
        if anonymous:
            return "ANONYMOUS_NETWORK_BLOCKED"
    if ent.seats_count is not None:
        if ent.seats_floating:
            # No leases are known locally: a seat is free while count > 0.
            has_seat = 0 < ent.seats_count
        else:
            has_seat = subject is not None and subject.id in ent.seats_assigned
        if not has_seat:
            return "SEAT_LIMIT"
    return "IN_GRACE" if in_grace else None


def _upgrade_hint(
    catalog: Catalog, view: AccountView, feature: str, current_limit: Optional[int]
) -> Optional[UpgradeHint]:
    held = view.plans_held

    def helps(cap: Optional[UsageCap]) -> tuple[bool, Optional[int]]:
        if current_limit is None:
            return True, (None if cap is None else cap.limit)
        if cap is None:
            return True, None
        if cap.additive:
            return True, min(current_limit + cap.limit, U64_MAX)
        if cap.limit > current_limit:
            return True, cap.limit
        return False, None

    best_addon: Optional[tuple[int, Optional[int], str]] = None
    for addon_id in sorted(catalog.addons):
        addon = catalog.addons[addon_id]
        if addon.compatible_plans and not any(p in addon.compatible_plans for p in held):
            continue
        grant = next((g for g in addon.features if g.feature == feature), None)
        if grant is None:
            continue
        ok, limit = helps(grant.usage_cap)
        if not ok:
            continue
        order = U64_MAX if limit is None else limit
        if best_addon is None or order < best_addon[0]:
            best_addon = (order, limit, addon_id)
    if best_addon is not None:
        return UpgradeHint(addon=best_addon[2], limit=best_addon[1])

    tiers = [catalog.plans[p].tier for p in held if p in catalog.plans]
    current_tier = max(tiers) if tiers else None
    best_plan: Optional[tuple[tuple[int, int], Optional[int], str]] = None
    for plan_id in sorted(catalog.plans):
        plan = catalog.plans[plan_id]
        if current_tier is not None and plan.tier <= current_tier:
            continue
        grant = next((g for g in plan.features if g.feature == feature), None)
        if grant is None:
            continue
        ok, limit = helps(grant.usage_cap)
        if not ok:
            continue
        key = (plan.tier, U64_MAX if limit is None else limit)
        if best_plan is None or key < best_plan[0]:
            best_plan = (key, limit, plan_id)
    if best_plan is not None:
        return UpgradeHint(plan=best_plan[2], limit=best_plan[1])
    return None


def _seats_of(ent: Entitlement) -> Optional[Seats]:
    if ent.seats_count is None:
        return None
    # Floating: no live leases are known to a replica.
    used = 0 if ent.seats_floating else len(ent.seats_assigned)
    return Seats(used=used, total=ent.seats_count)


def decide(
    account: str,
    subject_id: Optional[str],
    feature: str,
    view: Optional[AccountView],
    geo: GeoFacts,
    catalog: Catalog,
    *,
    now: int,
    revision: int,
    staleness_seconds: Optional[int],
    consume: int = 0,
    explain: bool = False,
    answered_by: Optional[str] = None,
    staleness: Any = None,
) -> Decision:
    """``tollgate_engine::decide`` with no live state (no usage, no leases).

    Returns a :class:`Decision` whose ``approximate`` flag says whether a
    region (which holds usage counters and seat leases) could answer
    otherwise.
    """
    if view is None:
        return _finish("UNKNOWN_ACCOUNT", None, revision, staleness_seconds, explain, answered_by, staleness)
    if view.suspended:
        return _finish("SUSPENDED", None, revision, staleness_seconds, explain, answered_by, staleness)
    subject: Optional[Subject] = None
    if subject_id is not None:
        subject = view.subjects.get(subject_id)
        if subject is None:
            return _finish("UNKNOWN_SUBJECT", None, revision, staleness_seconds, explain, answered_by, staleness)
    grants = view.by_feature.get(feature)
    if not grants:
        fields: dict[str, Any] = {"upgrade_hint": _upgrade_hint(catalog, view, feature, None)}
        return _finish("NOT_ENTITLED", fields, revision, staleness_seconds, explain, answered_by, staleness)

    stale = U64_MAX if staleness_seconds is None else staleness_seconds
    denial: Optional[str] = None
    denial_rank = -1
    denial_grant: Optional[ResolvedGrant] = None
    winner: Optional[ResolvedGrant] = None
    winner_key: tuple[bool, int] = (False, 0)
    unlimited = False
    base_cap: Optional[ResolvedGrant] = None
    base_limit = 0
    additive_sum = 0
    soft = False
    for grant in grants:
        verdict = _judge(grant, subject, geo, now, stale)
        if verdict is None or verdict == "IN_GRACE":
            usable = grant.ent.usable_until
            key = (verdict is None, I64_MAX if usable is None else usable)
            if winner is None or key > winner_key:
                winner = grant
                winner_key = key
            cap = grant.usage_cap
            if cap is None:
                unlimited = True
            else:
                if cap.soft:
                    soft = True
                if cap.additive:
                    additive_sum = min(additive_sum + cap.limit, U64_MAX)
                elif base_cap is None or base_limit < cap.limit:
                    base_cap = grant
                    base_limit = cap.limit
        else:
            rank = PERMISSIVENESS[verdict]
            if rank > denial_rank:
                denial, denial_rank, denial_grant = verdict, rank, grant

    if winner is None:
        assert denial is not None and denial_grant is not None
        fields = _from_grant(denial, denial_grant)
        if denial == "SEAT_LIMIT" and fields["seats"] is not None:
            ent = denial_grant.ent
            holders = () if ent.seats_floating else ent.seats_assigned[:SEAT_HOLDERS_LISTED_MAX]
            s = fields["seats"]
            fields["seats"] = Seats(used=s.used, total=s.total, holders=holders)
        approximate = denial_grant.ent.seats_floating and fields["seats"] is not None
        return _finish(denial, fields, revision, staleness_seconds, explain, answered_by, staleness, approximate)

    reason = "ALLOW" if winner_key[0] else "IN_GRACE"
    fields = _from_grant(reason, winner)
    approximate = winner.ent.seats_floating and fields["seats"] is not None
    if winner.period is None or unlimited:
        return _finish(reason, fields, revision, staleness_seconds, explain, answered_by, staleness, approximate)
    # A capped metered feature: the counter lives in the region.
    limit = min((base_limit if base_cap is not None else 0) + additive_sum, U64_MAX)
    consumed = 0
    after = consumed + consume
    fields["limit"] = limit
    if after <= limit:
        fields["remaining"] = limit - after
    elif soft:
        fields["remaining"] = 0
        fields["overage"] = True
    else:
        decider = base_cap if base_cap is not None else winner
        fields = _from_grant("USAGE_CAP_REACHED", decider)
        fields["limit"] = limit
        fields["remaining"] = max(limit - consumed, 0)
        fields["upgrade_hint"] = _upgrade_hint(catalog, view, feature, limit)
        return _finish("USAGE_CAP_REACHED", fields, revision, staleness_seconds, explain, answered_by, staleness, True)
    return _finish(reason, fields, revision, staleness_seconds, explain, answered_by, staleness, True)


def _from_grant(reason: str, grant: ResolvedGrant) -> dict[str, Any]:
    ent = grant.ent
    return {
        "entitlement": ent.id,
        "valid_until": ent.valid_until,
        "trial": ent.trial,
        "config": grant.config if reason == "ALLOW" or reason == "IN_GRACE" else _EMPTY,
        "seats": _seats_of(ent),
    }


_EMPTY: Mapping[str, str] = MappingProxyType({})


def _finish(
    reason: str,
    fields: Optional[dict[str, Any]],
    revision: int,
    staleness_seconds: Optional[int],
    explain: bool,
    answered_by: Optional[str],
    staleness: Any,
    approximate: bool = False,
) -> Decision:
    if fields is None:
        fields = {}
    explanation = ""
    if explain:
        explanation = _explain(dict(fields, reason=reason, staleness_seconds=staleness_seconds))
    return Decision(
        reason == "ALLOW" or reason == "IN_GRACE",
        reason,
        explanation,
        fields.get("entitlement"),
        fields.get("limit"),
        fields.get("remaining"),
        fields.get("overage", False),
        fields.get("valid_until"),
        fields.get("trial", False),
        fields.get("seats"),
        fields.get("upgrade_hint"),
        fields.get("config", _EMPTY),
        revision,
        staleness_seconds,
        answered_by,
        None,
        approximate,
        staleness,
    )
