//! The whole analysis of a run, computed in memory by [`analyze_run`]: pure data holding everything
//! the report needs ([`crate::analyze_dir`] writes it and renders the report from it).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use deepconf_core::SamplingParams;
use deepconf_core::confidence::ConfidenceConfig;
use deepconf_core::policy::PolicyConfig;
use deepconf_refusal::TraceLabelTally;

use crate::confusion::{
    Coverage, GroupMetrics, Labelled, SafetyMetrics, labelled_outcomes, metrics_by,
};
use crate::error::{Error, Result};
use crate::evolution::{EvolutionInstance, evolution_instances};
use crate::findings::{Findings, FindingsInput};
use crate::replay::{PolicyReplay, ReplayGrid, ReplaySet, standard_policies};
use crate::stats::{BootstrapConfig, ProportionInterval};
use crate::stratify::{Stratification, StratifyOptions, stratify};
use deepconf_records::{DatasetInfo, FailedInstance, ModelInfo, RunRecords};

/// Settings of an analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalysisOptions {
    /// Bootstrap settings of the intervals without a closed form (AUROC, F1, differences); its
    /// `level` is the level of every interval.
    pub bootstrap: BootstrapConfig,
    /// Interval of proportions (refusal rates, sensitivity, specificity, precision, accuracy).
    pub proportions: ProportionInterval,
    /// Stratification settings (metric, uncertainty percentile, alpha).
    pub stratify: StratifyOptions,
    /// Policies swept by the replay.
    pub replay: ReplayGrid,
    /// Replay policies on the stored traces (needs a run of full traces).
    pub run_replay: bool,
    /// Draw plots.
    pub plots: bool,
    /// Instances shown in the trace-evolution plot.
    pub evolution_instances: usize,
    /// A live run directory on the same instances and seed (e.g. the online policy) to
    /// [`cross_check`](crate::cross_check) against the replay of this (fixed-N) run; read by
    /// [`analyze_dir`](crate::analyze_dir).
    pub live_run: Option<PathBuf>,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        Self {
            bootstrap: BootstrapConfig::default(),
            proportions: ProportionInterval::default(),
            stratify: StratifyOptions::default(),
            replay: ReplayGrid::default(),
            run_replay: true,
            plots: true,
            evolution_instances: 6,
            live_run: None,
        }
    }
}

impl AnalysisOptions {
    /// Checks the options, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        let bad = |parameter: &'static str, value: String, reason: &str| {
            Err(Error::InvalidParameter {
                parameter,
                value,
                reason: reason.into(),
            })
        };
        if !(self.bootstrap.level > 0.0 && self.bootstrap.level < 1.0) {
            return bad(
                "bootstrap.level",
                self.bootstrap.level.to_string(),
                "must be in (0, 1)",
            );
        }
        let q = self.stratify.uncertain_percentile;
        if !(0.0..=100.0).contains(&q) {
            return bad(
                "stratify.uncertain_percentile",
                q.to_string(),
                "must be in [0, 100]",
            );
        }
        if !(self.stratify.alpha > 0.0 && self.stratify.alpha < 1.0) {
            return bad(
                "stratify.alpha",
                self.stratify.alpha.to_string(),
                "must be in (0, 1)",
            );
        }
        for (parameter, percents) in [
            ("replay.keep_percents", &self.replay.keep_percents),
            (
                "replay.without_consensus_stop",
                &self.replay.without_consensus_stop,
            ),
        ] {
            if let Some(k) = percents.iter().find(|k| !(**k > 0.0 && **k <= 100.0)) {
                return bad(parameter, k.to_string(), "must be in (0, 100]");
            }
        }
        Ok(())
    }
}

/// What was run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOverview {
    /// Run name.
    pub name: String,
    /// The model.
    pub model: ModelInfo,
    /// The dataset.
    pub dataset: DatasetInfo,
    /// The live policy.
    pub policy: PolicyConfig,
    /// Confidence parameters.
    pub confidence: ConfidenceConfig,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// The refusal classifier.
    pub classifier: Option<deepconf_records::ClassifierInfo>,
    /// Instances.
    pub instances: usize,
    /// Instances whose gold label is harmful.
    #[serde(default)]
    pub harmful: usize,
    /// Instances whose gold label is benign.
    #[serde(default)]
    pub benign: usize,
    /// Instances without a gold label.
    #[serde(default)]
    pub unlabeled: usize,
    /// Instances that could not be run (their requests kept failing); `--resume` retries them.
    #[serde(default)]
    pub failed: Vec<FailedInstance>,
    /// Traces.
    pub traces: usize,
    /// Traces the live policy cut short.
    pub terminated_traces: usize,
    /// Generated tokens over all instances.
    pub tokens_generated: u64,
    /// Mean generated tokens per instance.
    pub tokens_per_instance: f64,
    /// Tokens the full budget (`max_traces` complete traces per instance) would have generated,
    /// estimated per instance as `max_traces x` the mean length of its complete traces. Exact for
    /// policies that stop nothing; the replay section has exact figures for fixed-N runs.
    #[serde(default)]
    pub full_budget_tokens: f64,
    /// `1 - tokens_generated / full_budget_tokens` (`None` when nothing was generated).
    #[serde(default)]
    pub token_savings: Option<f64>,
}

