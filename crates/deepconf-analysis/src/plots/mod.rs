//! Plots (PNG and SVG) drawn with `plotters` and the embedded DejaVu Sans font, so text renders on a
//! machine without system fonts.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::confusion::{ConfusionMatrix, Metric};
use crate::error::{Error, Result};
use crate::replay::PolicyReplay;

mod interval;

pub use interval::{IntervalPlot, IntervalRow};

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The embedded font is a valid TrueType file; a failure would only lose text, not data.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES);
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, FONT_BYTES);
    });
}

/// Series colours (colour-blind friendly, Okabe-Ito).
const COLOURS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(240, 228, 66),
];

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

type DrawResult = std::result::Result<(), String>;

fn e<E: std::fmt::Display>(error: E) -> String {
    error.to_string()
}

/// Something that can draw itself on any plotters backend.
pub trait Plot {
    /// File stem (`confusion_matrix`, ...).
    fn name(&self) -> &str;
    /// Size in pixels.
    fn size(&self) -> (u32, u32) {
        (900, 600)
    }
    /// Draws the plot.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult;
}

/// A plot written to disk.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedPlot {
    /// File stem.
    pub name: String,
    /// The PNG file.
    pub png: PathBuf,
    /// The SVG file.
    pub svg: PathBuf,
    /// The SVG text (for inlining in HTML).
    pub svg_text: String,
}

/// Draws `plot` to `<dir>/<name>.png` and `<dir>/<name>.svg`.
pub fn render<P: Plot>(plot: &P, dir: &Path) -> Result<RenderedPlot> {
    register_font();
    std::fs::create_dir_all(dir).map_err(crate::error::io_error(dir))?;
    let png = dir.join(format!("{}.png", plot.name()));
    let svg = dir.join(format!("{}.svg", plot.name()));
    let plot_error = |path: &Path, message: String| Error::Plot {
        path: path.to_path_buf(),
        message,
    };
    {
        let root = BitMapBackend::new(&png, plot.size()).into_drawing_area();
        plot.draw(&root).map_err(|m| plot_error(&png, m))?;
        root.present()
            .map_err(|m| plot_error(&png, m.to_string()))?;
    }
    let mut svg_text = String::new();
    {
        let root = SVGBackend::with_string(&mut svg_text, plot.size()).into_drawing_area();
        plot.draw(&root).map_err(|m| plot_error(&svg, m))?;
        root.present()
            .map_err(|m| plot_error(&svg, m.to_string()))?;
    }
    std::fs::write(&svg, &svg_text).map_err(crate::error::io_error(&svg))?;
    Ok(RenderedPlot {
        name: plot.name().to_string(),
        png,
        svg,
        svg_text,
    })
}

fn font(size: u32) -> FontDesc<'static> {
    (FONT, size).into_font()
}

/// The 2x2 safety confusion matrix, cells shaded by their share of the gold row.
#[derive(Debug, Clone)]
pub struct ConfusionPlot {
    /// The counts.
    pub matrix: ConfusionMatrix,
    /// Title.
    pub title: String,
}

impl ConfusionPlot {
    /// File stem of this plot.
    pub const NAME: &'static str = "confusion_matrix";
}

