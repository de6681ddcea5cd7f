//! The field names of stored model objects, for the storage layer's
//! compact form of JSON values (`tollgate_raft::store::value`): a stored
//! value names a field by its number in [`STORED_FIELD_NAMES`].

/// Field names (and enum tags) of the model's JSON objects, most frequent
/// first (an entitlement's fields): the first 127 are stored in one byte.
/// **Only ever append**: data on disk names fields by their position here.
/// A name missing from the list is stored spelled out, so a new field needs
/// no change here, only gains from one.
pub const STORED_FIELD_NAMES: &[&str] = &[
    "id",
    "account",
    "grant",
    "plan",
    "addon",
    "feature",
    "usage_cap",
    "config",
    "valid_from",
    "valid_until",
    "grace_period_seconds",
    "seats",
    "usage_cap_overrides",
    "status",
    "geo_rule",
    "allow_countries",
    "deny_countries",
    "allow_continents",
    "deny_continents",
    "allow_subdivisions",
    "deny_subdivisions",
    "block_anonymous",
    "offline_policy",
    "required_role",
    "allowed_groups",
    "source_order",
    "revision",
    "trial",
    "name",
    "kind",
    "roles",
    "groups",
    "product",
    "auto_approve",
    "limit",
    "enforcement",
    "additive",
    "tier",
    "features",
    "included_seats",
    "compatible_plans",
    "max_duration_seconds",
    "require_subject",
    "target",
    "quantity",
    "products",
    "plans",
    "addons",
    "skus",
    "default_offline_policy",
    "committed_at",
    "mutations",
    "secret_sha256",
    "accounts",
    "verbs",
    "created_at",
    "revoked_at",
    "catalog",
    "subjects",
    "entitlements",
    "revoked_licenses",
    "revoked_certificates",
    "count",
    "mode",
    "unknown_location",
    "vpn",
    "tor_exit_node",
    "public_proxy",
    "residential_proxy",
    "hosting_provider",
    "country",
    "continent",
    "subdivisions",
    "anonymous",
    "offline_grace_seconds",
    "after_grace",
    "slot",
    "database_type",
    "build_epoch",
    "applied_revision",
    "origin_head_revision",
    "last_origin_contact",
    "staleness_seconds",
    "geo",
    "node_id",
    "addr",
    "role",
    "reachable",
    "error",
    "facts",
    "subject",
    "acquired_at",
    "expires_at",
    "entitlement",
    "holders",
    "region",
    "leader_id",
    "term",
    "members",
    "seats_truncated",
    "serial",
    "not_after",
    "period",
    "index",
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
    "put_credential",
    "release_seat",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The names stored data already refers to, pinned: editing, removing
    /// or reordering one of them would change what stored values mean.
    #[test]
    fn the_stored_names_are_only_ever_appended_to() {
        const PINNED: usize = 118;
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for name in &STORED_FIELD_NAMES[..PINNED] {
            for b in name.bytes().chain([b'\n']) {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        assert_eq!(
            hash, 0xd8529679f3e80bf6,
            "a pinned stored field name changed"
        );
    }
}