/// The refusal classifier against the dataset's gold refusal labels of its reference responses.
/// In `metrics`, "harmful" reads as "the reference response is a refusal" and "refused" as "the
/// classifier said refusal": sensitivity is the classifier's recall of refusals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceScore {
    /// Reference responses with both labels.
    pub n: usize,
    /// Confusion matrix and metrics (positive = refusal).
    pub metrics: SafetyMetrics,
}

/// The replay section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplaySection {
    /// Why the replay was skipped, when it was.
    pub skipped: Option<String>,
    /// Tokens of the full-budget baseline.
    pub baseline_tokens: u64,
    /// Traces per instance available to the policies.
    pub traces_per_instance: usize,
    /// One entry per replayed policy.
    pub policies: Vec<PolicyReplay>,
}

/// Everything the analysis found. Serialised to `analysis.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Version of this crate.
    pub analysis_version: String,
    /// The options used.
    pub options: AnalysisOptions,
    /// What was run.
    pub run: RunOverview,
    /// Which instances are in the confusion matrix.
    pub coverage: Coverage,
    /// The safety confusion matrix and metrics with their intervals.
    pub safety: SafetyMetrics,
    /// Per source dataset of a mixture (`InstanceRow::dataset`).
    #[serde(default)]
    pub by_source: Vec<GroupMetrics>,
    /// Per dataset category.
    pub by_category: Vec<GroupMetrics>,
    /// Per subcategory.
    pub by_subcategory: Vec<GroupMetrics>,
    /// Per adversarial flag.
    pub by_adversarial: Vec<GroupMetrics>,
    /// Confidence stratification and hypothesis tests.
    pub stratification: Stratification,
    /// Refusal classifier against gold reference labels, when the dataset has them.
    pub classifier: Option<ReferenceScore>,
    /// How the classifier labelled the traces: refusals, compliances, incomplete answers, judge
    /// answers that did not parse or gave no label, and an ensemble's agreement.
    #[serde(default)]
    pub trace_labels: TraceLabelTally,
    /// Percentile replay.
    pub replay: ReplaySection,
    /// What the run found, as the report's opening sentences state it.
    #[serde(default)]
    pub findings: Findings,
    /// Instances of the trace-evolution plot with their traces' confidence curves (empty without
    /// plots, and in analyses written before they were kept).
    #[serde(default)]
    pub trace_evolution: Vec<EvolutionInstance>,
    /// Plot file stems written to `plots/`.
    pub plots: Vec<String>,
}

