//! Dependency-free SVG line charts, for the figures of protocol reports.
//!
//! A [`Chart`] has a title, axis labels, an optional logarithmic y axis and
//! any number of [`Series`]; [`Chart::to_svg`] renders it as a standalone SVG
//! document of about 640 × 400 pixels, and [`grid`] lays several charts out
//! as small multiples in one document (one panel per measure or sparsity).
//!
//! Rendering never fails: non-finite points (and points with y ≤ 0 on a log
//! axis) break their line instead of being drawn, a chart with nothing to
//! draw shows its axes and a "no data" note, and a single point or a
//! constant series gets a padded range. The same chart always renders to the
//! same string.
//!
//! ```
//! use prunus_lab::plot::{Chart, Series};
//!
//! let svg = Chart::new("Accuracy after pruning", "sparsity", "test accuracy (%)")
//!     .series(Series::new("magnitude", vec![(0.5, 97.9), (0.8, 96.1), (0.9, 91.0)]))
//!     .series(Series::new("OBS", vec![(0.5, 98.0), (0.8, 97.5), (0.9, 95.2)]))
//!     .to_svg();
//! assert!(svg.starts_with("<svg"));
//! ```

use std::fmt::Write as _;

/// Colour-blind-friendly line colours (Okabe–Ito, then three of Paul Tol's
/// muted scheme); series past the tenth reuse them with a dash pattern.
const PALETTE: [&str; 10] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000", "#882255",
    "#999933", "#332288",
];

/// Dash patterns for the first, second, ... pass through the palette.
const DASHES: [&str; 4] = ["", "6 3", "2 3", "8 3 2 3"];

/// Width of one chart, in pixels.
const WIDTH: f64 = 640.0;
/// Height of one chart unless its legend needs more.
const MIN_HEIGHT: f64 = 400.0;
/// Room left of the plot area for the y tick labels and the y label.
const LEFT: f64 = 72.0;
/// Room above the plot area for the title.
const TOP: f64 = 44.0;
/// Room below the plot area for the x tick labels and the x label.
const BOTTOM: f64 = 56.0;
/// Margin right of the legend (or of the plot area when there is none).
const RIGHT: f64 = 16.0;
/// Height of one legend entry.
const LEGEND_ROW: f64 = 16.0;
/// Legend names longer than this are shortened (the full name stays in a
/// `<title>` tooltip).
const LEGEND_CHARS: usize = 28;
/// Estimated width of a character at the legend's font size, to size it.
const CHAR_W: f64 = 6.2;
/// Series with at most this many drawable points get a marker on each.
const MARKER_MAX_POINTS: usize = 40;
/// Height of the title band of a [`grid`].
const GRID_TITLE: f64 = 40.0;

/// One line of a chart: a name for the legend and its points (x, y).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The name shown in the legend.
    pub name: String,
    /// The points, joined in this order. A non-finite coordinate (or y ≤ 0
    /// on a log axis) breaks the line there.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series from its legend name and points.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// A line chart: title, axis labels, optional log-scale y.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// The title, above the plot.
    pub title: String,
    /// The label of the x axis.
    pub x_label: String,
    /// The label of the y axis.
    pub y_label: String,
    /// Whether the y axis is logarithmic (base 10).
    pub log_y: bool,
    /// The lines, drawn and listed in the legend in this order.
    pub series: Vec<Series>,
}

