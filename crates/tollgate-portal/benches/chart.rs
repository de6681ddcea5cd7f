//! Drawing one usage chart: a year of daily usage with a hard and a soft
//! cap and a current month, as the portal's usage page draws it per
//! feature.
//!
//! `cargo bench -p tollgate-portal --bench chart`

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use tollgate_portal::chart::{usage_chart_svg, UsageSeries};

/// 2026-12-05.
const TODAY: i64 = 20_792;

fn year_with_caps() -> UsageSeries {
    UsageSeries {
        id: "usage-exports".into(),
        feature: "Exports".into(),
        unit: "exports".into(),
        first_day: TODAY - 364,
        last_day: TODAY,
        // A weekly rhythm with a slow rise, every day used.
        points: (0..365)
            .map(|i| (TODAY - 364 + i, 20 + (i as u64 % 7) * 11 + i as u64 / 10))
            .collect(),
        hard_cap: Some(3_000),
        soft_cap: Some(2_500),
        period: Some((TODAY - 4, TODAY + 26)),
    }
}

fn chart(c: &mut Criterion) {
    let series = year_with_caps();
    let svg = usage_chart_svg(&series).expect("the series draws");
    println!("365-day chart with caps: {} bytes of SVG", svg.len());
    c.bench_function("usage_chart_svg/365_days_with_caps", |b| {
        b.iter(|| usage_chart_svg(black_box(&series)))
    });
}

criterion_group!(benches, chart);
criterion_main!(benches);
