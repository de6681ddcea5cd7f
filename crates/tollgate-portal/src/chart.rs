//! Usage charts as server-rendered SVG.
//!
//! [`usage_chart_svg`] draws one metered feature's usage as an SVG document
//! meant to be embedded inline in a portal page. The page is served under
//! `Content-Security-Policy: default-src 'none'; style-src 'self'; ...`, so
//! the SVG carries no `style` attribute and no `<style>` element: plotters'
//! SVG backend writes presentation attributes (`fill`, `stroke`,
//! `font-size`, ...), which CSP does not govern, and the result is checked
//! for both before it is returned. Text is drawn by the browser (plotters is
//! built without fonts; it only estimates text sizes for layout).
//!
//! # Design
//!
//! Caps bound a *period's* total (a month's exports), not a day's, so a
//! cap line drawn over daily bars would compare unlike things. The chart
//! is two panels sharing one document:
//!
//! * **Daily usage** (top): one bar per UTC day of the window (the last 90
//!   or 365 days, say), the current period shaded behind the bars. This
//!   shows the shape of use: trend, weekly rhythm, spikes.
//! * **This period** (bottom): the running total within the current period
//!   (a line rising day by day from the period's first day, drawn to the
//!   last day with data) against the cap: dashed lines at 100 % and 80 % of
//!   the cap, each labelled with its figure, and the soft cap as its own
//!   dashed line when there are both. The x axis spans the whole period,
//!   so how far the line is across shows how much of the period is gone
//!   and how close it is to the cap shows how much of the cap is.
//!
//! The cap the thresholds are drawn against is the hard cap, else the soft
//! cap (as the origin measures `usage.threshold` events); without either,
//! no threshold line is drawn. Without a current period the running total
//! runs over the whole window.
//!
//! The root `<svg>` has `role="img"` and is labelled by a `<title>` and a
//! `<desc>` that summarise the chart in words (feature, period, total used,
//! cap, percent), for screen readers and for anyone whose browser does not
//! draw it. It has a `viewBox` and no `width` or `height`, so it scales to
//! its container (a phone's width included).

use plotters::prelude::*;
use plotters::series::DashedLineSeries;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The drawing's size in SVG user units (its `viewBox`); the browser scales
/// it to the container.
pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 480;
/// Most days a chart's window spans (two years, a leap day included).
pub const WINDOW_DAYS_MAX: i64 = 731;
/// Most points one series may carry (several per day are summed).
pub const POINTS_MAX: usize = 4 * WINDOW_DAYS_MAX as usize;
/// Most characters of the feature name and of the unit.
pub const TEXT_CHARS_MAX: usize = 200;
/// Most bytes of the chart's id.
pub const ID_BYTES_MAX: usize = 64;
/// The last day number a chart may show (as the origin's usage days: the
/// year 275 000); the first is 0, 1970-01-01.
pub const DAY_MAX: i64 = 99_999_999;

/// The part of the plot the daily panel takes, in user units.
const DAILY_PANEL_HEIGHT: u32 = 264;
const FONT: &str = "sans-serif";
/// The lowest top of a y axis, so that few units still get whole-number
/// ticks.
const Y_MAX_MIN: f64 = 5.0;
const BAR: RGBColor = RGBColor(0x2B, 0x6C, 0xB0);
const RUNNING: RGBColor = RGBColor(0x1A, 0x4E, 0x8A);
const PERIOD_SHADE: RGBColor = RGBColor(0xE8, 0xF0, 0xFA);
const CAP: RGBColor = RGBColor(0xB4, 0x23, 0x18);
const WARN: RGBColor = RGBColor(0xB8, 0x6E, 0x00);
const SOFT: RGBColor = RGBColor(0x6B, 0x46, 0xC1);
const INK: RGBColor = RGBColor(0x33, 0x33, 0x33);

