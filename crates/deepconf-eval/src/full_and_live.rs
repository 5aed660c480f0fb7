//! The main job's shape as one call ([`FullAndLive`]): full traces once (fixed N), every policy replayed on
//! them, the live policy run on the same instances and seed as a cross-check of the replay, and the
//! report that opens with the findings.

use std::path::{Path, PathBuf};

use deepconf_analysis::{
    Analysis, AnalysisOptions, PLOTS_DIR, REPORT_HTML_FILE, REPORT_MD_FILE, analyze_dir,
};
use deepconf_core::LogprobModel;
use deepconf_core::policy::PolicyConfig;
use deepconf_datasets::{Benchmark, Dataset, MixtureSpec, SourceShares};
use deepconf_refusal::RefusalClassifier;

use crate::experiment::{Experiment, RunReport};
use crate::finish::ReportFiles;
use crate::{Error, Result};

/// Sub-directory of a full-and-live run's output that holds the full (fixed-N) run and its report.
pub const FULL_RUN_DIR: &str = "full";
/// Sub-directory that holds the live run of the policy under test.
pub const LIVE_RUN_DIR: &str = "live";

/// A full run, its replay, an optional live cross-check and the report, over one set of instances.
///
/// The full run is an [`Experiment`] whose policy generates every trace (fixed N or offline); the
/// live run is the same experiment (instances, seed, model, classifier, concurrency, resumption)
/// with the live policy, so trace `i` of an instance has the same seed in both and the live traces
/// are cuts of the stored full ones.
#[derive(Debug, Clone)]
pub struct FullAndLive {
    full: Experiment,
    live_policy: Option<PolicyConfig>,
    analysis: AnalysisOptions,
}

/// What [`FullAndLive::run`] did and wrote.
#[derive(Debug, Clone)]
pub struct FullAndLiveReport {
    /// The full run's directory (`<out>/full`): its report holds the replay, the findings and the
    /// live-vs-replay check.
    pub full_dir: PathBuf,
    /// The full run.
    pub full_run: RunReport,
    /// The live run's directory (`<out>/live`), when a live policy was given.
    pub live_dir: Option<PathBuf>,
    /// The live run.
    pub live_run: Option<RunReport>,
    /// The analysis of the full run (findings, replay, live check).
    pub analysis: Analysis,
    /// Where the full run's report is.
    pub files: ReportFiles,
}

impl FullAndLive {
    /// A pairing whose full run is `full`; its policy must generate every trace in full (fixed N or
    /// offline), since the replay needs whole traces.
    pub fn new(full: Experiment) -> Result<Self> {
        let policy = &full.config.run.policy;
        if !matches!(
            policy,
            PolicyConfig::Fixed { .. } | PolicyConfig::Offline { .. }
        ) {
            return Err(Error::InvalidParameter {
                parameter: "policy",
                value: policy.kind().to_string(),
                reason: "the full run of a full-and-live pairing must generate every trace in full (fixed or offline), so every policy can be replayed on it".into(),
            });
        }
        Ok(Self {
            full,
            live_policy: None,
            analysis: AnalysisOptions::default(),
        })
    }

    /// Also run `policy` live on the same instances and seed, and check the replay against it. Its
    /// budget may not exceed the full run's traces.
    pub fn live(mut self, policy: PolicyConfig) -> Result<Self> {
        let full = self.full.config.run.policy.max_traces();
        if policy.max_traces() > full {
            return Err(Error::InvalidParameter {
                parameter: "live policy",
                value: format!("{} traces", policy.max_traces()),
                reason: format!(
                    "the full run stores {full} traces per instance, so a live policy may sample at most {full}"
                ),
            });
        }
        policy.validate().map_err(|e| Error::InvalidParameter {
            parameter: "live policy",
            value: policy.kind().to_string(),
            reason: e.to_string(),
        })?;
        self.live_policy = Some(policy);
        Ok(self)
    }

    /// Analysis settings of the reports (the live run is filled in by [`run`](Self::run)).
    #[must_use]
    pub fn analysis_options(mut self, options: AnalysisOptions) -> Self {
        self.analysis = options;
        self
    }

    /// Stop both runs cleanly on Ctrl-C (what finished is written; `--resume` continues); a second
    /// Ctrl-C exits at once. For command-line programs.
    #[must_use]
    pub fn stop_on_ctrl_c(mut self) -> Self {
        self.full = self.full.interrupt_flag(crate::interrupt::interrupt_flag());
        self
    }

    /// The full run's experiment.
    pub fn full_experiment(&self) -> &Experiment {
        &self.full
    }

    /// The live run's experiment: the full run's with the live policy (and `-live` after its name).
    pub fn live_experiment(&self) -> Option<Experiment> {
        let policy = self.live_policy.clone()?;
        let mut live = self.full.clone();
        live.config.name = format!("{}-live", self.full.config.name);
        live.config.run.policy = policy;
        Some(live)
    }

    /// Runs the full run into `<out>/full`, the live run (if any) into `<out>/live`, analyses the
    /// live run on its own and the full run with the replay and the live check, and returns the
    /// full run's analysis. An interrupted full run is analysed as far as it got and the live run
    /// is not started.
    pub fn run(
        &self,
        model: &mut dyn LogprobModel,
        classifier: &mut dyn RefusalClassifier,
        out: &Path,
    ) -> Result<FullAndLiveReport> {
        let full_dir = out.join(FULL_RUN_DIR);
        let full_run = self.full.run(model, classifier, &full_dir)?;
        let live = self.live_experiment().filter(|_| !full_run.interrupted);
        let (live_dir, live_run) = match live {
            Some(experiment) => {
                let dir = out.join(LIVE_RUN_DIR);
                let report = experiment.run(model, classifier, &dir)?;
                analyze_dir(&dir, &self.analysis)?;
                (Some(dir), Some(report))
            }
            None => (None, None),
        };
        // An interrupted live run covers fewer instances; the check then reports what it compared.
        let options = AnalysisOptions {
            live_run: live_dir.clone(),
            ..self.analysis.clone()
        };
        let analysis = analyze_dir(&full_dir, &options)?;
        let files = ReportFiles {
            markdown: full_dir.join(REPORT_MD_FILE),
            html: full_dir.join(REPORT_HTML_FILE),
            plots: full_dir.join(PLOTS_DIR),
        };
        Ok(FullAndLiveReport {
            full_dir,
            full_run,
            live_dir,
            live_run,
            analysis,
            files,
        })
    }
}

/// The main job's default shares of the real mixture: as many benign prompts (the over-refusal
/// probes) as harmful ones (HarmBench and StrongREJECT in equal parts).
pub fn mixed_shares() -> SourceShares {
    SourceShares::weights([
        (Benchmark::HarmBench.name(), 1.0),
        (Benchmark::StrongReject.name(), 1.0),
        (Benchmark::OverRefusal.name(), 2.0),
    ])
}

/// The main job's default instances: `size` real prompts of [`MixtureSpec::harmful_and_benign`]
/// (the files `cargo xtask fetch-data` places under `data_dir`, default the deepconf cache), split
/// by [`mixed_shares`] and stratified over source and category with `seed`.
pub fn mixed_dataset(data_dir: Option<&Path>, size: usize, seed: u64) -> Result<Dataset> {
    let mixture = MixtureSpec::harmful_and_benign(data_dir).load()?;
    Ok(mixture.stratified_by_source(size, seed, &mixed_shares())?)
}
