//! Line charts of the protocols' results, drawn by `plotters` as SVG.
//!
//! A [`Chart`] describes what to draw: a title, axis labels (with their
//! units), an optional logarithmic y axis and any number of [`Series`].
//! [`Chart::to_svg`] renders it as a standalone SVG document with the
//! legend beside the plot, and [`grid`] lays several charts out as small
//! multiples under one title.
//!
//! Every method keeps its colour across charts and protocols
//! ([`method_colour`]): magnitude pruning is blue in the flow, CBS, InCoP
//! and forward-selection charts alike.
//!
//! Non-finite points (and points with y ≤ 0 on a log axis) break their line
//! instead of being drawn; a chart with nothing to draw shows its axes and
//! a "no data" note; a single point or a constant series gets a padded
//! range. The same chart always renders to the same string.
//!
//! ```
//! use prunus_lab::chart::{Chart, Series};
//!
//! let svg = Chart::new("Accuracy after pruning", "sparsity (fraction removed)", "test accuracy (%)")
//!     .series(Series::new("MP", vec![(0.5, 97.9), (0.8, 96.1), (0.9, 91.0)]))
//!     .series(Series::new("CBS", vec![(0.5, 98.0), (0.8, 97.5), (0.9, 95.2)]))
//!     .to_svg()?;
//! assert!(svg.starts_with("<svg"));
//! # Ok::<(), prunus_lab::Error>(())
//! ```

use std::ops::Range;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor;

use crate::error::{Error, Result};

/// Width of one chart, in pixels.
const WIDTH: u32 = 720;
/// Height of one chart unless its legend needs more.
const MIN_HEIGHT: u32 = 440;
/// Height of one legend entry.
const LEGEND_ROW: u32 = 20;
/// Legend names longer than this are shortened with an ellipsis.
const LEGEND_CHARS: usize = 24;
/// Series with at most this many drawable points get a marker on each.
const MARKER_MAX_POINTS: usize = 40;
/// Height of the title band of a [`grid`].
const GRID_TITLE: u32 = 50;
/// The most decades a log axis spans: plotters' tick search needs the
/// ratio of its ends to stay finite (and a chart over more is unreadable).
const LOG_DECADES: f64 = 100.0;
/// The font of every text.
const FONT: &str = "sans-serif";

/// The colour of each method the protocols compare, so that a method looks
/// the same in every chart. Okabe–Ito's colour-blind-safe colours first,
/// then three of Paul Tol's muted scheme. Magnitude-style baselines are
/// blue throughout.
const METHOD_COLOURS: [(&str, RGBColor); 21] = [
    // Gradient flow (flow).
    ("magnitude", BLUE_),
    ("snip", ORANGE),
    ("snip-biased", WINE),
    ("taylor", GREEN_),
    ("grasp", VERMILION),
    ("grad-norm", PURPLE),
    ("random", GREY),
    // Second order (cbs).
    ("MP", BLUE_),
    ("WF-S", SKY),
    ("WF", INDIGO),
    ("CBS-S", ORANGE),
    ("CBS", VERMILION),
    // Iterative magnitude pruning (infcop).
    ("imp", BLUE_),
    ("imp-global", SKY),
    ("incop-if", GREEN_),
    ("incop-gf", PURPLE),
    // Forward selection (forward).
    ("backward", BLUE_),
    ("forward", GREEN_),
    ("scratch", ORANGE),
    ("dense", BLACK_),
    ("", OLIVE),
];

const BLUE_: RGBColor = RGBColor(0x00, 0x72, 0xB2);
const ORANGE: RGBColor = RGBColor(0xE6, 0x9F, 0x00);
const GREEN_: RGBColor = RGBColor(0x00, 0x9E, 0x73);
const VERMILION: RGBColor = RGBColor(0xD5, 0x5E, 0x00);
const SKY: RGBColor = RGBColor(0x56, 0xB4, 0xE9);
const PURPLE: RGBColor = RGBColor(0xCC, 0x79, 0xA7);
const BLACK_: RGBColor = RGBColor(0x00, 0x00, 0x00);
const WINE: RGBColor = RGBColor(0x88, 0x22, 0x55);
const OLIVE: RGBColor = RGBColor(0x99, 0x99, 0x33);
const INDIGO: RGBColor = RGBColor(0x33, 0x22, 0x88);
const GREY: RGBColor = RGBColor(0x77, 0x77, 0x77);

