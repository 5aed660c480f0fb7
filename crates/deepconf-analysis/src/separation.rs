//! How well a score separates two groups of instances, and whether confidence does better than
//! what the prompt alone tells: prompt-only baselines (prompt length, the prompt's source) beside
//! every confidence AUROC, and paired bootstrap intervals of AUROC differences (the same resampled
//! instances for both scores), so that a lead is claimed only when its interval excludes 0.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::{BootstrapConfig, Estimate, auroc, bootstrap};

/// A score computed from the prompt alone, without the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptBaseline {
    /// The prompt's length in Unicode characters (the run records no prompt token counts).
    LengthChars,
    /// The prompt's source dataset: each source scores the share of the first group among its
    /// instances in this run (fitted in-sample, which favours the baseline).
    Source,
}

impl PromptBaseline {
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            PromptBaseline::LengthChars => "prompt length (characters)",
            PromptBaseline::Source => "prompt source (dataset)",
        }
    }
}

/// Confidence against one prompt-only baseline on the same instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineComparison {
    /// The baseline.
    pub baseline: PromptBaseline,
    /// AUROC of the baseline for telling the groups apart, in the direction that separates them
    /// on this run (so at least 0.5), with a bootstrap interval.
    pub auroc: Estimate,
    /// For prompt length: the first group has the longer prompts (the direction used).
    #[serde(default)]
    pub longer_in_first_group: Option<bool>,
    /// Confidence AUROC minus the baseline's, with a paired bootstrap interval.
    pub difference: Estimate,
    /// The difference's interval lies above 0: confidence separates the groups better than the
    /// baseline.
    pub confidence_better: bool,
    /// The difference's interval lies below 0: the prompt alone separates them better.
    pub baseline_better: bool,
}

/// One instance of a two-group comparison.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unit {
    /// In the first group (the one expected to be more confident).
    pub(crate) first: bool,
    /// Confidence scores (one per metric compared; `None` where undefined).
    pub(crate) scores: Vec<Option<f64>>,
    /// Prompt length in characters.
    pub(crate) prompt_chars: f64,
    /// Source dataset, when known.
    pub(crate) source: Option<String>,
}

/// AUROC of `score` over `units[idx]` (first group positive); `None` when a group is empty.
pub(crate) fn auroc_of(
    units: &[Unit],
    idx: &mut dyn Iterator<Item = usize>,
    score: &dyn Fn(&Unit) -> Option<f64>,
) -> Option<f64> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in idx {
        let u = &units[i];
        if let Some(s) = score(u) {
            if u.first { a.push(s) } else { b.push(s) }
        }
    }
    auroc(&a, &b)
}

/// The prompt-only baselines against confidence score `which` of `units`: prompt length always,
/// the source when the units come from at least two sources.
pub(crate) fn compare_with_baselines(
    units: &[Unit],
    which: usize,
    boot: &BootstrapConfig,
) -> Vec<BaselineComparison> {
    let mut out = Vec::new();
    let all = || 0..units.len();
    let confidence = move |u: &Unit| u.scores.get(which).copied().flatten();
    let length_auroc = auroc_of(units, &mut all(), &|u| Some(u.prompt_chars));
    if let Some(raw) = length_auroc {
        let longer_first = raw >= 0.5;
        let sign = if longer_first { 1.0 } else { -1.0 };
        let length = move |u: &Unit| Some(sign * u.prompt_chars);
        out.push(compare(
            units,
            PromptBaseline::LengthChars,
            Some(longer_first),
            &confidence,
            &length,
            boot,
        ));
    }
    let mut sources: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for u in units {
        if let Some(source) = &u.source {
            let entry = sources.entry(source.as_str()).or_default();
            entry.0 += f64::from(u8::from(u.first));
            entry.1 += 1.0;
        }
    }
    if sources.len() >= 2 {
        let share: BTreeMap<String, f64> = sources
            .into_iter()
            .map(|(s, (first, n))| (s.to_string(), first / n))
            .collect();
        let source = move |u: &Unit| u.source.as_ref().and_then(|s| share.get(s).copied());
        out.push(compare(
            units,
            PromptBaseline::Source,
            None,
            &confidence,
            &source,
            boot,
        ));
    }
    out
}

fn compare(
    units: &[Unit],
    baseline: PromptBaseline,
    longer_in_first_group: Option<bool>,
    confidence: &dyn Fn(&Unit) -> Option<f64>,
    score: &dyn Fn(&Unit) -> Option<f64>,
    boot: &BootstrapConfig,
) -> BaselineComparison {
    let auroc_estimate = bootstrap(units.len(), boot, |idx| {
        auroc_of(units, &mut idx.iter().copied(), score)
    });
    let difference = bootstrap(units.len(), boot, |idx| {
        Some(
            auroc_of(units, &mut idx.iter().copied(), confidence)?
                - auroc_of(units, &mut idx.iter().copied(), score)?,
        )
    });
    BaselineComparison {
        baseline,
        auroc: auroc_estimate,
        longer_in_first_group,
        confidence_better: difference.low.is_some_and(|l| l > 0.0),
        baseline_better: difference.high.is_some_and(|h| h < 0.0),
        difference,
    }
}

/// The lead of the best-separating score over the runner-up: `|AUROC - 0.5|` of score `best`
/// minus that of `runner_up` on the same resampled units.
pub(crate) fn separation_lead(
    units: &[Unit],
    best: usize,
    runner_up: usize,
    boot: &BootstrapConfig,
) -> Estimate {
    let distance = |idx: &[usize], which: usize| {
        let score = |u: &Unit| u.scores.get(which).copied().flatten();
        Some((auroc_of(units, &mut idx.iter().copied(), &score)? - 0.5).abs())
    };
    bootstrap(units.len(), boot, |idx| {
        Some(distance(idx, best)? - distance(idx, runner_up)?)
    })
}