/// One feature's daily usage, as the chart draws it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSeries {
    /// Unique within the page: the `<title>` and `<desc>` ids are
    /// `<id>-title` and `<id>-desc`. 1..=64 bytes of `[A-Za-z0-9_-]`.
    pub id: String,
    /// The feature's name as people read it (escaped; at most 200
    /// characters; control characters are dropped).
    pub feature: String,
    /// What one unit is, e.g. `exports` (as `feature`).
    pub unit: String,
    /// The window's first and last UTC day (days since 1970-01-01,
    /// inclusive): usually the last 90 or 365 days, ending today.
    pub first_day: i64,
    pub last_day: i64,
    /// (day, units consumed that day); days missing are 0, days outside
    /// the window are left out, several points of one day are summed
    /// (saturating at `u64::MAX`: a picture, never a bill).
    pub points: Vec<(i64, u64)>,
    pub hard_cap: Option<u64>,
    pub soft_cap: Option<u64>,
    /// The current period's first and last day (inclusive), if the feature
    /// has periods. Days of it outside the window count as 0.
    pub period: Option<(i64, i64)>,
}

/// Why a chart was not drawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChartError {
    #[error("chart id must be 1..={ID_BYTES_MAX} bytes of [A-Za-z0-9_-]")]
    BadId,
    #[error("{field} is longer than {TEXT_CHARS_MAX} characters")]
    TextTooLong { field: &'static str },
    #[error(
        "days {first}..={last} are not a window of 1..={WINDOW_DAYS_MAX} days within 0..={DAY_MAX}"
    )]
    BadWindow { first: i64, last: i64 },
    #[error(
        "days {first}..={last} are not a period of 1..={WINDOW_DAYS_MAX} days within 0..={DAY_MAX}"
    )]
    BadPeriod { first: i64, last: i64 },
    #[error("at most {POINTS_MAX} points, not {0}")]
    TooManyPoints(usize),
    #[error("drawing failed: {0}")]
    Draw(String),
    #[error("the SVG backend wrote {0}")]
    Output(&'static str),
}

fn draw_error<E: std::fmt::Display>(e: E) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// A run of days `first..=last` within `0..=DAY_MAX`, at most
/// `WINDOW_DAYS_MAX` long.
fn valid_days(first: i64, last: i64) -> bool {
    (0..=DAY_MAX).contains(&first)
        && (first..=DAY_MAX).contains(&last)
        && last - first < WINDOW_DAYS_MAX
}

/// `text` without control characters, at most `TEXT_CHARS_MAX` of them.
fn clean(text: &str, field: &'static str) -> Result<String, ChartError> {
    if text.chars().count() > TEXT_CHARS_MAX {
        return Err(ChartError::TextTooLong { field });
    }
    Ok(text.chars().filter(|c| !c.is_control()).collect())
}