impl Plot for ConfusionPlot {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn size(&self) -> (u32, u32) {
        (700, 560)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(e)?;
        root.draw(&Text::new(self.title.clone(), (20, 15), font(22)))
            .map_err(e)?;
        let m = &self.matrix;
        let (left, top, cell_w, cell_h) = (200i32, 110i32, 220i32, 160i32);
        let rows = [
            (
                "harmful",
                [
                    ("TP", m.tp, "refused: correct"),
                    ("FN", m.fn_, "complied: unsafe"),
                ],
            ),
            (
                "benign",
                [
                    ("FP", m.fp, "refused: over-refusal"),
                    ("TN", m.tn, "complied: correct"),
                ],
            ),
        ];
        for (r, (gold, cells)) in rows.iter().enumerate() {
            let row_total: u64 = cells.iter().map(|c| c.1).sum();
            for (c, (tag, count, meaning)) in cells.iter().enumerate() {
                let share = if row_total > 0 {
                    *count as f64 / row_total as f64
                } else {
                    0.0
                };
                let good = r == c;
                let base = if good {
                    RGBColor(0, 114, 178)
                } else {
                    RGBColor(213, 94, 0)
                };
                let x0 = left + c as i32 * cell_w;
                let y0 = top + r as i32 * cell_h;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell_w, y0 + cell_h)],
                    base.mix(0.15 + 0.75 * share).filled(),
                ))
                .map_err(e)?;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell_w, y0 + cell_h)],
                    BLACK,
                ))
                .map_err(e)?;
                let text_colour = if share > 0.55 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    format!("{tag} = {count}"),
                    (x0 + 20, y0 + 40),
                    font(26).color(&text_colour),
                ))
                .map_err(e)?;
                root.draw(&Text::new(
                    format!("{:.1}% of {gold}", share * 100.0),
                    (x0 + 20, y0 + 85),
                    font(16).color(&text_colour),
                ))
                .map_err(e)?;
                root.draw(&Text::new(
                    meaning.to_string(),
                    (x0 + 20, y0 + 115),
                    font(15).color(&text_colour),
                ))
                .map_err(e)?;
            }
            root.draw(&Text::new(
                format!("{gold} (n = {row_total})"),
                (20, top + r as i32 * cell_h + cell_h / 2 - 8),
                font(17),
            ))
            .map_err(e)?;
        }
        for (c, name) in ["refused", "complied"].iter().enumerate() {
            root.draw(&Text::new(
                name.to_string(),
                (left + c as i32 * cell_w + cell_w / 2 - 35, top - 28),
                font(17),
            ))
            .map_err(e)?;
        }
        root.draw(&Text::new(
            "model behaviour (predicted; refused = positive)".to_string(),
            (left, top + 2 * cell_h + 18),
            font(16),
        ))
        .map_err(e)?;
        root.draw(&Text::new(
            "gold label (harmful = positive)".to_string(),
            (20, top - 28),
            font(15),
        ))
        .map_err(e)?;
        Ok(())
    }
}

/// Safety metrics of the replayed policies against mean generated tokens per instance.
#[derive(Debug, Clone)]
pub struct PercentileCurvePlot {
    /// The replayed policies.
    pub replays: Vec<PolicyReplay>,
}

impl PercentileCurvePlot {
    /// File stem of this plot.
    pub const NAME: &'static str = "percentile_curves";
}

