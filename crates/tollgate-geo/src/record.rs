//! The slices of MaxMind's record layouts that Tollgate reads: City and
//! Country records (`country.iso_code`, `continent.code`,
//! `subdivisions[].iso_code`) and Anonymous IP records (`is_anonymous_vpn`,
//! ...). Field names are MaxMind's; everything else in a record is skipped.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer};
use tollgate_model::{
    AnonymousNetwork, Continent, CountryCode, GeoFacts, ModelError, SubdivisionCode,
};

use crate::GeoError;

/// Most subdivisions one record may list. MaxMind lists at most two
/// (e.g. `GB-ENG`, `GB-WBK`); more is a corrupt or hostile record.
pub const SUBDIVISIONS_LEN_MAX: usize = 8;

/// Country, continent and subdivisions of one address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub country: Option<CountryCode>,
    pub continent: Option<Continent>,
    /// Most general first, each `COUNTRY-CODE`.
    pub subdivisions: Vec<SubdivisionCode>,
}

impl Location {
    pub(crate) fn apply_to(self, facts: &mut GeoFacts) {
        facts.country = self.country;
        facts.continent = self.continent;
        facts.subdivisions = self.subdivisions;
    }
}

/// The slice of MaxMind's City/Country record layout that geo rules use.
#[derive(Deserialize)]
pub(crate) struct LocationRecord<'a> {
    #[serde(borrow, default)]
    country: Option<IsoCodeRecord<'a>>,
    #[serde(borrow, default)]
    continent: Option<ContinentRecord<'a>>,
    #[serde(borrow, default, deserialize_with = "bounded_subdivisions")]
    subdivisions: Vec<IsoCodeRecord<'a>>,
}

#[derive(Deserialize)]
struct IsoCodeRecord<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct ContinentRecord<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

fn bounded_subdivisions<'de, D>(deserializer: D) -> Result<Vec<IsoCodeRecord<'de>>, D::Error>
where
    D: Deserializer<'de>,
{
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<IsoCodeRecord<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an array of at most {SUBDIVISIONS_LEN_MAX} subdivisions")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<IsoCodeRecord<'de>>()? {
                if out.len() == SUBDIVISIONS_LEN_MAX {
                    return Err(serde::de::Error::custom(format!(
                        "more than {SUBDIVISIONS_LEN_MAX} subdivisions"
                    )));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(Bounded)
}

/// Which of the fields geo rules read one record holds (whatever their
/// values), for the probe at load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FieldsPresent {
    pub country: bool,
    pub continent: bool,
    pub subdivisions: bool,
}

impl LocationRecord<'_> {
    pub(crate) fn fields_present(&self) -> FieldsPresent {
        FieldsPresent {
            country: self.country.as_ref().is_some_and(|c| c.iso_code.is_some()),
            continent: self.continent.as_ref().is_some_and(|c| c.code.is_some()),
            subdivisions: self.subdivisions.iter().any(|s| s.iso_code.is_some()),
        }
    }

    pub(crate) fn into_location(self, ip: IpAddr) -> Result<Location, GeoError> {
        let bad = |field, source| GeoError::BadRecord { ip, field, source };
        let country = match self.country.and_then(|c| c.iso_code) {
            Some(code) => Some(CountryCode::new(code).map_err(|e| bad("country.iso_code", e))?),
            None => None,
        };
        let continent = match self.continent.and_then(|c| c.code) {
            Some(code) => Some(Continent::from_code(code).map_err(|e| bad("continent.code", e))?),
            None => None,
        };
        let mut subdivisions = Vec::with_capacity(self.subdivisions.len());
        for local in self.subdivisions.iter().filter_map(|s| s.iso_code) {
            let Some(country) = country else {
                // A subdivision code means nothing without its country, and
                // dropping it silently could slip past a deny-list.
                return Err(bad(
                    "subdivisions",
                    ModelError::Invalid {
                        field: "subdivisions",
                        reason: "record lists subdivisions but no country".to_owned(),
                    },
                ));
            };
            subdivisions.push(
                SubdivisionCode::from_parts(country, local)
                    .map_err(|e| bad("subdivisions.iso_code", e))?,
            );
        }
        Ok(Location {
            country,
            continent,
            subdivisions,
        })
    }
}

/// MaxMind's Anonymous IP record: only the flags that are true are present.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct AnonymousRecord {
    is_anonymous_vpn: bool,
    is_tor_exit_node: bool,
    is_public_proxy: bool,
    is_residential_proxy: bool,
    is_hosting_provider: bool,
}

impl AnonymousRecord {
    pub(crate) fn into_network(self) -> AnonymousNetwork {
        AnonymousNetwork {
            vpn: self.is_anonymous_vpn,
            tor_exit_node: self.is_tor_exit_node,
            public_proxy: self.is_public_proxy,
            residential_proxy: self.is_residential_proxy,
            hosting_provider: self.is_hosting_provider,
        }
    }
}

/// What one record is, told without reading its values: the keys of a map
/// (MaxMind's records are maps), or the kind of value it is instead. For
/// messages that say what a refused database holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordShape {
    /// The map's keys, at most [`RecordShape::KEYS_MAX`] of them.
    Map(Vec<String>),
    /// Not a map: `"a string"`, `"an array"`, ...
    Other(&'static str),
}

impl RecordShape {
    /// Keys kept per record: enough to recognise a layout, bounded so a
    /// hostile record cannot make the message (or memory) large.
    pub(crate) const KEYS_MAX: usize = 16;
    /// Longest key kept, in bytes.
    const KEY_LEN_MAX: usize = 64;
}

impl<'de> Deserialize<'de> for RecordShape {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> serde::de::Visitor<'de> for ShapeVisitor {
    type Value = RecordShape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any MaxMind DB value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RecordShape, A::Error> {
        let mut keys = Vec::new();
        // Values are skipped, not decoded: IgnoredAny does not follow the
        // pointers in them.
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            map.next_value::<serde::de::IgnoredAny>()?;
            if keys.len() < RecordShape::KEYS_MAX {
                let mut key = key.into_owned();
                if key.len() > RecordShape::KEY_LEN_MAX {
                    let mut end = RecordShape::KEY_LEN_MAX;
                    while !key.is_char_boundary(end) {
                        end -= 1;
                    }
                    key.truncate(end);
                    key.push('…');
                }
                keys.push(key);
            }
        }
        Ok(RecordShape::Map(keys))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RecordShape, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(RecordShape::Other("an array"))
    }

    fn visit_str<E>(self, _: &str) -> Result<RecordShape, E> {
        Ok(RecordShape::Other("a string"))
    }

    fn visit_bytes<E>(self, _: &[u8]) -> Result<RecordShape, E> {
        Ok(RecordShape::Other("bytes"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<RecordShape, E> {
        Ok(RecordShape::Other("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<RecordShape, E> {
        Ok(RecordShape::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<RecordShape, E> {
        Ok(RecordShape::Other("a number"))
    }

    fn visit_u128<E>(self, _: u128) -> Result<RecordShape, E> {
        Ok(RecordShape::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<RecordShape, E> {
        Ok(RecordShape::Other("a number"))
    }
}
