#!/usr/bin/env python3
"""Writes the demo geography that `tollgate dev` serves as MaxMind DB files.

A region node is ready only with a geo database loaded (`/readyz` says "no
geo database is loaded" otherwise), and real GeoLite2/GeoIP2 files cannot be
downloaded here. This script writes the same demo geography as
`tollgate_geo::fixtures` (documentation address ranges, RFC 5737 / RFC 3849,
mapped to a few places), with the standard library only, in MaxMind DB
format 2.0 (https://maxmind.github.io/MaxMind-DB/):

    192.0.2.0/25      DE (EU, BE, Berlin)     192.0.2.128/25   FR (EU)
    198.51.100.0/24   US (NA, CA, San Francisco)
    203.0.113.0/24    JP (AS, 13, Tokyo)      2001:db8::/48 .. 2001:db8:3::/48
    81.2.69.160/27    GB (EU, ENG, London)    the probe anchor, below

and the demo Anonymous IP database. The node validates both files on load
(`Reader::verify`, type, probe lookups), so a wrong file is refused, never
served. A location database must resolve at least one of a set of
well-known public addresses (tollgate_geo::PROBE_ADDRESSES), or the node
refuses it as covering nothing: 81.2.69.160/27 (London, as MaxMind's own
test databases place it) is that address here, fixtures::PROBE_ANCHOR.

Usage: demo-geo.py OUT_DIR   -> OUT_DIR/demo-city.mmdb, OUT_DIR/demo-anonymous-ip.mmdb
"""

import ipaddress
import os
import sys

# 2026-01-01T00:00:00Z, as fixtures::DEMO_BUILD_EPOCH_SECONDS: reproducible bytes.
BUILD_EPOCH_SECONDS = 1_767_225_600
CITY_DATABASE_TYPE = "Tollgate-Demo-City"  # contains "City": the location slot takes it
ANONYMOUS_DATABASE_TYPE = "GeoIP2-Anonymous-IP"  # the only type the anonymous slot takes
RECORD_SIZE_BITS = 24

COUNTRIES = {
    "DE": (2_921_044, "Germany", True),
    "FR": (3_017_382, "France", True),
    "US": (6_252_001, "United States", None),
    "JP": (1_861_060, "Japan", None),
    "GB": (2_635_167, "United Kingdom", None),
}
CONTINENTS = {
    "EU": (6_255_148, "Europe"),
    "NA": (6_255_149, "North America"),
    "AS": (6_255_147, "Asia"),
}

# (network, country, continent, subdivisions, city) as fixtures::DEMO_LOCATIONS.
DEMO_LOCATIONS = [
    ("192.0.2.0/25", "DE", "EU", ["BE"], "Berlin"),
    ("192.0.2.128/25", "FR", "EU", [], None),
    ("198.51.100.0/24", "US", "NA", ["CA"], "San Francisco"),
    ("203.0.113.0/24", "JP", "AS", ["13"], "Tokyo"),
    ("2001:db8::/48", "DE", "EU", ["BE"], "Berlin"),
    ("2001:db8:1::/48", "US", "NA", ["CA"], "San Francisco"),
    ("2001:db8:2::/48", "JP", "AS", ["13"], "Tokyo"),
    ("2001:db8:3::/48", "FR", "EU", [], None),
    # fixtures::PROBE_ANCHOR: a real network of the probe set.
    ("81.2.69.160/27", "GB", "EU", ["ENG"], "London"),
]

# (network, vpn, tor_exit_node, public_proxy, residential_proxy, hosting_provider)
# as fixtures::DEMO_ANONYMOUS.
DEMO_ANONYMOUS = [
    ("192.0.2.64/26", True, False, False, False, False),
    ("198.51.100.128/25", False, True, False, False, False),
    ("203.0.113.0/25", False, False, False, False, True),
    ("2001:db8:1:1::/64", False, False, True, False, False),
    ("2001:db8:3::/48", True, False, False, True, True),
]


class U16(int):
    pass


class U32(int):
    pass


class U64(int):
    pass


def _control(type_num, size):
    """The control byte(s) of a value: 3 type bits, 5 size bits, extensions."""
    if size < 29:
        size_bits, size_bytes = size, b""
    elif size < 29 + 256:
        size_bits, size_bytes = 29, bytes([size - 29])
    elif size < 285 + 65536:
        size_bits, size_bytes = 30, (size - 285).to_bytes(2, "big")
    else:
        size_bits, size_bytes = 31, (size - 65821).to_bytes(3, "big")
    if type_num <= 7:
        return bytes([(type_num << 5) | size_bits]) + size_bytes
    # Extended types: type bits 0, then a byte holding type - 7.
    return bytes([size_bits, type_num - 7]) + size_bytes


def _uint(type_num, value, width):
    assert 0 <= value < (1 << (8 * width)), value
    raw = value.to_bytes(width, "big").lstrip(b"\0")
    return _control(type_num, len(raw)) + raw