impl Chart {
    /// An empty chart with a linear y axis.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_y: false,
            series: Vec::new(),
        }
    }

    /// Sets whether the y axis is logarithmic.
    #[must_use]
    pub fn log_y(mut self, log_y: bool) -> Self {
        self.log_y = log_y;
        self
    }

    /// Adds a series.
    #[must_use]
    pub fn series(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }

    /// Renders the chart as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let layout = self.layout();
        let mut out = String::new();
        open_svg(&mut out, WIDTH, layout.height);
        self.write_body(&mut out, &layout);
        out.push_str("</svg>\n");
        out
    }

    fn layout(&self) -> Layout {
        let legend_w = if self.series.is_empty() {
            0.0
        } else {
            let chars = self
                .series
                .iter()
                .map(|s| s.name.chars().count().min(LEGEND_CHARS))
                .max()
                .unwrap_or(0);
            40.0 + CHAR_W * chars as f64
        };
        let legend_h = self.series.len() as f64 * LEGEND_ROW + 16.0;
        let height = MIN_HEIGHT.max(TOP + legend_h + BOTTOM);
        let plot_w = WIDTH - LEFT - RIGHT - legend_w;
        Layout {
            plot_x: LEFT,
            plot_y: TOP,
            plot_w,
            plot_h: height - TOP - BOTTOM,
            legend_x: LEFT + plot_w + 12.0,
            height,
        }
    }

    /// The drawable runs of each series, with y already on the axis's scale
    /// (log10 of y for a log axis).
    fn segments(&self) -> Vec<Vec<Vec<(f64, f64)>>> {
        self.series
            .iter()
            .map(|s| {
                let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
                let mut run = Vec::new();
                for &(x, y) in &s.points {
                    let drawable = x.is_finite() && y.is_finite() && (!self.log_y || y > 0.0);
                    if drawable {
                        run.push((x, if self.log_y { y.log10() } else { y }));
                    } else if !run.is_empty() {
                        runs.push(std::mem::take(&mut run));
                    }
                }
                if !run.is_empty() {
                    runs.push(run);
                }
                runs
            })
            .collect()
    }

    /// Writes the chart's elements, in coordinates relative to its top-left
    /// corner (so that [`grid`] can translate it).
    fn write_body(&self, out: &mut String, l: &Layout) {
        let segs = self.segments();
        let mut bounds: Option<(f64, f64, f64, f64)> = None;
        for &(x, y) in segs.iter().flatten().flatten() {
            bounds = Some(match bounds {
                None => (x, x, y, y),
                Some((x0, x1, y0, y1)) => (x0.min(x), x1.max(x), y0.min(y), y1.max(y)),
            });
        }
        let (x0, x1, y0, y1) = bounds.unwrap_or((0.0, 1.0, 0.0, 1.0));
        let xa = linear_axis(x0, x1);
        let ya = if self.log_y {
            log_axis(y0, y1)
        } else {
            linear_axis(y0, y1)
        };
        let px = |x: f64| l.plot_x + xa.frac(x) * l.plot_w;
        let py = |y: f64| l.plot_y + (1.0 - ya.frac(y)) * l.plot_h;

        let _ = writeln!(
            out,
            r##"<rect width="{}" height="{}" fill="#ffffff"/>"##,
            num(WIDTH),
            num(l.height)
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="26" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
            num(WIDTH / 2.0),
            escape(&self.title)
        );

        // Gridlines and tick labels.
        let bottom = l.plot_y + l.plot_h;
        out.push_str(r##"<g stroke="#e3e3e3" stroke-width="1">"##);
        out.push('\n');
        for (v, _) in &xa.ticks {
            let x = px(*v);
            if x.is_finite() {
                let _ = writeln!(
                    out,
                    r#"<line x1="{x}" y1="{}" x2="{x}" y2="{}"/>"#,
                    num(l.plot_y),
                    num(bottom),
                    x = num(x)
                );
            }
        }
        for (v, _) in &ya.ticks {
            let y = py(*v);
            if y.is_finite() {
                let _ = writeln!(
                    out,
                    r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}"/>"#,
                    num(l.plot_x),
                    num(l.plot_x + l.plot_w),
                    y = num(y)
                );
            }
        }
        out.push_str("</g>\n");
        out.push_str(r##"<g font-size="11" fill="#333333">"##);
        out.push('\n');
        for (v, label) in &xa.ticks {
            let x = px(*v);
            if x.is_finite() {
                let _ = writeln!(
                    out,
                    r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                    num(x),
                    num(bottom + 16.0),
                    escape(label)
                );
            }
        }
        for (v, label) in &ya.ticks {
            let y = py(*v);
            if y.is_finite() {
                let _ = writeln!(
                    out,
                    r#"<text x="{}" y="{}" dy="0.32em" text-anchor="end">{}</text>"#,
                    num(l.plot_x - 6.0),
                    num(y),
                    escape(label)
                );
            }
        }
        out.push_str("</g>\n");

        // Axes: the frame of the plot area.
        let _ = writeln!(
            out,
            r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#333333" stroke-width="1"/>"##,
            num(l.plot_x),
            num(l.plot_y),
            num(l.plot_w),
            num(l.plot_h)
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">{}</text>"#,
            num(l.plot_x + l.plot_w / 2.0),
            num(bottom + 40.0),
            escape(&self.x_label)
        );
        let _ = writeln!(
            out,
            r#"<text transform="translate(18,{}) rotate(-90)" text-anchor="middle" font-size="13">{}</text>"#,
            num(l.plot_y + l.plot_h / 2.0),
            escape(&self.y_label)
        );

        if bounds.is_none() {
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{}" text-anchor="middle" font-size="14" fill="#777777">no data</text>"##,
                num(l.plot_x + l.plot_w / 2.0),
                num(l.plot_y + l.plot_h / 2.0)
            );
        }

        // Lines, then the legend.
        for (i, runs) in segs.iter().enumerate() {
            let style = line_style(i);
            let markers = runs.iter().map(Vec::len).sum::<usize>() <= MARKER_MAX_POINTS;
            for run in runs {
                let pts: Vec<(f64, f64)> = run
                    .iter()
                    .map(|&(x, y)| (px(x), py(y)))
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect();
                if pts.len() >= 2 {
                    let _ = write!(
                        out,
                        r#"<polyline fill="none" stroke-width="1.8" stroke-linejoin="round"{style} points=""#
                    );
                    for (k, (x, y)) in pts.iter().enumerate() {
                        if k > 0 {
                            out.push(' ');
                        }
                        let _ = write!(out, "{},{}", num(*x), num(*y));
                    }
                    out.push_str("\"/>\n");
                }
                // A lone point has no line to show it.
                if markers || pts.len() == 1 {
                    for (x, y) in &pts {
                        let _ = writeln!(
                            out,
                            r#"<circle cx="{}" cy="{}" r="2.5" fill="{}"/>"#,
                            num(*x),
                            num(*y),
                            PALETTE[i % PALETTE.len()]
                        );
                    }
                }
            }
        }
        for (i, s) in self.series.iter().enumerate() {
            let y = l.plot_y + 8.0 + i as f64 * LEGEND_ROW;
            let _ = writeln!(
                out,
                r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke-width="2.5"{}/>"#,
                num(l.legend_x),
                num(l.legend_x + 22.0),
                line_style(i),
                y = num(y)
            );
            let name = if s.name.chars().count() > LEGEND_CHARS {
                let short: String = s.name.chars().take(LEGEND_CHARS - 1).collect();
                format!("{}\u{2026}", escape(&short))
            } else {
                escape(&s.name)
            };
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" dy="0.32em" font-size="11"><title>{}</title>{name}</text>"#,
                num(l.legend_x + 28.0),
                num(y),
                escape(&s.name)
            );
        }
    }
}

