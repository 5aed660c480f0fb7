//! The command line shared by the examples: [`flags`] (clap's arguments), [`plan`] (the flags
//! resolved once against an example's defaults) and here the glue that builds the model and
//! classifier through the [factory](crate::factory), makes the [`Experiment`], runs it and
//! reports.

mod flags;
mod plan;

use serde_json::json;

use deepconf_analysis::{AnalysisOptions, analyze_run};
use deepconf_datasets::{Benchmark, Dataset, DatasetSpec, Instance};
use deepconf_records::{ClassifierInfo, ClassifierKind, read_run};
use deepconf_refusal::{Ensemble, PatternClassifier, PatternConfig, PatternSet, RefusalClassifier};

pub use flags::{ClassifierArgs, EvalArgs, JudgeFormatArg, NotHarmfulArg, PolicyKind};
pub use plan::{Defaults, Plan};

use crate::Result;
use crate::experiment::{Experiment, ExperimentConfig};
use crate::factory::Backend;
use crate::fingerprint::dataset_info;
use crate::judges::{BuiltJudge, Classifier};
use crate::progress::ProgressMode;
use crate::seed::select_instances;

impl EvalArgs {
    /// Runs `experiment` with this backend and classifier into `plan.out`, then analyses it once
    /// (writing the report and plots unless `--no-report`), and returns the printable summary: the
    /// table, failed instances, and where the report is. Ctrl-C stops the run cleanly (what is
    /// finished is written; `--resume` continues); a second Ctrl-C exits at once.
    pub fn run_and_report(
        &self,
        plan: &Plan,
        experiment: &Experiment,
        backend: &mut Backend,
        classifier: &mut Classifier,
    ) -> Result<Finished> {
        let interrupt = crate::interrupt::interrupt_flag();
        let experiment = experiment.clone().interrupt_flag(interrupt);
        let report = experiment.run(
            backend.model.as_mut(),
            classifier.classifier.as_mut(),
            &plan.out,
        )?;
        let mut text = format!(
            "{} instances ({} resumed, {} run now, {} failed), {} in flight: {} tokens in {:.1}s ({:.1} tok/s)\n",
            report.instances,
            report.resumed,
            report.newly_run,
            report.failed.len(),
            report.concurrency,
            report.tokens_generated,
            report.elapsed.as_secs_f64(),
            report.tokens_per_second()
        );
        if let Some(counts) = &classifier.judge_counts {
            text.push_str(&crate::judges::judge_summary(counts));
            text.push('\n');
        }
        if report.interrupted {
            text.push_str(&format!(
                "interrupted: what finished is written; run again with --resume to continue {}\n",
                plan.out.display()
            ));
        }
        let analysis = if self.no_report {
            let options = AnalysisOptions {
                plots: false,
                ..AnalysisOptions::default()
            };
            analyze_run(&read_run(&plan.out)?, &options)?
        } else {
            let (analysis, files) = crate::write_report(&plan.out)?;
            text.push_str(&analysis.summary_table());
            text.push_str(&format!(
                "report: {} (and {}), plots in {}\n",
                files.markdown.display(),
                files.html.display(),
                files.plots.display()
            ));
            let text = with_failures(text, &analysis);
            return Ok(Finished {
                report,
                analysis,
                text,
            });
        };
        text.push_str(&analysis.summary_table());
        let text = with_failures(text, &analysis);
        Ok(Finished {
            report,
            analysis,
            text,
        })
    }

    fn progress_mode(&self) -> ProgressMode {
        if self.quiet {
            ProgressMode::Quiet
        } else {
            ProgressMode::Auto
        }
    }

    /// Loads `benchmark` from `--data` or its default file.
    pub fn load_dataset(&self, benchmark: Benchmark) -> Result<Dataset> {
        let spec = match &self.data {
            Some(path) => DatasetSpec::local(benchmark, path),
            None => DatasetSpec::new(benchmark),
        };
        Ok(spec.load()?)
    }

    /// The [`Experiment`] of this plan over `dataset`: instances selected with the run seed, model and
    /// classifier recorded in the configuration, resumption and progress from the flags.
    pub fn experiment(
        &self,
        plan: &Plan,
        dataset: &Dataset,
        backend: &Backend,
        classifier: &Classifier,
    ) -> Result<Experiment> {
        let instances =
            select_instances(dataset, plan.limit, plan.run.sampling.seed, plan.stratify);
        Ok(self.experiment_over(plan, dataset, instances, backend, classifier))
    }