def encode(value):
    """One value in the data section's encoding (no pointers: small files)."""
    if isinstance(value, bool):
        return _control(14, 1 if value else 0)
    if isinstance(value, U16):
        return _uint(5, value, 2)
    if isinstance(value, U32):
        return _uint(6, value, 4)
    if isinstance(value, U64):
        return _uint(9, value, 8)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _control(2, len(raw)) + raw
    if isinstance(value, dict):
        out = _control(7, len(value))
        for key in sorted(value):
            out += encode(str(key)) + encode(value[key])
        return out
    if isinstance(value, list):
        out = _control(11, len(value))
        for item in value:
            out += encode(item)
        return out
    raise TypeError(f"cannot encode {type(value).__name__}")


def _bits(network):
    """The network's prefix bits in an IPv6 tree (IPv4 under ::/96)."""
    if network.version == 4:
        value, length = int(network.network_address), 96 + network.prefixlen
    else:
        value, length = int(network.network_address), network.prefixlen
    return [(value >> (127 - i)) & 1 for i in range(length)]


def build(database_type, description, entries):
    """entries: [(network text, record dict)] with no overlapping networks."""
    EMPTY = None
    nodes = [[EMPTY, EMPTY]]  # node 0 is the root
    data = b""
    for net_text, record in entries:
        bits = _bits(ipaddress.ip_network(net_text))
        offset = len(data)
        data += encode(record)
        node = 0
        for depth, bit in enumerate(bits):
            last = depth == len(bits) - 1
            slot = nodes[node][bit]
            if last:
                if slot is not EMPTY:
                    raise ValueError(f"{net_text} overlaps another network")
                nodes[node][bit] = ("data", offset)
            else:
                if slot is EMPTY:
                    nodes.append([EMPTY, EMPTY])
                    nodes[node][bit] = ("node", len(nodes) - 1)
                elif slot[0] == "data":
                    raise ValueError(f"{net_text} lies inside another network")
                node = nodes[node][bit][1]
    node_count = len(nodes)
    if node_count + 16 + len(data) >= (1 << RECORD_SIZE_BITS):
        raise ValueError("too much data for 24-bit records")

    def record_value(slot):
        if slot is EMPTY:
            return node_count  # "no data"
        kind, value = slot
        # Data pointers count from the start of the 16-byte separator.
        return value if kind == "node" else node_count + 16 + value

    tree = b"".join(
        record_value(left).to_bytes(3, "big") + record_value(right).to_bytes(3, "big")
        for left, right in nodes
    )
    metadata = {
        "binary_format_major_version": U16(2),
        "binary_format_minor_version": U16(0),
        "build_epoch": U64(BUILD_EPOCH_SECONDS),
        "database_type": database_type,
        "description": {"en": description},
        "ip_version": U16(6),
        "languages": ["en"],
        "node_count": U32(node_count),
        "record_size": U16(RECORD_SIZE_BITS),
    }
    return tree + b"\0" * 16 + data + b"\xab\xcd\xefMaxMind.com" + encode(metadata)


def en(name):
    return {"en": name}


def country(code):
    geoname_id, name, eu = COUNTRIES[code]
    record = {"geoname_id": U32(geoname_id), "iso_code": code, "names": en(name)}
    if eu is not None:
        record["is_in_european_union"] = eu
    return record


def city_record(country_code, continent, subdivisions, city):
    geoname_id, name = CONTINENTS[continent]
    record = {
        "continent": {"code": continent, "geoname_id": U32(geoname_id), "names": en(name)},
        "country": country(country_code),
        "registered_country": country(country_code),
    }
    if city is not None:
        record["city"] = {"names": en(city)}
    if subdivisions:
        record["subdivisions"] = [
            {"iso_code": code, "names": en(f"{country_code}-{code}")} for code in subdivisions
        ]
    return record


def anonymous_record(vpn, tor, public_proxy, residential_proxy, hosting):
    flags = {
        "is_anonymous_vpn": vpn,
        "is_tor_exit_node": tor,
        "is_public_proxy": public_proxy,
        "is_residential_proxy": residential_proxy,
        "is_hosting_provider": hosting,
    }
    # MaxMind's layout: only true flags are present, plus is_anonymous.
    record = {key: True for key, on in flags.items() if on}
    if record:
        record["is_anonymous"] = True
    return record


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    files = {
        "demo-city.mmdb": build(
            CITY_DATABASE_TYPE,
            "Tollgate demo location database",
            [(net, city_record(*rest)) for net, *rest in DEMO_LOCATIONS],
        ),
        "demo-anonymous-ip.mmdb": build(
            ANONYMOUS_DATABASE_TYPE,
            "Tollgate demo anonymous IP database",
            [(net, anonymous_record(*rest)) for net, *rest in DEMO_ANONYMOUS],
        ),
    }
    for name, content in files.items():
        path = os.path.join(out_dir, name)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(content)
        # Replace atomically: a running node hot-swaps the file when it changes.
        os.replace(tmp, path)
        print(f"wrote {path} ({len(content)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