/// Lays several charts out in one SVG document, `columns` per row (at least
/// one), under a common title: small multiples, e.g. one panel per measure
/// or per sparsity. Each row is as tall as its tallest chart.
pub fn grid(title: &str, charts: &[Chart], columns: usize) -> String {
    let columns = columns.clamp(1, charts.len().max(1));
    let layouts: Vec<Layout> = charts.iter().map(Chart::layout).collect();
    let row_heights: Vec<f64> = layouts
        .chunks(columns)
        .map(|row| row.iter().map(|l| l.height).fold(0.0, f64::max))
        .collect();
    let width = WIDTH * columns as f64;
    let empty_h = if charts.is_empty() { 40.0 } else { 0.0 };
    let height = GRID_TITLE + row_heights.iter().sum::<f64>() + empty_h;

    let mut out = String::new();
    open_svg(&mut out, width, height);
    let _ = writeln!(
        out,
        r##"<rect width="{}" height="{}" fill="#ffffff"/>"##,
        num(width),
        num(height)
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="18" font-weight="bold">{}</text>"#,
        num(width / 2.0),
        escape(title)
    );
    if charts.is_empty() {
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="middle" font-size="14" fill="#777777">no charts</text>"##,
            num(width / 2.0),
            num(GRID_TITLE + 20.0)
        );
    }
    let mut y = GRID_TITLE;
    for (r, (row, row_h)) in charts.chunks(columns).zip(&row_heights).enumerate() {
        for (c, chart) in row.iter().enumerate() {
            let _ = writeln!(
                out,
                r#"<g transform="translate({},{})">"#,
                num(WIDTH * c as f64),
                num(y)
            );
            chart.write_body(&mut out, &layouts[r * columns + c]);
            out.push_str("</g>\n");
        }
        y += row_h;
    }
    out.push_str("</svg>\n");
    out
}

