//! The **Trace evolution** section: trailing-window confidence over token position for every trace
//! of a few instances, from the curves the analysis keeps.

use std::path::Path;

use crate::analysis::Analysis;
use crate::error::Result;
use crate::plots::{RenderedPlot, TraceEvolutionPlot, render};
use crate::report::{Document, Figure};

/// The curves as a figure.
pub(crate) const TRACE_EVOLUTION: Figure = Figure {
    name: TraceEvolutionPlot::NAME,
    caption: "Trailing-window confidence over token position for every trace of instances spread from the least to the most confident.",
};

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

/// Draws [`TRACE_EVOLUTION`] when the analysis kept curves.
pub(crate) fn draw(a: &Analysis, dir: &Path) -> Result<Option<RenderedPlot>> {
    if a.trace_evolution.is_empty() {
        return Ok(None);
    }
    let instances = a
        .trace_evolution
        .iter()
        .map(|item| {
            let gold = match item.gold_harmful {
                Some(true) => "harmful",
                Some(false) => "benign",
                None => "no gold",
            };
            let behaviour = if item.refused { "refused" } else { "complied" };
            let label = format!(
                "{} ({gold}, {behaviour}, conf {:.2})",
                shorten(&item.instance_id, 24),
                item.confidence
            );
            (label, item.points())
        })
        .collect();
    let plot = TraceEvolutionPlot {
        window: a.run.confidence.window,
        instances,
    };
    render(&plot, dir).map(Some)
}

/// Appends the section, when its figure was drawn (it has no words of its own).
pub(crate) fn write(d: &mut Document, a: &Analysis) {
    if TRACE_EVOLUTION.drawn(a) {
        d.heading(2, "Trace evolution");
        TRACE_EVOLUTION.place(d, a);
    }
}
