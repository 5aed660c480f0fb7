//! The report of an [`Analysis`], rendered from the analysis alone: one file per section, each
//! declaring its figures (plot file stem and caption, drawn and placed from the same [`Figure`])
//! and writing its prose, and a tiny document model ([`Document`]) rendered both as Markdown and
//! as self-contained HTML, so the two reports always say the same thing.

mod classifier;
mod confusion;
mod document;
mod findings;
mod hypotheses;
mod live_check;
mod overview;
mod policies;
mod replay;
mod stratification;
mod summary;
mod trace_evolution;
pub(crate) mod trace_labels;

use std::path::Path;

use crate::analysis::Analysis;
use crate::error::Result;
use crate::plots::RenderedPlot;
use crate::stats::Estimate;

pub use document::{Block, Document};
pub use summary::comparison_table;
pub use trace_labels::trace_label_text;

/// A figure of the report: its plot's file stem and the caption under it. The section that places
/// a figure also declares how it is drawn, so the plot written and the plot linked never differ.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Figure {
    /// Plot file stem (`plots/<name>.png|svg`).
    pub(crate) name: &'static str,
    /// Caption.
    pub(crate) caption: &'static str,
}

impl Figure {
    /// Whether the plot was drawn (it is listed in [`Analysis::plots`]).
    pub(crate) fn drawn(&self, a: &Analysis) -> bool {
        a.plots.iter().any(|p| p == self.name)
    }

    /// Places the figure when its plot was drawn: an undrawn one would be a broken link.
    pub(crate) fn place(&self, d: &mut Document, a: &Analysis) {
        if self.drawn(a) {
            d.figure(self.name, self.caption);
        }
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{:.1}%", v * 100.0))
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.digits$}"))
}

fn est(e: &Estimate) -> String {
    e.display(3)
}

/// The title of the report of `a` (the HTML page's title too).
pub(crate) fn title(a: &Analysis) -> String {
    overview::title(a)
}

/// The report of an analysis as a document (rendered to `report.md` and `report.html`); figures
/// appear for the plots listed in [`Analysis::plots`].
pub fn build_report(a: &Analysis) -> Document {
    let mut d = Document::default();
    overview::write_title(&mut d, a);
    findings::write(&mut d, a);
    overview::write_configuration(&mut d, a);
    overview::write_reading_guide(&mut d, a);
    confusion::write(&mut d, a);
    stratification::write(&mut d, a);
    hypotheses::write(&mut d, a);
    replay::write(&mut d, a);
    a.findings.write_live_check(&mut d);
    trace_evolution::write(&mut d, a);
    trace_labels::write(&mut d, a);
    classifier::write(&mut d, a);
    d
}

/// Draws every figure `a` has data for into `dir`, in the order [`Analysis::plots`] lists them.
pub(crate) fn draw_plots(a: &Analysis, dir: &Path) -> Result<Vec<RenderedPlot>> {
    let mut rendered = vec![confusion::draw(a, dir)?];
    rendered.extend(stratification::draw_distributions(a, dir)?);
    rendered.extend(replay::draw(a, dir)?);
    rendered.extend(stratification::draw_categories(a, dir)?);
    rendered.push(findings::draw(a, dir)?);
    rendered.extend(trace_evolution::draw(a, dir)?);
    Ok(rendered)
}