/// Where the parts of a chart go, relative to its top-left corner.
struct Layout {
    plot_x: f64,
    plot_y: f64,
    plot_w: f64,
    plot_h: f64,
    legend_x: f64,
    height: f64,
}

fn open_svg(out: &mut String, width: f64, height: f64) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif">"#,
        w = num(width),
        h = num(height)
    );
}

/// The stroke attributes of the `i`-th series (with a leading space).
fn line_style(i: usize) -> String {
    let colour = PALETTE[i % PALETTE.len()];
    let dash = DASHES[(i / PALETTE.len()) % DASHES.len()];
    if dash.is_empty() {
        format!(r#" stroke="{colour}""#)
    } else {
        format!(r#" stroke="{colour}" stroke-dasharray="{dash}""#)
    }
}

/// A coordinate with fixed precision, so that output is deterministic and
/// compact.
fn num(v: f64) -> String {
    let s = format!("{v:.2}");
    if s == "-0.00" { "0.00".to_owned() } else { s }
}

/// Escapes text for XML content and attributes, replacing characters XML 1.0
/// does not allow (control characters) so the document stays well-formed.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if u32::from(c) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {
                out.push('\u{fffd}');
            }
            c => out.push(c),
        }
    }
    out
}

/// An axis: its range on the plotting scale (log10 of the value for a log
/// axis) and its ticks, as (position on that scale, label).
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<(f64, String)>,
}

impl Axis {
    /// Where `v` falls between `lo` (0) and `hi` (1).
    fn frac(&self, v: f64) -> f64 {
        let span = self.hi - self.lo;
        if span.is_finite() {
            (v - self.lo) / span
        } else {
            // Halved so that a range wider than f64::MAX does not overflow.
            (v * 0.5 - self.lo * 0.5) / (self.hi * 0.5 - self.lo * 0.5)
        }
    }

    /// Two ticks at the ends, for ranges too extreme for nice ticks.
    fn endpoints(lo: f64, hi: f64, label: impl Fn(f64) -> String) -> Axis {
        Axis {
            lo,
            hi,
            ticks: vec![(lo, label(lo)), (hi, label(hi))],
        }
    }

    fn is_sound(&self) -> bool {
        self.lo.is_finite() && self.hi.is_finite() && self.hi > self.lo
    }
}

/// Picks the first candidate (they come densest first) with 4 to 6 ticks,
/// else the one whose tick count is nearest 5.
fn choose(candidates: Vec<Axis>) -> Option<Axis> {
    let candidates: Vec<Axis> = candidates.into_iter().filter(Axis::is_sound).collect();
    if let Some(i) = candidates
        .iter()
        .position(|a| (4..=6).contains(&a.ticks.len()))
    {
        return candidates.into_iter().nth(i);
    }
    let best = candidates
        .iter()
        .enumerate()
        .min_by_key(|(i, a)| (a.ticks.len().abs_diff(5), *i))
        .map(|(i, _)| i)?;
    candidates.into_iter().nth(best)
}

/// Widens a degenerate range (one value) so that it has a width.
fn pad(min: f64, max: f64) -> (f64, f64) {
    if max > min {
        return (min, max);
    }
    let v = min;
    let mut d = v.abs() * 0.1;
    if d == 0.0 || v - d == v + d {
        d = 1.0;
    }
    ((v - d).max(-f64::MAX), (v + d).min(f64::MAX))
}

/// A linear axis covering `[min, max]` (finite), with 4 to 6 ticks at
/// multiples of 1, 2 or 5 × 10^k where possible.
fn linear_axis(min: f64, max: f64) -> Axis {
    let (min, max) = pad(min, max);
    nice_linear(min, max).unwrap_or_else(|| Axis::endpoints(min, max, |v| format!("{v:.3e}")))
}

