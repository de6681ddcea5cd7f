//! MaxMind databases through the geo loader (`tollgate-geo`): the bytes of
//! a location or Anonymous IP file as a region node reads them from disk.

use crate::input::Input;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tollgate_geo::{DatabaseKind, GeoDatabase, GeoError, PROBE_ADDRESSES};

/// The first byte picks the slot (location or Anonymous IP), the first
/// field holds addresses to look up (16 bytes each, also read as IPv4), the
/// rest is the file. A file over the size limit is refused as too large
/// before anything is read; an accepted file reports its own kind and size
/// and, for a location database, resolves at least one probe address (the
/// loader's coverage check); no lookup panics, whatever the file says.
pub fn geo_database(data: &[u8]) {
    let mut input = Input::new(data);
    let kind = match input.u8() % 2 {
        0 => DatabaseKind::Location,
        _ => DatabaseKind::AnonymousIp,
    };
    let addresses: Vec<IpAddr> = input
        .field()
        .chunks_exact(16)
        .flat_map(|chunk| {
            let v6: [u8; 16] = chunk.try_into().expect("16 bytes");
            let v4 = [chunk[0], chunk[1], chunk[2], chunk[3]];
            [
                IpAddr::V6(Ipv6Addr::from(v6)),
                IpAddr::V4(Ipv4Addr::from(v4)),
            ]
        })
        .collect();
    let bytes = input.rest();
    let size = bytes.len() as u64;

    if size > 0 {
        match GeoDatabase::from_bytes(kind, bytes.to_vec(), "fuzz", size - 1) {
            Err(GeoError::TooLarge { .. }) => {}
            other => panic!("a file over the limit was not refused as too large: {other:?}"),
        }
    }
    let Ok(db) = GeoDatabase::from_bytes(kind, bytes.to_vec(), "fuzz", size) else {
        return;
    };
    assert_eq!(db.kind(), kind);
    assert_eq!(db.info().size_bytes, size);
    assert!(matches!(db.info().ip_version, 4 | 6));
    let lookup = |ip: IpAddr| -> bool {
        match kind {
            DatabaseKind::Location => matches!(db.location(ip), Ok(Some(_))),
            DatabaseKind::AnonymousIp => matches!(db.anonymous(ip), Ok(Some(_))),
        }
    };
    let probes_found = PROBE_ADDRESSES.iter().filter(|ip| lookup(**ip)).count();
    if kind == DatabaseKind::Location {
        assert!(
            probes_found > 0,
            "an accepted location database resolves no probe"
        );
    }
    for ip in addresses {
        lookup(ip);
        let _ = db.location(ip);
        let _ = db.anonymous(ip);
    }
}
