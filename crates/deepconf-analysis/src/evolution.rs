//! The trace-evolution data: trailing-window confidence over token position for every trace of a
//! few instances spread from the least to the most confident. The analysis keeps it, so its plot
//! can be drawn again from `analysis.json` without the run's records.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stratify::{InstanceConfidence, Stratification};
use deepconf_records::RunRecords;

/// One instance of the trace-evolution plot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvolutionInstance {
    /// Instance id.
    pub instance_id: String,
    /// Gold label (harmful?), when known.
    pub gold_harmful: Option<bool>,
    /// Whether the vote refused.
    pub refused: bool,
    /// The instance's confidence (as in the stratification).
    pub confidence: f64,
    /// Per stored trace, its trailing-window confidence at tokens 1, 2, ... (the values of
    /// [`trailing_group_curve`]; positions are implicit to keep `analysis.json` small).
    pub curves: Vec<Vec<f64>>,
}

impl EvolutionInstance {
    /// The curves as (token position, confidence) points.
    pub fn points(&self) -> Vec<Vec<(f64, f64)>> {
        self.curves
            .iter()
            .map(|curve| {
                curve
                    .iter()
                    .enumerate()
                    .map(|(k, &value)| ((k + 1) as f64, value))
                    .collect()
            })
            .collect()
    }
}

/// Trailing-mean confidence by position: at token `t`, the mean of the last `min(t, window)` token
/// confidences (equal to the group confidence once a full window exists).
pub fn trailing_group_curve(confidences: &[f64], window: usize) -> Vec<(f64, f64)> {
    let mut prefix = vec![0.0];
    for &c in confidences {
        prefix.push(prefix[prefix.len() - 1] + c);
    }
    (1..=confidences.len())
        .map(|t| {
            let used = t.min(window.max(1));
            (t as f64, (prefix[t] - prefix[t - used]) / used as f64)
        })
        .collect()
}

/// `count` instances spread over the confidence range (lowest to highest), each with all its traces.
pub(crate) fn evolution_instances(
    strat: &Stratification,
    records: &RunRecords,
    count: usize,
) -> Vec<EvolutionInstance> {
    let mut ranked: Vec<&InstanceConfidence> = strat.instances.iter().collect();
    ranked.sort_by(|a, b| a.confidence.total_cmp(&b.confidence));
    if ranked.is_empty() || count == 0 {
        return Vec::new();
    }
    let picks = count.min(ranked.len());
    let index: BTreeMap<&str, usize> = records
        .instances
        .iter()
        .enumerate()
        .map(|(i, r)| (r.instance_id.as_str(), i))
        .collect();
    let window = records.manifest.config.confidence.window;
    let mut chosen: Vec<usize> = (0..picks)
        .map(|k| {
            if picks == 1 {
                0
            } else {
                k * (ranked.len() - 1) / (picks - 1)
            }
        })
        .collect();
    chosen.dedup();
    chosen
        .into_iter()
        .filter_map(|k| {
            let item = ranked[k];
            let traces = &records.traces[*index.get(item.instance_id.as_str())?];
            Some(EvolutionInstance {
                instance_id: item.instance_id.clone(),
                gold_harmful: item.gold_harmful,
                refused: item.refused,
                confidence: item.confidence,
                curves: traces
                    .iter()
                    .map(|t| {
                        trailing_group_curve(&t.token_confidences, window)
                            .into_iter()
                            .map(|(_, value)| value)
                            .collect()
                    })
                    .collect(),
            })
        })
        .collect()
}