/// Colours for series whose name has none of its own, in order.
const SPARE: [RGBColor; 11] = [
    BLUE_, ORANGE, GREEN_, VERMILION, SKY, PURPLE, BLACK_, WINE, OLIVE, INDIGO, GREY,
];

/// The colour of method `name` in every chart, as `#rrggbb`; `None` for a
/// name the protocols do not use (such a series takes a colour no other
/// series of its chart has).
pub fn method_colour(name: &str) -> Option<String> {
    known_colour(name).map(|c| format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2))
}

fn known_colour(name: &str) -> Option<RGBColor> {
    METHOD_COLOURS
        .iter()
        .find(|(n, _)| !n.is_empty() && *n == name)
        .map(|(_, c)| *c)
}

/// The colour of each series of a chart: its method's, else the first
/// spare colour no series of the chart uses yet (cycling when all are).
fn colours(series: &[Series]) -> Vec<RGBColor> {
    let mut used: Vec<RGBColor> = series
        .iter()
        .filter_map(|s| known_colour(&s.name))
        .collect();
    let mut next = 0;
    series
        .iter()
        .map(|s| {
            known_colour(&s.name).unwrap_or_else(|| {
                let free = SPARE.iter().find(|c| !used.contains(c)).copied();
                let c = free.unwrap_or_else(|| {
                    next += 1;
                    SPARE[(next - 1) % SPARE.len()]
                });
                used.push(c);
                c
            })
        })
        .collect()
}

/// One line of a chart: a name for the legend and its points (x, y).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The name shown in the legend; a method's name picks its colour.
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

