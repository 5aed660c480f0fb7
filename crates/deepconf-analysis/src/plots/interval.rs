//! Horizontal point-and-interval rows: a rate with its interval per group, a median with its
//! interquartile range per category.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{DrawResult, Plot, colour, e, font};

/// One row of an [`IntervalPlot`]: a point with an interval bar.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalRow {
    /// Row label (left of the axis).
    pub label: String,
    /// The point (`None`: the row is drawn empty and marked `n/a`).
    pub value: Option<f64>,
    /// Lower end of the bar.
    pub low: Option<f64>,
    /// Upper end of the bar.
    pub high: Option<f64>,
}

/// Horizontal point-and-interval rows (e.g. a rate with its bootstrap interval per group, or a
/// median with its interquartile range per category).
#[derive(Debug, Clone)]
pub struct IntervalPlot {
    /// File stem.
    pub name: String,
    /// Title.
    pub title: String,
    /// X axis description (with unit).
    pub x_desc: String,
    /// Legend text of the point.
    pub point_legend: String,
    /// Legend text of the bar.
    pub bar_legend: String,
    /// The rows, top to bottom.
    pub rows: Vec<IntervalRow>,
    /// Fixed x range, e.g. `0..1` for rates; `None` fits the data.
    pub x_range: Option<(f64, f64)>,
    /// Multiply values by this for the labels and axis (100 shows fractions as percent).
    pub scale: f64,
    /// Unit appended to the value labels (e.g. `%`).
    pub unit: String,
    /// Decimals of the value labels.
    pub digits: usize,
}

impl IntervalPlot {
    /// The x range in scaled units: the fixed one, or the data's padded by 10% (at least 0.05).
    fn x_bounds(&self, scale: f64) -> (f64, f64) {
        let values: Vec<f64> = self
            .rows
            .iter()
            .flat_map(|r| [r.value, r.low, r.high])
            .flatten()
            .filter(|v| v.is_finite())
            .map(|v| v * scale)
            .collect();
        match self.x_range {
            Some((lo, hi)) => (lo * scale, hi * scale),
            None => {
                let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if lo.is_finite() {
                    let pad = ((hi - lo) * 0.1).max(0.05);
                    (lo - pad, hi + pad)
                } else {
                    (0.0, 1.0)
                }
            }
        }
    }

    /// Pixels left of the axis for the row labels, from the longest label (clamped).
    fn label_width(&self) -> u32 {
        self.rows
            .iter()
            .map(|r| r.label.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(8, 46) as u32
            * 8
    }
}

impl Plot for IntervalPlot {
    fn name(&self) -> &str {
        &self.name
    }
    fn size(&self) -> (u32, u32) {
        (1000, (190 + 46 * self.rows.len()) as u32)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(e)?;
        let scale = if self.scale > 0.0 { self.scale } else { 1.0 };
        let (lo, hi) = self.x_bounds(scale);
        let n = self.rows.len().max(1) as f64;
        // An empty band above the rows keeps the legend off the data.
        let top = n + 0.9;
        let label_width = self.label_width();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, font(20))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(label_width + 10)
            .build_cartesian_2d(lo..hi, 0.0..top)
            .map_err(e)?;
        let axis_digits = if scale >= 100.0 { 0 } else { 2 };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(self.x_desc.as_str())
            .x_label_formatter(&|x| format!("{x:.axis_digits$}"))
            .label_style(font(14))
            .axis_desc_style(font(16))
            .draw()
            .map_err(e)?;
        for (i, row) in self.rows.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(lo, n - i as f64 - 0.5));
            root.draw(&Text::new(
                row.label.clone(),
                (x - label_width as i32, y - 8),
                font(14),
            ))
            .map_err(e)?;
        }
        let point_colour = colour(0);
        let bar_colour = colour(1);
        let y_of = |i: usize| n - i as f64 - 0.5;
        let bars: Vec<((f64, f64), (f64, f64))> = self
            .rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some(((r.low? * scale, y_of(i)), (r.high? * scale, y_of(i)))))
            .collect();
        chart
            .draw_series(
                bars.iter()
                    .map(|&(a, b)| PathElement::new(vec![a, b], bar_colour.stroke_width(3))),
            )
            .map_err(e)?
            .label(self.bar_legend.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], bar_colour.stroke_width(3))
            });
        for &(a, b) in &bars {
            for end in [a, b] {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(end.0, end.1 - 0.15), (end.0, end.1 + 0.15)],
                        bar_colour.stroke_width(2),
                    )))
                    .map_err(e)?;
            }
        }
        let points: Vec<(f64, f64)> = self
            .rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((r.value? * scale, y_of(i))))
            .collect();
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 6, point_colour.filled())),
            )
            .map_err(e)?
            .label(self.point_legend.clone())
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, point_colour.filled()));
        let digits = self.digits;
        chart
            .draw_series(self.rows.iter().enumerate().map(|(i, r)| {
                let text = r.value.map_or("n/a".to_string(), |v| {
                    format!("{:.digits$}{}", v * scale, self.unit)
                });
                let x = r.value.map_or(lo, |v| v * scale) - (hi - lo) * 0.015;
                Text::new(text, (x.max(lo), y_of(i) + 0.38), font(13))
            }))
            .map_err(e)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(font(13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        Ok(())
    }
}