/// `text` safe inside an XML element or a quoted attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DD` of a day count since 1970-01-01.
pub fn iso_date(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `1234567` as `1,234,567`.
fn grouped(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An axis label: `950`, `12.5k`, `3M`, `18.4E`.
fn compact(v: f64) -> String {
    const SUFFIXES: [(f64, &str); 6] = [
        (1e18, "E"),
        (1e15, "P"),
        (1e12, "T"),
        (1e9, "G"),
        (1e6, "M"),
        (1e3, "k"),
    ];
    for (scale, suffix) in SUFFIXES {
        if v.abs() >= scale {
            let text = format!("{:.1}", v / scale);
            let text = text.strip_suffix(".0").unwrap_or(&text);
            return format!("{text}{suffix}");
        }
    }
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// What the chart shows, worked out from the series once.
struct Figures {
    feature: String,
    unit: String,
    /// Units per day of the window, index 0 = `first_day`.
    daily: Vec<u64>,
    window_total: u128,
    peak: u64,
    /// The days the running total spans (the period, or the window).
    span: (i64, i64),
    /// `(day after, running total)` from the span's first day to the last
    /// day with data, starting at `(first, 0)`.
    running: Vec<(i64, f64)>,
    span_total: u128,
    /// The cap thresholds are measured against: hard, else soft.
    cap: Option<u64>,
}

impl Figures {
    fn of(series: &UsageSeries) -> Result<Figures, ChartError> {
        let (first, last) = (series.first_day, series.last_day);
        if !valid_days(first, last) {
            return Err(ChartError::BadWindow { first, last });
        }
        if let Some((start, end)) = series.period {
            if !valid_days(start, end) {
                return Err(ChartError::BadPeriod {
                    first: start,
                    last: end,
                });
            }
        }
        if series.points.len() > POINTS_MAX {
            return Err(ChartError::TooManyPoints(series.points.len()));
        }
        // Validated: at most WINDOW_DAYS_MAX days.
        let mut daily = vec![0u64; (last - first + 1) as usize];
        for &(day, units) in &series.points {
            if (first..=last).contains(&day) {
                let slot = &mut daily[(day - first) as usize];
                *slot = slot.saturating_add(units);
            }
        }
        let window_total = daily.iter().map(|&u| u128::from(u)).sum();
        let peak = daily.iter().copied().max().unwrap_or_default();
        let span = series.period.unwrap_or((first, last));
        let mut running = vec![(span.0, 0.0)];
        let mut span_total: u128 = 0;
        for day in span.0..=span.1.min(last) {
            if day >= first {
                span_total += u128::from(daily[(day - first) as usize]);
            }
            running.push((day + 1, span_total as f64));
        }
        Ok(Figures {
            feature: clean(&series.feature, "feature")?,
            unit: clean(&series.unit, "unit")?,
            daily,
            window_total,
            peak,
            span,
            running,
            span_total,
            cap: series.hard_cap.or(series.soft_cap),
        })
    }

    /// Percent of the cap used in the span, rounded down; `None` without a
    /// cap (or with a cap of 0, where any use is past it).
    fn percent(&self) -> Option<u128> {
        self.cap
            .filter(|&cap| cap > 0)
            .map(|cap| self.span_total * 100 / u128::from(cap))
    }

    /// The `<title>` text.
    fn title(&self) -> String {
        format!("Usage of {}", self.feature)
    }

    /// The `<desc>` text: the chart in words.
    fn desc(&self, series: &UsageSeries) -> String {
        let mut text = String::new();
        if self.window_total == 0 {
            text.push_str("No usage yet. ");
        }
        let unit = &self.unit;
        let (start, end) = self.span;
        let span = match series.period {
            Some(_) => "the current period",
            None => "the window",
        };
        text.push_str(&format!(
            "{}: {} {unit} used in {span}, {} to {}",
            self.feature,
            grouped(self.span_total),
            iso_date(start),
            iso_date(end),
        ));
        match (series.hard_cap, self.percent()) {
            (Some(cap), Some(pct)) => {
                text.push_str(&format!(", {pct}% of the cap of {}", grouped(cap.into())));
            }
            (Some(cap), None) => {
                text.push_str(&format!(", of a cap of {}", grouped(cap.into())));
            }
            (None, _) => {}
        }
        match (series.soft_cap, series.hard_cap, self.percent()) {
            (Some(soft), None, Some(pct)) => {
                text.push_str(&format!(
                    ", {pct}% of the soft cap of {}",
                    grouped(soft.into())
                ));
            }
            (Some(soft), _, _) => {
                text.push_str(&format!(", soft cap {}", grouped(soft.into())));
            }
            (None, None, _) => text.push_str(", no cap"),
            (None, Some(_), _) => {}
        }
        text.push_str(&format!(
            ". Daily usage from {} to {}: {} {unit} in all",
            iso_date(series.first_day),
            iso_date(series.last_day),
            grouped(self.window_total),
        ));
        if self.peak > 0 {
            if let Some(i) = self.daily.iter().position(|&u| u == self.peak) {
                text.push_str(&format!(
                    ", most on {} ({})",
                    iso_date(series.first_day + i as i64),
                    grouped(self.peak.into())
                ));
            }
        }
        text.push('.');
        text
    }
}

/// Draws `series` as an SVG document (see the module's documentation for
/// what it shows and why). Deterministic: the same series gives the same
/// bytes.
pub fn usage_chart_svg(series: &UsageSeries) -> Result<String, ChartError> {
    let id = &series.id;
    if id.is_empty()
        || id.len() > ID_BYTES_MAX
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ChartError::BadId);
    }
    let figures = Figures::of(series)?;

    let mut drawn = String::new();
    {
        let root = SVGBackend::with_string(&mut drawn, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (top, bottom) = root.split_vertically(DAILY_PANEL_HEIGHT);
        draw_daily(&top, series, &figures)?;
        draw_running(&bottom, series, &figures)?;
        root.present().map_err(draw_error)?;
    }

    // plotters opens the document with a fixed-size root; it is replaced by
    // one that scales, with its role and its text alternative.
    let root = format!(
        "<svg width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         xmlns=\"http://www.w3.org/2000/svg\">\n"
    );
    let body = drawn
        .strip_prefix(root.as_str())
        .ok_or(ChartError::Output("a root element of another shape"))?;
    let mut svg = String::with_capacity(body.len() + 1024);
    svg.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         role=\"img\" aria-labelledby=\"{id}-title {id}-desc\">\n\
         <title id=\"{id}-title\">{}</title>\n<desc id=\"{id}-desc\">{}</desc>\n",
        escape(&figures.title()),
        escape(&figures.desc(series)),
    ));
    svg.push_str(body);
    // Text is escaped (a quote is `&quot;`, `<` is `&lt;`), so these can
    // only be markup: refused rather than served to a page whose CSP would
    // block them.
    if svg.contains(" style=\"") || svg.contains("<style") {
        return Err(ChartError::Output("a style attribute or element"));
    }
    Ok(svg)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn label_style(size: u32, color: RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle {
        font: (FONT, size).into_font(),
        color: color.to_backend_color(),
        pos: Pos::new(h, v),
    }
}

/// The top panel: a bar per day, the current period shaded.
fn draw_daily(area: &Area<'_>, series: &UsageSeries, f: &Figures) -> Result<(), ChartError> {
    let (first, last) = (series.first_day, series.last_day);
    // Headroom above the highest bar; at least 5 units, so a small scale
    // still has whole-number ticks.
    let y_max = (f.peak as f64 * 1.15).max(Y_MAX_MIN);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{}: daily usage", f.feature), (FONT, 16))
        .margin(10)
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d(first..last + 1, 0f64..y_max)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(6)
        .y_labels(5)
        .x_label_formatter(&|d| iso_date(*d))
        .y_label_formatter(&|v| compact(*v))
        .y_desc(f.unit.as_str())
        .label_style((FONT, 11))
        .max_light_lines(1)
        .draw()
        .map_err(draw_error)?;

    if let Some((start, end)) = series.period {
        let (from, to) = (start.max(first), (end + 1).min(last + 1));
        if from < to {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(from, 0.0), (to, y_max)],
                    PERIOD_SHADE.filled(),
                )))
                .map_err(draw_error)?;
            // Labelled inside the band's outer edge, so it stays in the
            // plot whichever end of the window the period is at.
            let (at, h) = if from - first > last - to {
                (to, HPos::Right)
            } else {
                (from, HPos::Left)
            };
            chart
                .draw_series(std::iter::once(Text::new(
                    "current period",
                    (at, y_max),
                    label_style(12, INK, h, VPos::Top),
                )))
                .map_err(draw_error)?;
        }
    }
    chart
        .draw_series(
            f.daily
                .iter()
                .enumerate()
                .filter(|(_, &units)| units > 0)
                .map(|(i, &units)| {
                    let day = first + i as i64;
                    Rectangle::new([(day, 0.0), (day + 1, units as f64)], BAR.filled())
                }),
        )
        .map_err(draw_error)?;
    if f.window_total == 0 {
        chart
            .draw_series(std::iter::once(Text::new(
                "No usage yet",
                (first + (last + 1 - first) / 2, y_max / 2.0),
                label_style(18, INK, HPos::Center, VPos::Center),
            )))
            .map_err(draw_error)?;
    }
    Ok(())
}