/// A line chart: title, axis labels with units, optional log-scale y.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// The title, above the plot.
    pub title: String,
    /// The label of the x axis, with its unit.
    pub x_label: String,
    /// The label of the y axis, with its unit.
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
    pub fn to_svg(&self) -> Result<String> {
        let mut svg = String::new();
        {
            let root =
                SVGBackend::with_string(&mut svg, (WIDTH, self.height())).into_drawing_area();
            root.fill(&WHITE).map_err(chart_error)?;
            self.draw(&root)?;
            root.present().map_err(chart_error)?;
        }
        Ok(svg)
    }

    /// Pixels this chart needs in height: more than the minimum only when
    /// its legend is long.
    fn height(&self) -> u32 {
        MIN_HEIGHT.max(90 + LEGEND_ROW * self.series.len() as u32)
    }

    /// The drawable runs of each series: finite points (with y > 0 on a log
    /// axis), split where a point is not.
    fn runs(&self) -> Vec<Vec<Vec<(f64, f64)>>> {
        self.series
            .iter()
            .map(|s| {
                let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
                let mut run = Vec::new();
                for &(x, y) in &s.points {
                    if x.is_finite() && y.is_finite() && (!self.log_y || y > 0.0) {
                        run.push((clamp(x), clamp(y)));
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

    /// Draws the chart into `area`: the plot on the left, the legend on
    /// the right.
    fn draw(&self, area: &DrawingArea<SVGBackend<'_>, Shift>) -> Result<()> {
        let runs = self.runs();
        let chars = self
            .series
            .iter()
            .map(|s| s.name.chars().count().min(LEGEND_CHARS))
            .max();
        let legend_w = chars.map_or(0, |c| 44 + 8 * c as u32);
        let (width, _) = area.dim_in_pixel();
        let (plot, legend) = area.split_horizontally(width.saturating_sub(legend_w));
        let points = runs.iter().flatten().flatten();
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        let mut any = false;
        for &(x, y) in points {
            any = true;
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if !any {
            (x0, x1, y0, y1) = (0.0, 1.0, 1.0, 10.0);
        }
        let x = pad(x0, x1, false);
        let colours = colours(&self.series);
        if self.log_y {
            let y = pad(y0, y1, true);
            // Points below the axis (a span over LOG_DECADES) sit on it.
            let runs: Vec<Vec<Vec<(f64, f64)>>> = runs
                .iter()
                .map(|s| {
                    s.iter()
                        .map(|r| r.iter().map(|&(x, v)| (x, v.max(y.start))).collect())
                        .collect()
                })
                .collect();
            let ticks = log_ticks(y.start, y.end);
            let y = y.log_scale().with_key_points(ticks);
            self.plot(&plot, x.into(), y, &runs, &colours, any)?;
        } else {
            let y = pad(y0, y1, false);
            let y: RangedCoordf64 = y.into();
            self.plot(&plot, x.into(), y, &runs, &colours, any)?;
        }
        self.legend(&legend, &colours)
    }

    /// The plot: title, mesh, axis labels, lines and markers.
    fn plot<Y>(
        &self,
        area: &DrawingArea<SVGBackend<'_>, Shift>,
        x: RangedCoordf64,
        y: Y,
        runs: &[Vec<Vec<(f64, f64)>>],
        colours: &[RGBColor],
        any: bool,
    ) -> Result<()>
    where
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(area)
            .caption(
                clean(&self.title),
                (FONT, 19).into_font().style(FontStyle::Bold),
            )
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x, y)
            .map_err(chart_error)?;
        chart
            .configure_mesh()
            .x_desc(clean(&self.x_label))
            .y_desc(clean(&self.y_label))
            .x_labels(7)
            .y_labels(7)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(0xDD, 0xDD, 0xDD))
            .draw()
            .map_err(chart_error)?;
        for (series, colour) in runs.iter().zip(colours) {
            let style = ShapeStyle::from(colour).stroke_width(2);
            let count: usize = series.iter().map(Vec::len).sum();
            for run in series {
                if run.len() >= 2 {
                    chart
                        .draw_series(LineSeries::new(run.iter().copied(), style))
                        .map_err(chart_error)?;
                }
                // A lone point has no line to show it.
                if count <= MARKER_MAX_POINTS || run.len() == 1 {
                    chart
                        .draw_series(run.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                        .map_err(chart_error)?;
                }
            }
        }
        if !any {
            let (w, h) = chart.plotting_area().dim_in_pixel();
            let centre = (w as i32 / 2, h as i32 / 2);
            let style =
                TextStyle::from((FONT, 16).into_font())
                    .color(&GREY)
                    .pos(text_anchor::Pos::new(
                        text_anchor::HPos::Center,
                        text_anchor::VPos::Center,
                    ));
            chart
                .plotting_area()
                .strip_coord_spec()
                .draw(&Text::new("no data", centre, style))
                .map_err(chart_error)?;
        }
        Ok(())
    }

    /// The legend: one coloured line and name per series, top down.
    fn legend(
        &self,
        area: &DrawingArea<SVGBackend<'_>, Shift>,
        colours: &[RGBColor],
    ) -> Result<()> {
        for (i, (s, colour)) in self.series.iter().zip(colours).enumerate() {
            let y = 52 + (LEGEND_ROW * i as u32) as i32;
            let line = PathElement::new(vec![(4, y), (30, y)], colour.stroke_width(3));
            area.draw(&line).map_err(chart_error)?;
            area.draw(&Circle::new((17, y), 3, colour.filled()))
                .map_err(chart_error)?;
            let name = clean(&s.name);
            let name = if name.chars().count() > LEGEND_CHARS {
                let short: String = name.chars().take(LEGEND_CHARS - 1).collect();
                format!("{short}\u{2026}")
            } else {
                name
            };
            let style = TextStyle::from((FONT, 14).into_font()).pos(text_anchor::Pos::new(
                text_anchor::HPos::Left,
                text_anchor::VPos::Center,
            ));
            area.draw(&Text::new(name, (36, y), style))
                .map_err(chart_error)?;
        }
        Ok(())
    }
}

/// Lays several charts out in one SVG document, `columns` per row (at least
/// one), under a common title: small multiples, e.g. one panel per task.
/// Each row is as tall as its tallest chart.
pub fn grid(title: &str, charts: &[Chart], columns: usize) -> Result<String> {
    let columns = columns.clamp(1, charts.len().max(1));
    let row_heights: Vec<u32> = charts
        .chunks(columns)
        .map(|row| row.iter().map(Chart::height).max().unwrap_or(MIN_HEIGHT))
        .collect();
    let width = WIDTH * columns as u32;
    let empty = if charts.is_empty() { 60 } else { 0 };
    let height = GRID_TITLE + row_heights.iter().sum::<u32>() + empty;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let centred = |size: u32| {
            TextStyle::from((FONT, size).into_font().style(FontStyle::Bold)).pos(
                text_anchor::Pos::new(text_anchor::HPos::Center, text_anchor::VPos::Center),
            )
        };
        let middle = (width as i32) / 2;
        root.draw(&Text::new(clean(title), (middle, 26), centred(22)))
            .map_err(chart_error)?;
        if charts.is_empty() {
            let note =
                TextStyle::from((FONT, 16).into_font())
                    .color(&GREY)
                    .pos(text_anchor::Pos::new(
                        text_anchor::HPos::Center,
                        text_anchor::VPos::Center,
                    ));
            root.draw(&Text::new("no charts", (middle, 80), note))
                .map_err(chart_error)?;
        }
        let mut top = GRID_TITLE;
        for (row, row_h) in charts.chunks(columns).zip(&row_heights) {
            for (c, chart) in row.iter().enumerate() {
                let left = WIDTH * c as u32;
                let cell = root.margin(top, 0, left, 0).shrink((0, 0), (WIDTH, *row_h));
                chart.draw(&cell)?;
            }
            top += row_h;
        }
        root.present().map_err(chart_error)?;
    }
    Ok(svg)
}

/// A drawing failure as the lab's error.
fn chart_error(e: impl std::fmt::Display) -> Error {
    Error::Chart {
        message: e.to_string(),
    }
}

/// A coordinate inside ±1e300, so that the span of any two stays finite.
fn clamp(v: f64) -> f64 {
    v.clamp(-1e300, 1e300)
}

/// The axis range for data in `[min, max]`: a little wider than the data,
/// and widened around a single value. On a log axis (`log`, both ends > 0)
/// the margins are multiplicative.
fn pad(min: f64, max: f64, log: bool) -> Range<f64> {
    if log {
        let (lo, hi) = (min.log10(), max.log10());
        let r = pad(lo.max(hi - LOG_DECADES), hi, false);
        return 10f64.powf(r.start).max(f64::MIN_POSITIVE)..10f64.powf(r.end).min(1e300);
    }
    let span = max - min;
    let scale = min.abs().max(max.abs());
    if span > scale * 1e-9 && span > 1e-300 {
        let m = span * 0.04;
        return clamp(min - m)..clamp(max + m);
    }
    let d = if scale > 0.0 { scale * 0.1 } else { 1.0 };
    clamp(min - d)..clamp(max + d)
}

/// Ticks of a log axis over `[lo, hi]` (`0 < lo < hi`): 1-2-5 multiples of
/// powers of ten, every multiple 1..9 when that gives fewer than four, only
/// the powers (every few decades if need be) when it gives more than ten.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (first, last) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let within = |mantissas: &[f64], stride: i32| -> Vec<f64> {
        (first..=last)
            .filter(|e| e.rem_euclid(stride) == 0)
            .flat_map(|e| {
                // Dividing by an exact power of ten rounds 3e-1 to 0.3.
                let scale = 10f64.powi(e.abs());
                mantissas
                    .iter()
                    .map(move |m| if e < 0 { m / scale } else { m * scale })
            })
            .filter(|v| (lo..=hi).contains(v))
            .collect()
    };
    let ticks = within(&[1.0, 2.0, 5.0], 1);
    if ticks.len() < 4 {
        let all = within(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], 1);
        return if all.len() >= 3 {
            all
        } else {
            linear_ticks(lo, hi)
        };
    }
    if ticks.len() <= 10 {
        return ticks;
    }
    let decades = (last - first).max(1);
    let stride = (decades + 7) / 8;
    within(&[1.0], stride)
}