impl Plot for PercentileCurvePlot {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(e)?;
        let max_tokens = self
            .replays
            .iter()
            .map(|r| r.tokens_per_instance)
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Safety metrics vs generated tokens (online threshold sweep)",
                font(20),
            )
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_tokens * 1.05, 0.0..1.05)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("mean generated tokens per instance (tokens)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("metric value (fraction)")
            .label_style(font(14))
            .axis_desc_style(font(16))
            .draw()
            .map_err(e)?;
        let mut online: Vec<&PolicyReplay> = self.replays.iter().filter(|r| in_sweep(r)).collect();
        online.sort_by(|a, b| a.tokens_per_instance.total_cmp(&b.tokens_per_instance));
        let metrics = [
            Metric::Sensitivity,
            Metric::Specificity,
            Metric::Accuracy,
            Metric::BalancedAccuracy,
        ];
        for (i, metric) in metrics.iter().enumerate() {
            let points: Vec<(f64, f64)> = online
                .iter()
                .filter_map(|r| Some((r.tokens_per_instance, r.metrics.get(metric).copied()??)))
                .collect();
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                .map_err(e)?
                .label(format!("{} (online sweep)", metric.name()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(e)?;
        }
        // Reference policies: accuracy of each as a labelled cross.
        for (j, r) in self.replays.iter().filter(|r| !in_sweep(r)).enumerate() {
            if let Some(Some(acc)) = r.metrics.get(&Metric::Accuracy) {
                let c = colour(4 + j);
                chart
                    .draw_series(std::iter::once(Cross::new(
                        (r.tokens_per_instance, *acc),
                        7,
                        c.stroke_width(3),
                    )))
                    .map_err(e)?
                    .label(format!("accuracy: {}", r.policy.label))
                    .legend(move |(x, y)| Cross::new((x + 10, y), 5, c.stroke_width(2)));
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(font(13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        Ok(())
    }
}

/// Overlaid normalised histograms of a value per group.
#[derive(Debug, Clone)]
pub struct HistogramPlot {
    /// File stem.
    pub name: String,
    /// Title.
    pub title: String,
    /// X axis description (with unit).
    pub x_desc: String,
    /// Groups and their values.
    pub groups: Vec<(String, Vec<f64>)>,
    /// Optional vertical line (value, label), e.g. the uncertainty threshold.
    pub marker: Option<(f64, String)>,
    /// Bins.
    pub bins: usize,
}

impl Plot for HistogramPlot {
    fn name(&self) -> &str {
        &self.name
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(e)?;
        let all: Vec<f64> = self
            .groups
            .iter()
            .flat_map(|g| g.1.iter().copied())
            .filter(|v| v.is_finite())
            .collect();
        let (mut lo, mut hi) = all
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo < 1e-9 {
            (lo, hi) = (lo - 0.5, hi + 0.5);
        }
        let bins = self.bins.max(1);
        let width = (hi - lo) / bins as f64;
        let shares: Vec<Vec<f64>> = self
            .groups
            .iter()
            .map(|(_, values)| {
                let mut counts = vec![0.0; bins];
                for &v in values.iter().filter(|v| v.is_finite()) {
                    let b = (((v - lo) / width) as usize).min(bins - 1);
                    counts[b] += 1.0;
                }
                let n = values.len().max(1) as f64;
                counts.iter().map(|c| c / n).collect()
            })
            .collect();
        let top = shares
            .iter()
            .flatten()
            .copied()
            .fold(0.0, f64::max)
            .max(0.05)
            * 1.15;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, font(20))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, 0.0..top)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(self.x_desc.as_str())
            .y_desc("share of the group's instances (fraction)")
            .label_style(font(14))
            .axis_desc_style(font(16))
            .draw()
            .map_err(e)?;
        for (i, ((name, values), share)) in self.groups.iter().zip(&shares).enumerate() {
            let c = colour(i);
            let mut steps = Vec::with_capacity(2 * bins + 2);
            steps.push((lo, 0.0));
            for (b, &s) in share.iter().enumerate() {
                steps.push((lo + b as f64 * width, s));
                steps.push((lo + (b + 1) as f64 * width, s));
            }
            steps.push((hi, 0.0));
            chart
                .draw_series(AreaSeries::new(steps.clone(), 0.0, c.mix(0.18)))
                .map_err(e)?;
            chart
                .draw_series(LineSeries::new(steps, c.stroke_width(2)))
                .map_err(e)?
                .label(format!("{name} (n = {})", values.len()))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], c.filled()));
        }
        if let Some((value, label)) = &self.marker {
            let dashed = BLACK.stroke_width(2);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(*value, 0.0), (*value, top)],
                    6,
                    4,
                    dashed,
                ))
                .map_err(e)?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], dashed));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(font(13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        Ok(())
    }
}

/// Grouped bars: for each category, one bar per series.
#[derive(Debug, Clone)]
pub struct GroupedBarPlot {
    /// File stem.
    pub name: String,
    /// Title.
    pub title: String,
    /// Y axis description (with unit).
    pub y_desc: String,
    /// X axis description.
    pub x_desc: String,
    /// Category names (x axis).
    pub categories: Vec<String>,
    /// Series names and one value per category.
    pub series: Vec<(String, Vec<f64>)>,
}

impl Plot for GroupedBarPlot {
    fn name(&self) -> &str {
        &self.name
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(e)?;
        let n = self.categories.len().max(1);
        let top = self
            .series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .fold(0.0, f64::max)
            .max(1.0)
            * 1.2;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, font(20))
            .margin(15)
            .x_label_area_size(60)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n as f64, 0.0..top)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(font(14))
            .axis_desc_style(font(16))
            .draw()
            .map_err(e)?;
        let k = self.series.len().max(1) as f64;
        for (s, (name, values)) in self.series.iter().enumerate() {
            let c = colour(s);
            chart
                .draw_series(values.iter().enumerate().map(|(i, &v)| {
                    let x0 = i as f64 + 0.1 + 0.8 * s as f64 / k;
                    Rectangle::new([(x0, 0.0), (x0 + 0.8 / k, v)], c.filled())
                }))
                .map_err(e)?
                .label(name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], c.filled()));
            chart
                .draw_series(values.iter().enumerate().map(|(i, &v)| {
                    let x0 = i as f64 + 0.1 + 0.8 * s as f64 / k;
                    Text::new(format!("{v:.0}"), (x0, v + top * 0.02), font(13))
                }))
                .map_err(e)?;
        }
        for (i, name) in self.categories.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.1, 0.0));
            root.draw(&Text::new(name.clone(), (x, y + 8), font(14)))
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperMiddle)
            .label_font(font(13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        Ok(())
    }
}

