"""The replica's data: the model objects a watch stream describes, and the
per-account views decisions read (a port of crates/tollgate-sdk/src/store.rs)."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from ._engine import (
    Account,
    AccountView,
    Addon,
    Catalog,
    Entitlement,
    Feature,
    ModelError,
    Plan,
    Subject,
    parse_offline_policy,
    DEFAULT_OFFLINE_POLICY,
)

__all__ = ["Store", "Dirty", "Views", "ModelError"]


class _AccountData:
    __slots__ = ("account", "subjects", "entitlements")

    def __init__(self) -> None:
        self.account: Optional[Account] = None
        self.subjects: dict[str, Subject] = {}
        self.entitlements: dict[str, Entitlement] = {}

    def is_empty(self) -> bool:
        return self.account is None and not self.subjects and not self.entitlements


class Dirty:
    __slots__ = ("accounts", "catalog")

    def __init__(self) -> None:
        self.accounts: set[str] = set()
        self.catalog = False


class Views:
    """What a check reads, at one revision. Never changed once published."""

    __slots__ = ("catalog", "accounts")

    def __init__(self, catalog: Catalog, accounts: dict[str, AccountView]) -> None:
        self.catalog = catalog
        self.accounts = accounts


#: Mutation kinds a replica applies; others (``put_credential``,
#: ``release_seat``, kinds newer than this SDK) are ignored.
KNOWN_KINDS = frozenset(
    {
        "put_product",
        "put_feature",
        "put_plan",
        "put_addon",
        "put_sku",
        "set_default_offline_policy",
        "put_account",
        "put_subject",
        "delete_subject",
        "put_entitlement",
        "revoke_license",
        "revoke_certificate",
    }
)


class Store:
    """Everything the replica holds; written only by the follower."""

    def __init__(self) -> None:
        self.catalog = Catalog()
        self.accounts: dict[str, _AccountData] = {}
        self.owners: dict[str, str] = {}
        self.revoked_licenses: dict[str, Mapping[str, Any]] = {}
        self.revoked_certificates: dict[str, Mapping[str, Any]] = {}
        self.objects = 0

    def _data(self, account: str) -> _AccountData:
        data = self.accounts.get(account)
        if data is None:
            data = self.accounts[account] = _AccountData()
        return data

    def _prune(self, account: str) -> None:
        data = self.accounts.get(account)
        if data is not None and data.is_empty():
            del self.accounts[account]

    def apply(self, mutation: Any, dirty: Dirty) -> None:
        """Applies one ``Mutation`` JSON value (externally tagged)."""
        if isinstance(mutation, str):
            return  # a unit variant of a newer SDK: nothing a replica knows
        if not isinstance(mutation, Mapping) or len(mutation) != 1:
            raise ModelError(f"a mutation is an object with one key, not {mutation!r:.80}")
        ((kind, value),) = mutation.items()
        if kind not in KNOWN_KINDS:
            return
        if kind == "put_account":
            a = Account(value)
            data = self._data(a.id)
            if data.account is None:
                self.objects += 1
            data.account = a
            dirty.accounts.add(a.id)
        elif kind == "put_subject":
            s = Subject(value)
            data = self._data(s.account)
            if s.id not in data.subjects:
                self.objects += 1
            data.subjects[s.id] = s
            dirty.accounts.add(s.account)
        elif kind == "delete_subject":
            account = value["account"]
            subject = value["subject"]
            data_or_none = self.accounts.get(account)
            if data_or_none is not None and data_or_none.subjects.pop(subject, None) is not None:
                self.objects -= 1
            self._prune(account)
            dirty.accounts.add(account)
        elif kind == "put_entitlement":
            e = Entitlement(value)
            old = self.owners.get(e.id)
            self.owners[e.id] = e.account
            if old is not None:
                if old != e.account:
                    old_data = self.accounts.get(old)
                    if old_data is not None:
                        old_data.entitlements.pop(e.id, None)
                    self._prune(old)
                    dirty.accounts.add(old)
                self.objects -= 1
            self._data(e.account).entitlements[e.id] = e
            self.objects += 1
            dirty.accounts.add(e.account)
        elif kind == "revoke_license":
            rid = value["id"]
            if rid not in self.revoked_licenses:
                self.revoked_licenses[rid] = value
            dirty.accounts.add(value["account"])
        elif kind == "revoke_certificate":
            serial = value["serial"]
            if serial not in self.revoked_certificates:
                self.revoked_certificates[serial] = value
            # Concerns no account and changes no view.
        else:
            dirty.catalog = True
            c = self.catalog
            if kind == "put_product":
                c.products[value["id"]] = value
            elif kind == "put_feature":
                f = Feature(value)
                c.features[f.id] = f
            elif kind == "put_plan":
                p = Plan(value)
                c.plans[p.id] = p
            elif kind == "put_addon":
                ad = Addon(value)
                c.addons[ad.id] = ad
            elif kind == "put_sku":
                c.skus[value["id"]] = value
            elif kind == "set_default_offline_policy":
                c.default_offline_policy = parse_offline_policy(value) or DEFAULT_OFFLINE_POLICY

    def _view(self, data: _AccountData, catalog: Catalog) -> Optional[AccountView]:
        if data.account is None:
            return None
        return AccountView(data.account, data.subjects.values(), data.entitlements.values(), catalog)

    def views(self) -> Views:
        catalog = self.catalog.copy()
        accounts: dict[str, AccountView] = {}
        for account_id, data in self.accounts.items():
            view = self._view(data, catalog)
            if view is not None:
                accounts[account_id] = view
        return Views(catalog, accounts)

    def update_views(self, previous: Views, dirty: Dirty) -> Views:
        if dirty.catalog:
            return self.views()
        accounts = dict(previous.accounts)
        for account_id in dirty.accounts:
            data = self.accounts.get(account_id)
            view = self._view(data, previous.catalog) if data is not None else None
            if view is None:
                accounts.pop(account_id, None)
            else:
                accounts[account_id] = view
        return Views(previous.catalog, accounts)