fn nice_linear(min: f64, max: f64) -> Option<Axis> {
    let span = max - min;
    if !span.is_finite() || span <= 0.0 {
        return None;
    }
    // Steps from span/1000 upwards, so the one near span/5 is among them.
    let p0 = span.log10().floor() as i32 - 2;
    let big = min.abs().max(max.abs()) >= 1e6;
    let mut candidates = Vec::new();
    for p in p0..p0 + 5 {
        for m in [1.0, 2.0, 5.0] {
            let step = m * 10f64.powi(p);
            if !step.is_finite() || step <= 0.0 {
                continue;
            }
            // The tolerance keeps rounding (0.3 / 0.1 = 2.999...) from adding
            // a tick beyond the data.
            let kl = (min / step + 1e-9).floor();
            let kh = (max / step - 1e-9).ceil();
            let count = kh - kl + 1.0;
            let (lo, hi) = (kl * step, kh * step);
            // Dense candidates are only counted, never generated.
            if !count.is_finite() || count > 12.0 || !lo.is_finite() || !hi.is_finite() {
                candidates.push(Axis {
                    lo: 0.0,
                    hi: 0.0,
                    ticks: Vec::new(),
                });
                continue;
            }
            let ticks = (0..count as usize)
                .map(|i| {
                    // + 0.0 turns -0 into 0.
                    let v = (kl + i as f64) * step + 0.0;
                    (v, linear_label(v, p, big || p < -4))
                })
                .collect();
            candidates.push(Axis { lo, hi, ticks });
        }
    }
    choose(candidates)
}

/// The label of a linear tick `v`, a multiple of a step 1, 2 or 5 × 10^`p`.
fn linear_label(v: f64, p: i32, exponent: bool) -> String {
    if exponent {
        if v == 0.0 {
            return "0".to_owned();
        }
        // At most 17 significant digits mean anything in an f64.
        let digits = (v.abs().log10().floor() as i32)
            .saturating_sub(p)
            .clamp(0, 17) as usize;
        format!("{v:.digits$e}")
    } else {
        let decimals = p.saturating_neg().clamp(0, 400) as usize;
        format!("{v:.decimals$}")
    }
}

/// A log axis covering `[min, max]`, given as log10 of the values, with
/// ticks at 1-2-5 or 1-3 multiples of powers of ten, or at powers of ten
/// (every decade or every few), or, for a range under a decade, at linear
/// nice values.
fn log_axis(min: f64, max: f64) -> Axis {
    let (min, max) = if max > min {
        (min, max)
    } else {
        (min - 0.5, min + 0.5)
    };
    let mut candidates = vec![
        log_candidate(min, max, &[1, 2, 5], 1),
        log_candidate(min, max, &[1, 3], 1),
    ];
    for stride in [1, 2, 5, 10, 20, 50, 100, 200] {
        candidates.push(log_candidate(min, max, &[1], stride));
    }
    if max - min < 1.0 {
        let (lo, hi) = (10f64.powf(min), 10f64.powf(max));
        if let Some(a) = nice_linear(lo, hi).filter(|a| a.lo > 0.0) {
            candidates.push(Axis {
                lo: a.lo.log10(),
                hi: a.hi.log10(),
                ticks: a.ticks.into_iter().map(|(v, s)| (v.log10(), s)).collect(),
            });
        }
    }
    choose(candidates)
        .unwrap_or_else(|| Axis::endpoints(min, max, |v| format!("{:.3e}", 10f64.powf(v))))
}

/// Ticks m × 10^e for the mantissas `ms`, every `stride` decades, from the
/// last one at or below `min` to the first at or above `max` (log10 scale).
fn log_candidate(min: f64, max: f64, ms: &[u8], stride: i32) -> Axis {
    // Absorbs rounding in log10 of exact powers of ten.
    const EPS: f64 = 1e-9;
    let mut ticks: Vec<(f64, String)> = Vec::new();
    let first = (min.floor() as i32).div_euclid(stride) * stride;
    let mut e = first;
    'decades: loop {
        for &m in ms {
            let pos = f64::from(e) + f64::from(m).log10();
            if pos <= min + EPS {
                ticks.clear();
            }
            ticks.push((pos, log_label(m, e)));
            if pos >= max - EPS {
                break 'decades;
            }
            // Too many to be chosen: stop generating.
            if ticks.len() > 12 {
                return Axis {
                    lo: 0.0,
                    hi: 0.0,
                    ticks: Vec::new(),
                };
            }
        }
        e += stride;
    }
    Axis {
        lo: ticks.first().map_or(0.0, |t| t.0),
        hi: ticks.last().map_or(0.0, |t| t.0),
        ticks,
    }
}