    /// Like [`experiment`](Self::experiment) over instances already selected.
    pub fn experiment_over(
        &self,
        plan: &Plan,
        dataset: &Dataset,
        instances: Vec<Instance>,
        backend: &Backend,
        classifier: &Classifier,
    ) -> Experiment {
        let mut config = ExperimentConfig::new(plan.name.clone(), plan.run.clone());
        config.model = backend.info.clone();
        config.dataset = dataset_info(dataset, instances.len());
        config.classifier = Some(classifier.info.clone());
        config.store_logprobs = self.store_logprobs;
        config
            .seeds
            .insert("instance_selection".into(), plan.run.sampling.seed);
        config.extra = json!({
            "command_line": std::env::args().collect::<Vec<_>>(),
            "stratify": format!("{:?}", plan.stratify),
            "limit": plan.limit,
        });
        let experiment = Experiment::new(config, instances)
            .resume(self.resume)
            .progress(self.progress_mode());
        match self.concurrency {
            Some(n) => experiment.concurrency(n),
            None => experiment,
        }
    }
}

/// What [`EvalArgs::run_and_report`] did: the engine's report, the run's analysis and the text to
/// print (shown by `Display`).
#[derive(Debug, Clone)]
pub struct Finished {
    /// What the engine did now.
    pub report: crate::RunReport,
    /// The analysis of the whole run directory.
    pub analysis: deepconf_analysis::Analysis,
    /// The summary: counts, rates, the metrics table, failed instances, where the report is.
    pub text: String,
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Lists the instances that failed (and are not done since) under the summary.
fn with_failures(mut text: String, analysis: &deepconf_analysis::Analysis) -> String {
    let failed = &analysis.run.failed;
    if failed.is_empty() {
        return text;
    }
    text.push_str(&format!(
        "{} instances failed (recorded in failures.jsonl; --resume retries them):\n",
        failed.len()
    ));
    for failure in failed.iter().take(10) {
        text.push_str(&format!("  {}: {}\n", failure.instance_id, failure.error));
    }
    if failed.len() > 10 {
        text.push_str(&format!("  ... and {} more\n", failed.len() - 10));
    }
    text
}

/// Builds the backend of `--backend`/`--model`/`--base-url`/`--max-requests`/`--max-retries`.
pub fn build_backend(args: &EvalArgs) -> Result<Backend> {
    args.model_spec()?.build()
}

/// Builds the classifier of `--classifier` (loading or connecting the judge of `--judge-*` for
/// `judge` and `ensemble`; without `--judge-model` that is an error naming the flag).
pub fn build_classifier(args: &EvalArgs) -> Result<Classifier> {
    args.classifier.build(args.max_retries)
}

impl ClassifierArgs {
    /// The pattern classifier: the built-in set, extended by `--patterns`.
    fn patterns(&self) -> Result<PatternClassifier> {
        let mut set = PatternSet::default();
        if let Some(path) = &self.patterns {
            set.extend(PatternSet::from_path(path)?);
        }
        Ok(PatternClassifier::new(set, PatternConfig::default())?)
    }

    /// Builds the classifier (loading or connecting the judge for `judge` and `ensemble`).
    pub fn build(&self, max_retries: u32) -> Result<Classifier> {
        let extra_patterns = self.patterns.as_ref().map(|p| p.display().to_string());
        let Some(spec) = self.judge_spec(max_retries)? else {
            let classifier = self.patterns()?;
            return Ok(Classifier {
                info: ClassifierInfo::patterns(classifier.name(), extra_patterns),
                classifier: Box::new(classifier),
                judge_counts: None,
            });
        };
        let BuiltJudge { judge, info } = spec.build()?;
        let counts = judge.counts_handle();
        Ok(match self.kind {
            ClassifierKind::Ensemble => {
                let ensemble =
                    Ensemble::new(self.patterns()?, judge).consult_always(self.judge_all);
                Classifier {
                    info: ClassifierInfo {
                        name: ensemble.name(),
                        kind: ClassifierKind::Ensemble,
                        extra_patterns,
                        judge: Some(info),
                        judge_all: Some(self.judge_all),
                    },
                    classifier: Box::new(ensemble),
                    judge_counts: Some(counts),
                }
            }
            _ => Classifier {
                info: ClassifierInfo {
                    name: judge.name(),
                    kind: ClassifierKind::Judge,
                    extra_patterns: None,
                    judge: Some(info),
                    judge_all: None,
                },
                classifier: Box::new(judge),
                judge_counts: Some(counts),
            },
        })
    }
}