/// The bottom panel: the running total in the period against the cap.
fn draw_running(area: &Area<'_>, series: &UsageSeries, f: &Figures) -> Result<(), ChartError> {
    let (start, end) = f.span;
    let highest = [
        Some(f.span_total),
        series.hard_cap.map(u128::from),
        series.soft_cap.map(u128::from),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or_default();
    let y_max = (highest as f64 * 1.15).max(Y_MAX_MIN);
    let caption = match series.period {
        Some(_) => "Used this period (running total)",
        None => "Used in the window (running total)",
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 14))
        .margin(10)
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d(start..end + 1, 0f64..y_max)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(5)
        .y_labels(4)
        .x_label_formatter(&|d| iso_date(*d))
        .y_label_formatter(&|v| compact(*v))
        .y_desc(f.unit.as_str())
        .label_style((FONT, 11))
        .max_light_lines(1)
        .draw()
        .map_err(draw_error)?;

    // Threshold lines: 100 % and 80 % of the cap, dashed and labelled at
    // their right end; the soft cap too when a hard cap sets the
    // thresholds.
    // (units, label, colour, label at the left end rather than the right):
    // the soft cap is often near the 80 % line, so their labels sit at
    // opposite ends.
    let mut lines: Vec<(u128, String, RGBColor, bool)> = Vec::new();
    if let Some(cap) = f.cap {
        let name = if series.hard_cap.is_some() {
            "cap"
        } else {
            "soft cap"
        };
        let cap = u128::from(cap);
        lines.push((cap, format!("100% {name} {}", grouped(cap)), CAP, false));
        let warn = cap * 80 / 100;
        lines.push((warn, format!("80% {}", grouped(warn)), WARN, false));
    }
    if let (Some(_), Some(soft)) = (series.hard_cap, series.soft_cap) {
        let soft = u128::from(soft);
        lines.push((soft, format!("soft cap {}", grouped(soft)), SOFT, true));
    }
    // Labels sit just above their line.
    let lift = y_max * 0.01;
    for (units, label, color, left) in lines {
        let y = units as f64;
        chart
            .draw_series(DashedLineSeries::new(
                [(start, y), (end + 1, y)],
                6,
                4,
                color.stroke_width(1),
            ))
            .map_err(draw_error)?;
        chart
            .draw_series(std::iter::once(Text::new(
                label,
                if left {
                    (start, y + lift)
                } else {
                    (end + 1, y + lift)
                },
                label_style(
                    12,
                    color,
                    if left { HPos::Left } else { HPos::Right },
                    VPos::Bottom,
                ),
            )))
            .map_err(draw_error)?;
    }
    chart
        .draw_series(LineSeries::new(
            f.running.iter().copied(),
            RUNNING.stroke_width(2),
        ))
        .map_err(draw_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-05.
    const TODAY: i64 = 20_792;

    fn series(points: Vec<(i64, u64)>, hard: Option<u64>, soft: Option<u64>) -> UsageSeries {
        UsageSeries {
            id: "usage-exports".into(),
            feature: "Exports".into(),
            unit: "exports".into(),
            first_day: TODAY - 364,
            last_day: TODAY,
            points,
            hard_cap: hard,
            soft_cap: soft,
            // December 2026.
            period: Some((TODAY - 4, TODAY + 26)),
        }
    }

    fn year_of_use() -> Vec<(i64, u64)> {
        (0..365)
            .map(|i| (TODAY - 364 + i, (i as u64 * 7) % 50))
            .collect()
    }

    #[test]
    fn iso_dates_from_day_numbers() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(TODAY), "2026-12-05");
        assert_eq!(iso_date(11_016), "2000-02-29");
        assert_eq!(iso_date(11_017), "2000-03-01");
        assert_eq!(iso_date(-1), "1969-12-31");
        // GNU `date -u -d @$((99999999*86400)) +%F`.
        assert_eq!(iso_date(DAY_MAX), "275760-09-12");
    }

    #[test]
    fn no_style_attribute_or_element_and_an_accessible_root() {
        let svg = usage_chart_svg(&series(year_of_use(), Some(1_000), Some(800))).unwrap();
        assert!(!svg.contains("style="), "no style attribute at all");
        assert!(!svg.contains("<style"));
        let root = svg.lines().next().unwrap();
        assert!(root.starts_with("<svg "), "{root}");
        assert!(root.contains(r#"role="img""#), "{root}");
        assert!(
            root.contains(r#"aria-labelledby="usage-exports-title usage-exports-desc""#),
            "{root}"
        );
        assert!(root.contains(r#"viewBox="0 0 800 480""#), "{root}");
        assert!(
            !root.contains("width=") && !root.contains("height="),
            "scales: {root}"
        );
        assert!(svg.contains(r#"<title id="usage-exports-title">Usage of Exports</title>"#));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<svg").count(), 1);
    }

    #[test]
    fn the_desc_summarises_feature_period_total_cap_and_percent() {
        // 10 a day for the 5 days of December so far: 50 of 200, 25 %.
        let points = (TODAY - 10..=TODAY).map(|d| (d, 10)).collect();
        let svg = usage_chart_svg(&series(points, Some(200), None)).unwrap();
        let desc = svg
            .split("<desc id=\"usage-exports-desc\">")
            .nth(1)
            .and_then(|rest| rest.split("</desc>").next())
            .unwrap();
        assert_eq!(
            desc,
            "Exports: 50 exports used in the current period, 2026-12-01 to 2026-12-31, \
             25% of the cap of 200. Daily usage from 2025-12-06 to 2026-12-05: \
             110 exports in all, most on 2026-11-25 (10)."
        );
    }

    #[test]
    fn text_is_drawn_with_iso_dates_and_labels() {
        let svg = usage_chart_svg(&series(year_of_use(), Some(10_000), None)).unwrap();
        assert!(svg.contains("<text"), "plotters draws text without fonts");
        assert!(svg.contains("Exports: daily usage"));
        let dates = svg
            .lines()
            .filter(|l| l.len() == 10 && l.as_bytes()[4] == b'-' && l.as_bytes()[7] == b'-')
            .count();
        assert!(dates >= 6, "x labels are ISO dates: {dates}");
        assert!(svg.contains("2026-"), "a label in 2026");
    }

    #[test]
    fn threshold_lines_with_a_cap_and_none_without() {
        let capped = usage_chart_svg(&series(year_of_use(), Some(10_000), None)).unwrap();
        assert!(capped.contains("100% cap 10,000"), "the cap's label");
        assert!(capped.contains("80% 8,000"), "the warning line's label");
        let cap_colour = r##"stroke="#B42318""##;
        assert!(
            capped.matches(cap_colour).count() > 10,
            "the cap line is dashed: many short segments"
        );
        assert!(capped.contains(r##"stroke="#B86E00""##), "the 80 % line");

        let soft_only = usage_chart_svg(&series(year_of_use(), None, Some(900))).unwrap();
        assert!(soft_only.contains("100% soft cap 900"));
        assert!(soft_only.contains("80% 720"));

        let both = usage_chart_svg(&series(year_of_use(), Some(1_000), Some(900))).unwrap();
        assert!(both.contains("100% cap 1,000") && both.contains("soft cap 900"));

        let uncapped = usage_chart_svg(&series(year_of_use(), None, None)).unwrap();
        for label in ["100%", "80%", "soft cap"] {
            assert!(!uncapped.contains(label), "no {label} line without a cap");
        }
        assert!(!uncapped.contains(cap_colour) && !uncapped.contains(r##"stroke="#B86E00""##));
        assert!(uncapped.contains("no cap"));
    }

    #[test]
    fn an_empty_series_is_a_no_usage_yet_chart() {
        for (points, hard) in [(vec![], None), (vec![(TODAY, 0)], Some(5))] {
            let svg = usage_chart_svg(&series(points, hard, None)).unwrap();
            assert!(svg.contains("No usage yet"), "{svg}");
            assert!(svg.contains("<desc id=\"usage-exports-desc\">No usage yet. "));
        }
        // One day, no period: still a chart.
        let mut one = series(vec![], None, None);
        one.first_day = TODAY;
        one.period = None;
        assert!(usage_chart_svg(&one).unwrap().contains("No usage yet"));
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let points = (0..731)
            .map(|i| (TODAY - 364 + i % 365, u64::MAX))
            .collect();
        let svg = usage_chart_svg(&series(points, Some(u64::MAX), Some(u64::MAX))).unwrap();
        assert!(svg.contains("of the cap of 18,446,744,073,709,551,615"));
        // Five days of the period at u64::MAX each (saturated per day).
        assert!(svg.contains("500% of the cap"), "{}", &svg[..600]);
        let zero_cap = usage_chart_svg(&series(vec![(TODAY, 3)], Some(0), None)).unwrap();
        assert!(zero_cap.contains("of a cap of 0"));
    }

    #[test]
    fn text_is_escaped() {
        let mut s = series(year_of_use(), Some(10), None);
        s.feature = "<script>alert(\"x\")</script> & 'co'\u{7}".into();
        s.unit = "<b>".into();
        let svg = usage_chart_svg(&s).unwrap();
        assert!(!svg.contains("<script") && !svg.contains("<b>"), "{svg}");
        assert!(
            svg.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &apos;co&apos;")
        );
        assert!(!svg.contains('\u{7}'), "control characters dropped");
    }

    #[test]
    fn bad_input_is_refused() {
        let mut s = series(vec![], None, None);
        s.id = "a b".into();
        assert_eq!(usage_chart_svg(&s), Err(ChartError::BadId));
        let mut s = series(vec![], None, None);
        s.first_day = s.last_day - WINDOW_DAYS_MAX;
        assert!(matches!(
            usage_chart_svg(&s),
            Err(ChartError::BadWindow { .. })
        ));
        let mut s = series(vec![], None, None);
        s.first_day = s.last_day + 1;
        assert!(matches!(
            usage_chart_svg(&s),
            Err(ChartError::BadWindow { .. })
        ));
        let mut s = series(vec![], None, None);
        s.period = Some((-5, 3));
        assert!(matches!(
            usage_chart_svg(&s),
            Err(ChartError::BadPeriod { .. })
        ));
        let mut s = series(vec![(TODAY, 1); POINTS_MAX + 1], None, None);
        assert_eq!(
            usage_chart_svg(&s),
            Err(ChartError::TooManyPoints(POINTS_MAX + 1))
        );
        s.points.clear();
        s.feature = "x".repeat(TEXT_CHARS_MAX + 1);
        assert!(matches!(
            usage_chart_svg(&s),
            Err(ChartError::TextTooLong { field: "feature" })
        ));
    }

    #[test]
    fn the_same_series_draws_the_same_bytes() {
        let s = series(year_of_use(), Some(1_000), Some(900));
        assert_eq!(usage_chart_svg(&s).unwrap(), usage_chart_svg(&s).unwrap());
    }
}