/// Computes the analysis of a run in memory (no files written).
pub fn analyze_run(records: &RunRecords, options: &AnalysisOptions) -> Result<Analysis> {
    options.validate()?;
    let manifest = &records.manifest;
    let instances = &records.instances;
    let boot = &options.bootstrap;
    let (outcomes, coverage) = labelled_outcomes(instances);
    let proportions = options.proportions;
    let safety = SafetyMetrics::compute_with(&outcomes, boot, proportions);
    let by = |group_by: &str, key: &dyn Fn(&deepconf_records::InstanceRow) -> Option<String>| {
        metrics_by(instances, group_by, key, boot, proportions)
    };
    let by_source = by("dataset", &|r| r.dataset.clone());
    let by_category = by("category", &|r| r.category.clone());
    let by_subcategory = by("subcategory", &|r| r.subcategory.clone());
    let by_adversarial = by("adversarial", &|r| {
        r.adversarial
            .map(|a| if a { "adversarial" } else { "vanilla" }.to_string())
    });
    let stratification = stratify(
        instances,
        &records.traces,
        &options.stratify,
        boot,
        proportions,
    );
    let reference: Vec<Labelled> = instances
        .iter()
        .filter_map(|r| {
            Some(Labelled {
                harmful: r.reference_refusal?,
                refused: r.reference_refusal_predicted?,
            })
        })
        .collect();
    let classifier = (!reference.is_empty()).then(|| ReferenceScore {
        n: reference.len(),
        metrics: SafetyMetrics::compute_with(&reference, boot, proportions),
    });
    let mut trace_labels = TraceLabelTally::default();
    for trace in records.traces.iter().flatten() {
        trace_labels.add(trace.refusal_label, trace.refusal_evidence.as_deref());
    }
    let tokens_generated: u64 = instances.iter().map(|r| r.tokens_generated).sum();
    let full_budget_tokens = estimate_full_budget(records);
    let count = |gold: Option<bool>| instances.iter().filter(|i| i.gold_harmful == gold).count();
    let run = RunOverview {
        name: manifest.name.clone(),
        model: manifest.model.clone(),
        dataset: manifest.dataset.clone(),
        policy: manifest.config.policy.clone(),
        confidence: manifest.config.confidence.clone(),
        sampling: manifest.config.sampling.clone(),
        classifier: manifest.classifier.clone(),
        instances: instances.len(),
        harmful: count(Some(true)),
        benign: count(Some(false)),
        unlabeled: count(None),
        failed: records.failures.clone(),
        traces: records.n_traces(),
        terminated_traces: records
            .traces
            .iter()
            .flatten()
            .filter(|t| t.is_terminated())
            .count(),
        tokens_generated,
        tokens_per_instance: if instances.is_empty() {
            0.0
        } else {
            tokens_generated as f64 / instances.len() as f64
        },
        full_budget_tokens,
        token_savings: (full_budget_tokens > 0.0)
            .then(|| 1.0 - tokens_generated as f64 / full_budget_tokens),
    };
    let replay = replay_section(records, &run, options)?;
    let findings = Findings::compute(FindingsInput {
        safety: &safety,
        by_source: &by_source,
        stratification: &stratification,
        instances,
        traces: &records.traces,
        policies: &replay.policies,
        replay_traces: replay.traces_per_instance,
        replay_skipped: replay.skipped.as_deref(),
        bootstrap: boot,
        alpha: options.stratify.alpha,
        proportions,
    });
    // Only the plot shows the curves, and they are the bulk of `analysis.json` when kept.
    let trace_evolution = if options.plots {
        evolution_instances(&stratification, records, options.evolution_instances)
    } else {
        Vec::new()
    };
    Ok(Analysis {
        analysis_version: env!("CARGO_PKG_VERSION").to_string(),
        options: options.clone(),
        run,
        coverage,
        safety,
        by_source,
        by_category,
        by_subcategory,
        by_adversarial,
        stratification,
        classifier,
        trace_labels,
        replay,
        findings,
        trace_evolution,
        plots: Vec::new(),
    })
}

/// Tokens of `max_traces` complete traces per instance: each instance's complete traces give its
/// mean length (the run's mean when an instance has none).
fn estimate_full_budget(records: &RunRecords) -> f64 {
    let max_traces = records.manifest.config.policy.max_traces() as f64;
    let complete = |traces: &[deepconf_records::TraceRow]| {
        traces
            .iter()
            .filter(|t| !t.is_terminated())
            .fold((0u64, 0u64), |(s, n), t| (s + u64::from(t.n_tokens), n + 1))
    };
    let (all_sum, all_n) = records
        .traces
        .iter()
        .map(|t| complete(t))
        .fold((0, 0), |(s, n), (a, b)| (s + a, n + b));
    let run_mean = if all_n == 0 {
        0.0
    } else {
        all_sum as f64 / all_n as f64
    };
    records
        .traces
        .iter()
        .map(|traces| match complete(traces) {
            (_, 0) => max_traces * run_mean,
            (sum, n) => sum as f64 * max_traces / n as f64,
        })
        .sum()
}

fn replay_section(
    records: &RunRecords,
    run: &RunOverview,
    options: &AnalysisOptions,
) -> Result<ReplaySection> {
    let skip = |reason: String| ReplaySection {
        skipped: Some(reason),
        baseline_tokens: 0,
        traces_per_instance: 0,
        policies: Vec::new(),
    };
    if !options.run_replay {
        return Ok(skip("disabled by the options".into()));
    }
    if !matches!(run.policy.kind(), "fixed" | "offline") {
        return Ok(skip(format!(
            "the run used the `{}` policy, so not every trace was generated in full; replay needs a fixed or offline run",
            run.policy.kind()
        )));
    }
    let counts: Vec<usize> = records.traces.iter().map(Vec::len).collect();
    let Some(&n) = counts.iter().min() else {
        return Ok(skip("the run has no instances".into()));
    };
    if n == 0 {
        return Ok(skip("an instance has no stored traces".into()));
    }
    // Every instance replays the same budget: its first `n` traces.
    let mut trimmed = records.clone();
    for t in &mut trimmed.traces {
        t.truncate(n);
    }
    let set = ReplaySet::from_records(&trimmed)?;
    let policies = set.replay_all(&standard_policies(n, &options.replay))?;
    Ok(ReplaySection {
        skipped: None,
        baseline_tokens: policies.first().map_or(0, |p| p.baseline_tokens),
        traces_per_instance: n,
        policies,
    })
}
