"""In-process replica checks: median and p99 latency, in microseconds.

    python bench/replica.py [--iterations N] [--data path/to/dataset.json]

The data is Tollgate's demo data set (crates/tollgate/data/demo.json) when
found, else a built-in copy of its essentials; a data set given with --data
is a ``tollgate_model::Dataset`` JSON. Each scenario is one check repeated;
the timings are ``time.perf_counter_ns`` around ``Replica.check``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Optional

from tollgate import GeoFacts, ReplicaCore

NOW = 1_780_000_000

BUILT_IN: dict[str, Any] = {
    "catalog": {
        "products": {"studio": {"id": "studio", "name": "Studio"}},
        "features": {
            f: {"id": f, "product": "studio", "name": f, "kind": "boolean"}
            for f in ("export", "sso", "ai-assist")
        }
        | {"render": {"id": "render", "product": "studio", "name": "Render", "kind": {"metered": {"unit": "renders", "period": "month"}}}},
        "plans": {
            "pro": {"id": "pro", "product": "studio", "name": "Pro", "tier": 2, "features": [
                {"feature": "export", "config": {"max_resolution": "4k"}},
                {"feature": "render", "usage_cap": {"limit": 1000}},
                {"feature": "sso"}]},
            "enterprise": {"id": "enterprise", "product": "studio", "name": "Enterprise", "tier": 3, "features": [
                {"feature": "export"}, {"feature": "render"}, {"feature": "sso"}, {"feature": "ai-assist"}]},
        },
    },
    "accounts": [{"id": "acme", "name": "Acme"}],
    "subjects": [{"id": "alice", "account": "acme", "kind": "user", "roles": ["admin"], "groups": ["eng"]},
                 {"id": "bob", "account": "acme", "kind": "user"}],
    "entitlements": [{"id": "acme-pro", "account": "acme", "grant": {"plan": "pro"}, "valid_from": 1767225600,
                      "seats": {"count": 2, "mode": {"named": {"assigned": ["alice", "bob"]}}},
                      "geo_rule": {"allow_continents": ["EU"]}}],
}


def mutations(d: dict[str, Any]) -> list[dict[str, Any]]:
    c = d.get("catalog", {})
    out: list[dict[str, Any]] = []
    for key, kind in [("products", "put_product"), ("features", "put_feature"), ("plans", "put_plan"),
                      ("addons", "put_addon"), ("skus", "put_sku")]:
        out.extend({kind: v} for v in (c.get(key) or {}).values())
    for key, kind in [("accounts", "put_account"), ("subjects", "put_subject"), ("entitlements", "put_entitlement")]:
        out.extend({kind: v} for v in d.get(key) or [])
    return out


def load(path: Optional[str]) -> tuple[dict[str, Any], str]:
    if path:
        return json.loads(Path(path).read_text()), path
    demo = Path(__file__).resolve().parents[3] / "crates/tollgate/data/demo.json"
    if demo.exists():
        return json.loads(demo.read_text()), str(demo)
    return BUILT_IN, "built-in"


def measure(replica: ReplicaCore, iterations: int, *args: Any, **kwargs: Any) -> tuple[float, float, str]:
    check = replica.check
    for _ in range(1000):
        decision = check(*args, **kwargs)
    samples = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for _ in range(iterations):
            start = clock()
            check(*args, **kwargs)
            samples.append(clock() - start)
    finally:
        gc.enable()
    samples.sort()
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000, decision.reason


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--data", help="a Dataset JSON file (default: the demo data)")
    args = parser.parse_args()
    data, source = load(args.data)
    replica = ReplicaCore.from_mutations(mutations(data), 42, clock=lambda: NOW, last_origin_contact=NOW - 5)
    de = GeoFacts(country="DE", continent="EU")
    us = GeoFacts(country="US", continent="NA")
    scenarios = [
        ("allow (plan, seats, geo rule)", ("acme", "export", "alice"), {"location": de}),
        ("geo blocked", ("acme", "export", "alice"), {"location": us}),
        ("seat limit", ("acme", "export", "carol"), {"location": de}),
        ("capped metered (approximate)", ("acme", "render", "alice"), {"location": de}),
        ("not entitled + upgrade hint", ("acme", "ai-assist", "alice"), {"location": de}),
        ("unknown account", ("nobody", "export", None), {}),
    ]
    print(f"tollgate replica bench: CPython {platform.python_version()} on {platform.machine()}, data: {source}")
    print(f"{args.iterations} checks per scenario, µs per check\n")
    print(f"{'scenario':34} {'reason':18} {'median':>8} {'p99':>8}")
    medians = []
    for name, positional, keywords in scenarios:
        median, p99, reason = measure(replica, args.iterations, *positional, **keywords)
        medians.append(median)
        print(f"{name:34} {reason:18} {median:8.2f} {p99:8.2f}")
    print(f"\nallow median {medians[0]:.2f} µs (target ≤ 20 µs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