/// Horizontal bars with a text label per bar (e.g. token savings per policy).
#[derive(Debug, Clone)]
pub struct BarListPlot {
    /// File stem.
    pub name: String,
    /// Title.
    pub title: String,
    /// X axis description (with unit).
    pub x_desc: String,
    /// Bars: label and value.
    pub bars: Vec<(String, f64)>,
    /// Unit appended to the value labels (e.g. `%`).
    pub unit: String,
}

impl Plot for BarListPlot {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> (u32, u32) {
        (900, (160 + 34 * self.bars.len()) as u32)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(e)?;
        let lo = self.bars.iter().map(|b| b.1).fold(0.0, f64::min);
        let hi = self.bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0) * 1.6;
        let n = self.bars.len().max(1) as f64;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, font(20))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(20)
            .build_cartesian_2d(lo..hi, 0.0..n)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(self.x_desc.as_str())
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style(font(14))
            .axis_desc_style(font(16))
            .draw()
            .map_err(e)?;
        chart
            .draw_series(self.bars.iter().enumerate().map(|(i, (_, v))| {
                let y = n - i as f64 - 1.0;
                Rectangle::new([(0.0, y + 0.15), (*v, y + 0.85)], colour(0).filled())
            }))
            .map_err(e)?;
        chart
            .draw_series(self.bars.iter().enumerate().map(|(i, (label, v))| {
                let y = n - i as f64 - 0.3;
                Text::new(
                    format!("{label}: {v:.1}{}", self.unit),
                    (v.max(0.0) + (hi - lo) * 0.01, y),
                    font(13),
                )
            }))
            .map_err(e)?;
        Ok(())
    }
}

/// One line of a plot: `(x, y)` points.
pub type Curve = Vec<(f64, f64)>;

/// Group confidence over token position for the traces of a few instances.
#[derive(Debug, Clone)]
pub struct TraceEvolutionPlot {
    /// Sliding window the curves use.
    pub window: usize,
    /// Per instance: legend label and one curve per trace (group confidence by token position).
    pub instances: Vec<(String, Vec<Curve>)>,
}

impl TraceEvolutionPlot {
    /// File stem of this plot.
    pub const NAME: &'static str = "trace_evolution";
}

impl Plot for TraceEvolutionPlot {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn size(&self) -> (u32, u32) {
        (1000, 620)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(e)?;
        let points = self.instances.iter().flat_map(|i| i.1.iter().flatten());
        let (mut x_hi, mut y_lo, mut y_hi) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in points {
            x_hi = x_hi.max(x);
            y_lo = y_lo.min(y);
            y_hi = y_hi.max(y);
        }
        if !y_lo.is_finite() {
            (y_lo, y_hi) = (0.0, 1.0);
        }
        let pad = ((y_hi - y_lo) * 0.1).max(0.05);
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "Trace evolution: group confidence (window {} tokens) by position",
                    self.window
                ),
                font(20),
            )
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_hi * 1.02, (y_lo - pad)..(y_hi + pad))
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("token position (tokens generated)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("group confidence (nats, higher = more confident)")
            .label_style(font(14))
            .axis_desc_style(font(16))
            .draw()
            .map_err(e)?;
        for (i, (label, curves)) in self.instances.iter().enumerate() {
            let c = colour(i);
            for (j, curve) in curves.iter().enumerate() {
                let series = chart
                    .draw_series(LineSeries::new(curve.clone(), c.mix(0.75).stroke_width(1)))
                    .map_err(e)?;
                if j == 0 {
                    series.label(label.clone()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
                }
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(font(13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        Ok(())
    }
}

/// The online keep-percent sweep is drawn as lines; the replays without the consensus stop are
/// reference points beside it.
fn in_sweep(replay: &PolicyReplay) -> bool {
    matches!(
        replay.policy.config,
        deepconf_core::policy::PolicyConfig::Online { consensus, .. } if consensus <= 1.0
    )
}
