//! OpenAPI schemas for the validated newtypes, written out so the document
//! states the same limits the code enforces (length, pattern, values).

use crate::geo::{Continent, CountryCode, SubdivisionCode};
use crate::id::*;
use crate::time::UnixSeconds;
use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{KnownFormat, RefOr, Schema};

fn string(description: &str, pattern: &str, max_length: usize) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .description(Some(description))
        .pattern(Some(pattern))
        .min_length(Some(1))
        .max_length(Some(max_length))
        .into()
}

macro_rules! id_schema {
    ($($ty:ident),*) => {$(
        impl utoipa::PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                string(
                    concat!("A ", stringify!($ty), ": 1..=128 bytes of [A-Za-z0-9._:@-], starting with a letter or digit."),
                    "^[A-Za-z0-9][A-Za-z0-9._:@-]*$",
                    ID_LEN_MAX,
                )
            }
        }
        impl utoipa::ToSchema for $ty {}
    )*};
}

id_schema!(
    AccountId,
    SubjectId,
    ProductId,
    FeatureId,
    PlanId,
    AddonId,
    SkuId,
    EntitlementId,
    OrderId,
    RoleName,
    GroupName,
    ConfigKey
);

impl utoipa::PartialSchema for CountryCode {
    fn schema() -> RefOr<Schema> {
        string("ISO 3166-1 alpha-2 country code.", "^[A-Z]{2}$", 2)
    }
}
impl utoipa::ToSchema for CountryCode {}

impl utoipa::PartialSchema for SubdivisionCode {
    fn schema() -> RefOr<Schema> {
        string(
            "ISO 3166-2 subdivision code, e.g. US-CA.",
            "^[A-Z]{2}-[A-Z0-9]{1,3}$",
            6,
        )
    }
}
impl utoipa::ToSchema for SubdivisionCode {}

impl utoipa::PartialSchema for Continent {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some("Continent code, as MaxMind uses them."))
            .enum_values(Some(Continent::ALL.map(|c| c.code())))
            .into()
    }
}
impl utoipa::ToSchema for Continent {}

impl utoipa::PartialSchema for UnixSeconds {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Integer))
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .description(Some("An instant, in seconds since 1970-01-01T00:00:00Z."))
            .into()
    }
}
impl utoipa::ToSchema for UnixSeconds {}