/// The label of m × 10^e: plain decimals near 1, else `me`e.
fn log_label(m: u8, e: i32) -> String {
    if (-4..=5).contains(&e) {
        let decimals = (-e).max(0) as usize;
        format!("{:.decimals$}", f64::from(m) * 10f64.powi(e))
    } else {
        format!("{m}e{e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(a: &Axis) -> Vec<&str> {
        a.ticks.iter().map(|t| t.1.as_str()).collect()
    }

    #[test]
    fn svg_is_standalone_and_names_escaped() {
        let svg = Chart::new("A & B", "x <axis>", "y \"axis\"")
            .series(Series::new("a<b & \"c\"", vec![(0.0, 1.0), (1.0, 2.0)]))
            .series(Series::new("plain", vec![(0.0, 3.0), (1.0, 0.5)]))
            .to_svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>\n"));
        assert!(svg.contains("a&lt;b &amp; &quot;c&quot;"));
        assert!(svg.contains("plain"));
        assert!(svg.contains("A &amp; B"));
        assert!(svg.contains("x &lt;axis&gt;"));
        assert!(!svg.contains("a<b"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        // Distinct colours for the two series.
        assert!(svg.contains(PALETTE[0]) && svg.contains(PALETTE[1]));
    }

    #[test]
    fn control_characters_are_replaced() {
        assert_eq!(escape("a\u{1}b\tc'"), "a\u{fffd}b\tc&#39;");
    }

    #[test]
    fn non_finite_points_split_the_line() {
        let svg = Chart::new("t", "x", "y")
            .series(Series::new(
                "s",
                vec![
                    (0.0, 1.0),
                    (1.0, 2.0),
                    (2.0, f64::NAN),
                    (3.0, 3.0),
                    (4.0, 4.0),
                    (f64::INFINITY, 5.0),
                    (6.0, 6.0),
                    (7.0, 7.0),
                ],
            ))
            .to_svg();
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn non_positive_points_split_a_log_line() {
        let svg = Chart::new("t", "x", "y")
            .log_y(true)
            .series(Series::new(
                "s",
                vec![
                    (0.0, 1.0),
                    (1.0, 10.0),
                    (2.0, 0.0),
                    (3.0, 100.0),
                    (4.0, 1e3),
                ],
            ))
            .to_svg();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn empty_and_undrawable_charts_render() {
        for chart in [
            Chart::new("empty", "x", "y"),
            Chart::new("nan", "x", "y").series(Series::new("s", vec![(f64::NAN, 1.0)])),
            Chart::new("log", "x", "y")
                .log_y(true)
                .series(Series::new("s", vec![(1.0, -1.0), (2.0, 0.0)])),
        ] {
            let svg = chart.to_svg();
            assert!(svg.starts_with("<svg"));
            assert!(svg.contains("no data"), "{svg}");
            assert!(!svg.contains("<polyline"));
            assert!(!svg.contains("NaN") && !svg.contains("inf"));
        }
    }

    #[test]
    fn single_point_and_constant_series() {
        for points in [
            vec![(1.0, 5.0)],
            vec![(0.0, 0.0)],
            vec![(0.0, 2.0), (1.0, 2.0), (2.0, 2.0)],
            vec![(3.0, 1.0), (3.0, 2.0)],
            vec![(f64::MAX, -f64::MAX), (-f64::MAX, f64::MAX)],
            vec![(5e-324, 1e-300), (0.0, 1e-300)],
        ] {
            for log in [false, true] {
                let svg = Chart::new("t", "x", "y")
                    .log_y(log)
                    .series(Series::new("s", points.clone()))
                    .to_svg();
                assert!(
                    !svg.contains("NaN") && !svg.contains("inf"),
                    "{points:?}\n{svg}"
                );
            }
        }
        let one = Chart::new("t", "x", "y")
            .series(Series::new("s", vec![(1.0, 5.0)]))
            .to_svg();
        assert!(one.contains("<circle"));
    }

    #[test]
    fn output_is_deterministic() {
        let chart =
            Chart::new("t", "x", "y").series(Series::new("s", vec![(0.1, 0.3), (0.7, 0.9)]));
        assert_eq!(chart.to_svg(), chart.clone().to_svg());
    }

    #[test]
    fn many_series_cycle_with_dashes() {
        let mut chart = Chart::new("t", "x", "y");
        for i in 0..12 {
            chart = chart.series(Series::new(
                format!("s{i}"),
                vec![(0.0, i as f64), (1.0, 1.0)],
            ));
        }
        let svg = chart.to_svg();
        assert!(svg.contains(r##"stroke="#0072B2" stroke-dasharray="6 3""##));
        assert_eq!(svg.matches("<polyline").count(), 12);
    }

    #[test]
    fn nice_linear_ticks() {
        assert_eq!(
            labels(&linear_axis(0.0, 1.0)),
            ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
        );
        assert_eq!(
            labels(&linear_axis(0.0, 97.0)),
            ["0", "20", "40", "60", "80", "100"]
        );
        assert_eq!(
            labels(&linear_axis(-3.7, 12.2)),
            ["-5", "0", "5", "10", "15"]
        );
        assert_eq!(
            labels(&linear_axis(0.001, 0.0042)),
            ["0.001", "0.002", "0.003", "0.004", "0.005"]
        );
        assert_eq!(
            labels(&linear_axis(1.2e7, 2.9e7)),
            ["1.0e7", "1.5e7", "2.0e7", "2.5e7", "3.0e7"]
        );
        let a = linear_axis(0.0, 0.0);
        assert_eq!(labels(&a), ["-1.0", "-0.5", "0.0", "0.5", "1.0"]);
        for (lo, hi) in [
            (0.0, 1.0),
            (-3.7, 12.2),
            (91.3, 98.7),
            (1e-9, 3e-9),
            (5.0, 5.0),
        ] {
            let a = linear_axis(lo, hi);
            let n = a.ticks.len();
            assert!((4..=7).contains(&n), "{lo}..{hi}: {:?}", labels(&a));
            assert!(a.lo <= lo && a.hi >= hi);
        }
    }

    #[test]
    fn nice_log_ticks() {
        assert_eq!(labels(&log_axis(0.0, 3.0)), ["1", "10", "100", "1000"]);
        assert_eq!(labels(&log_axis(0.0, 1.0)), ["1", "2", "5", "10"]);
        assert_eq!(labels(&log_axis(0.0, 2.0)), ["1", "3", "10", "30", "100"]);
        assert_eq!(
            labels(&log_axis(-6.0, 2.0)),
            ["1e-6", "0.0001", "0.01", "1", "100"]
        );
        // Under a decade: linear nice values on the log scale.
        let a = log_axis(3f64.log10(), 4f64.log10());
        assert_eq!(labels(&a), ["3.0", "3.2", "3.4", "3.6", "3.8", "4.0"]);
        // Subnormal to huge: still a handful of ticks.
        let n = log_axis(-323.5, 308.0).ticks.len();
        assert!((2..=7).contains(&n));
    }

    #[test]
    fn axes_are_sound_over_many_ranges() {
        let ends = [
            -f64::MAX,
            -1e300,
            -12345.678,
            -1.0,
            -1e-7,
            -5e-324,
            0.0,
            5e-324,
            1e-300,
            1e-7,
            0.3,
            1.0,
            7.5,
            100.0,
            12345.678,
            1e300,
            f64::MAX,
        ];
        for &a in &ends {
            for &b in &ends {
                let (lo, hi) = (a.min(b), a.max(b));
                let ax = linear_axis(lo, hi);
                assert!(ax.is_sound(), "linear {lo}..{hi}: {ax:?}");
                assert!(ax.ticks.len() >= 2 && ax.ticks.len() <= 12, "{lo}..{hi}");
                assert!(ax.ticks.iter().all(|t| t.0.is_finite()));
                if lo > 0.0 {
                    let ax = log_axis(lo.log10(), hi.log10());
                    assert!(ax.is_sound(), "log {lo}..{hi}: {ax:?}");
                    assert!(ax.ticks.len() >= 2 && ax.ticks.len() <= 12, "{lo}..{hi}");
                }
            }
        }
    }

    #[test]
    fn grid_contains_every_chart() {
        let charts: Vec<Chart> = (0..5)
            .map(|i| {
                Chart::new(format!("panel {i}"), "x", "y")
                    .series(Series::new("s", vec![(0.0, 1.0), (1.0, i as f64)]))
            })
            .collect();
        let svg = grid("All & more", &charts, 2);
        assert!(svg.starts_with("<svg xmlns="));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert!(svg.contains("All &amp; more"));
        for i in 0..5 {
            assert!(svg.contains(&format!("panel {i}")));
        }
        assert!(svg.contains(r#"width="1280.00""#));
        assert!(svg.contains(r#"translate(640.00,440.00)"#));
        // Zero columns and no charts do not panic.
        assert!(grid("g", &charts, 0).contains("panel 4"));
        assert!(grid("g", &[], 3).contains("no charts"));
    }
}