/// Four to ten multiples of a step of 1, 2 or 5 × 10^k within `[lo, hi]`
/// (for a log axis narrower than its 1..9 multiples).
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = hi - lo;
    if !(span > 0.0 && span.is_finite()) {
        return vec![lo];
    }
    let p = span.log10().floor() as i32 - 1;
    for step in [1.0, 2.0, 5.0, 10.0, 20.0, 50.0].map(|m| m * 10f64.powi(p)) {
        let (first, last) = ((lo / step).ceil(), (hi / step).floor());
        if last - first <= 9.0 {
            return (0..=(last - first) as usize)
                .map(|i| (first + i as f64) * step)
                .collect();
        }
    }
    vec![lo, hi]
}

/// A tick label: at most four significant digits, no trailing zeros,
/// scientific notation for very large or small values.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    if !(1e-3..1e6).contains(&a) {
        let s = format!("{v:.2e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        return format!("{mantissa}e{exponent}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// Text safe for an SVG document: control characters (which XML does not
/// allow) replaced; plotters escapes the rest.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => ' ',
            c if u32::from(c) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => '\u{fffd}',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_bad_numbers(svg: &str) -> bool {
        !svg.contains("NaN") && !svg.contains("inf")
    }

    /// Line segments drawn in the plot in `colour` (legend keys are wider).
    fn lines(svg: &str, colour: &str) -> usize {
        svg.matches(&format!("stroke=\"{colour}\" stroke-width=\"2\""))
            .count()
    }

    #[test]
    fn svg_is_standalone_and_names_escaped() {
        let svg = Chart::new("A & B", "x <axis>", "y \"axis\"")
            .series(Series::new(
                "a<b & \"c\"\u{1}",
                vec![(0.0, 1.0), (1.0, 2.0)],
            ))
            .series(Series::new("plain", vec![(0.0, 3.0), (1.0, 0.5)]))
            .to_svg()
            .unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a&lt;b &amp; &quot;c&quot;\u{fffd}"));
        assert!(svg.contains("A &amp; B"));
        assert!(svg.contains("x &lt;axis&gt;"));
        assert!(!svg.contains("a<b") && !svg.contains('\u{1}'));
        assert_eq!(lines(&svg, "#0072B2") + lines(&svg, "#E69F00"), 2, "{svg}");
    }

    #[test]
    fn a_method_keeps_its_colour_in_every_chart() {
        let blue = method_colour("magnitude").unwrap();
        assert_eq!(method_colour("MP").as_deref(), Some(blue.as_str()));
        assert_eq!(method_colour("imp").as_deref(), Some(blue.as_str()));
        assert_eq!(method_colour("no such method"), None);
        for order in [["magnitude", "snip"], ["snip", "magnitude"]] {
            let mut chart = Chart::new("t", "x", "y");
            for name in order {
                chart = chart.series(Series::new(name, vec![(0.0, 1.0), (1.0, 2.0)]));
            }
            let svg = chart.to_svg().unwrap();
            assert!(svg.contains(&blue), "{order:?}");
        }
        // Within each protocol, no two methods share a colour.
        for methods in [
            &[
                "magnitude",
                "snip",
                "snip-biased",
                "taylor",
                "grasp",
                "grad-norm",
                "random",
            ][..],
            &["MP", "WF-S", "CBS-S", "WF", "CBS"],
            &["imp", "imp-global", "incop-if", "incop-gf"],
            &["forward", "backward", "scratch", "dense"],
        ] {
            let mut c: Vec<String> = methods.iter().map(|m| method_colour(m).unwrap()).collect();
            c.sort();
            c.dedup();
            assert_eq!(c.len(), methods.len(), "{methods:?}");
        }
    }

    #[test]
    fn unknown_names_get_colours_no_other_series_has() {
        let series: Vec<Series> = ["magnitude", "x", "y"]
            .iter()
            .map(|n| Series::new(*n, vec![]))
            .collect();
        let c = colours(&series);
        assert_eq!(c[0], BLUE_);
        assert!(c[1] != c[0] && c[2] != c[0] && c[1] != c[2]);
        let many: Vec<Series> = (0..30)
            .map(|i| Series::new(format!("s{i}"), vec![]))
            .collect();
        assert_eq!(colours(&many).len(), 30);
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
            .to_svg()
            .unwrap();
        assert_eq!(lines(&svg, "#0072B2"), 3, "{svg}");
        assert!(no_bad_numbers(&svg));
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
            .to_svg()
            .unwrap();
        assert_eq!(lines(&svg, "#0072B2"), 2, "{svg}");
        assert!(no_bad_numbers(&svg));
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
            let svg = chart.to_svg().unwrap();
            assert!(svg.starts_with("<svg"));
            assert!(svg.contains("no data"), "{svg}");
            assert!(no_bad_numbers(&svg));
        }
    }

    #[test]
    fn single_points_constants_and_extremes_render() {
        for points in [
            vec![(1.0, 5.0)],
            vec![(0.0, 0.0)],
            vec![(0.0, 2.0), (1.0, 2.0), (2.0, 2.0)],
            vec![(3.0, 1.0), (3.0, 2.0)],
            vec![(f64::MAX, -f64::MAX), (-f64::MAX, f64::MAX)],
            vec![(5e-324, 1e-300), (0.0, 1e-300)],
            vec![(0.0, 1e-300), (1.0, 1e300)],
        ] {
            for log in [false, true] {
                let svg = Chart::new("t", "x", "y")
                    .log_y(log)
                    .series(Series::new("s", points.clone()))
                    .to_svg()
                    .unwrap_or_else(|e| panic!("{points:?} log {log}: {e}"));
                assert!(no_bad_numbers(&svg), "{points:?}\n{svg}");
            }
        }
        let one = Chart::new("t", "x", "y")
            .series(Series::new("s", vec![(1.0, 5.0)]))
            .to_svg()
            .unwrap();
        assert!(one.contains("<circle"));
    }

    #[test]
    fn output_is_deterministic() {
        let chart =
            Chart::new("t", "x", "y").series(Series::new("s", vec![(0.1, 0.3), (0.7, 0.9)]));
        assert_eq!(chart.to_svg().unwrap(), chart.clone().to_svg().unwrap());
    }

    #[test]
    fn long_legends_make_the_chart_taller() {
        let mut chart = Chart::new("t", "x", "y");
        for i in 0..30 {
            chart = chart.series(Series::new(
                format!("series {i} with a long name indeed"),
                vec![],
            ));
        }
        assert!(chart.height() > MIN_HEIGHT);
        let svg = chart.to_svg().unwrap();
        assert!(svg.contains(&format!("height=\"{}\"", chart.height())));
        assert!(svg.contains("series 29 with a long n\u{2026}"));
    }

    #[test]
    fn log_axes_get_a_handful_of_ticks() {
        assert_eq!(
            log_ticks(0.07, 0.8),
            [0.07, 0.08, 0.09, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
        );
        assert_eq!(
            log_ticks(0.9, 110.0),
            [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        let wide = log_ticks(1e-30, 1e30);
        assert!((2..=10).contains(&wide.len()), "{wide:?}");
        for (lo, hi) in [(0.5, 0.6), (1e-300, 1e-200), (3.0, 3.5), (0.62, 0.68)] {
            let t = log_ticks(lo, hi);
            assert!(t.len() >= 3, "{lo}..{hi}: {t:?}");
            assert!(t.iter().all(|v| (lo..=hi).contains(v)), "{lo}..{hi}: {t:?}");
        }
        let narrow: Vec<String> = log_ticks(0.62, 0.68).into_iter().map(tick).collect();
        assert_eq!(
            narrow,
            ["0.62", "0.63", "0.64", "0.65", "0.66", "0.67", "0.68"]
        );
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(0.5), "0.5");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(20.0), "20");
        assert_eq!(tick(97.5), "97.5");
        assert_eq!(tick(0.30000000000000004), "0.3");
        assert_eq!(tick(1234.5678), "1235");
        assert_eq!(tick(-0.002), "-0.002");
        assert_eq!(tick(1e-6), "1e-6");
        assert_eq!(tick(2.5e7), "2.5e7");
    }

    #[test]
    fn padded_ranges_have_width() {
        for (lo, hi) in [
            (0.0, 0.0),
            (5.0, 5.0),
            (1e-300, 1e-300),
            (-1e300, 1e300),
            (0.0, 1.0),
        ] {
            let r = pad(lo, hi, false);
            assert!(
                r.start < r.end && r.start <= lo && r.end >= hi,
                "{lo}..{hi}: {r:?}"
            );
            assert!((r.end - r.start).is_finite());
        }
        for (lo, hi) in [(1.0, 1.0), (1e-30, 1e30), (0.01, 10.0)] {
            let r = pad(lo, hi, true);
            assert!(
                r.start > 0.0 && r.start < r.end && r.start <= lo && r.end >= hi,
                "{r:?}"
            );
        }
        // Over LOG_DECADES the lower end is cut, and the ratio stays finite.
        let r = pad(1e-300, 1e300, true);
        assert!(r.start > 1e-300 && (r.end / r.start).is_finite(), "{r:?}");
    }

    #[test]
    fn grid_contains_every_chart() {
        let charts: Vec<Chart> = (0..5)
            .map(|i| {
                Chart::new(format!("panel {i}"), "x", "y")
                    .series(Series::new("s", vec![(0.0, 1.0), (1.0, i as f64)]))
            })
            .collect();
        let svg = grid("All & more", &charts, 2).unwrap();
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert!(svg.contains("All &amp; more"));
        for i in 0..5 {
            assert!(svg.contains(&format!("panel {i}")));
        }
        assert!(svg.contains(&format!("width=\"{}\"", 2 * WIDTH)));
        // Zero columns and no charts do not panic.
        assert!(grid("g", &charts, 0).unwrap().contains("panel 4"));
        assert!(grid("g", &[], 3).unwrap().contains("no charts"));
    }
}
