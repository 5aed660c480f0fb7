//! The command line shared by the examples ([`EvalArgs`], flattened into each example's parser) and
//! the functions that turn it into a model, a classifier, instances and an [`Experiment`].

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use deepconf_analysis::{AnalysisOptions, analyze_run};
use deepconf_core::policy::PolicyConfig;
use deepconf_core::{LogprobModel, RunConfig, SamplingParams};
use deepconf_datasets::{Benchmark, Dataset, DatasetSpec, Instance};
use deepconf_records::{ClassifierInfo, DatasetInfo, ModelInfo, read_run};
use deepconf_refusal::{JudgeCountsHandle, RefusalClassifier};

use crate::experiment::{Experiment, ExperimentConfig};
use crate::judges::ClassifierArgs;
use crate::progress::ProgressMode;
use crate::seed::{Stratify, select_instances};
use crate::{Error, Result};

/// Which [`LogprobModel`] runs the prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// Local CPU inference with candle (default model: the embedded SmolLM2-135M Q4_1 GGUF).
    Candle,
    /// An OpenAI-compatible server (`--base-url`), e.g. vLLM or llama.cpp's server.
    Openai,
}

/// The sampling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyKind {
    /// `--traces` complete traces, majority vote.
    Fixed,
    /// `--traces` complete traces, keep the top `--keep-percent`% by lowest group confidence.
    Offline,
    /// DeepConf online: `--warmup` traces set the threshold, later traces are cut below it.
    Online,
    /// The prototype's schedule (3 warmup, batches of 3, up to `--traces`).
    Compat,
}

/// The refusal classifier that labels every trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClassifierKind {
    /// The normalising pattern classifier (fast, no model).
    Patterns,
    /// An LLM judge of its own (`--judge-model`, `--judge-format`).
    Judge,
    /// Patterns first, the judge when the pattern score is uncertain.
    Ensemble,
}

impl ClassifierKind {
    /// `patterns`, `judge` or `ensemble`.
    pub fn name(self) -> &'static str {
        match self {
            ClassifierKind::Patterns => "patterns",
            ClassifierKind::Judge => "judge",
            ClassifierKind::Ensemble => "ensemble",
        }
    }
}

/// The flags every evaluation example shares. Options left out take the example's [`Defaults`].
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Backend that generates the traces.
    #[arg(long, value_enum, default_value_t = BackendKind::Candle)]
    pub backend: BackendKind,
    /// Model: a GGUF file or checkpoint directory (candle; default: the embedded SmolLM2), `guarded`
    /// (the embedded SmolLM2 with the project's refusal-trained LoRA adapter; `cargo xtask
    /// fetch-model guarded`), or the served model's name (openai).
    #[arg(long)]
    pub model: Option<String>,
    /// A LoRA adapter directory in PEFT's format (`adapter_config.json` +
    /// `adapter_model.safetensors`) applied to the candle model, merged into Q8_0 weights at load.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Base URL of the OpenAI-compatible server, e.g. `http://127.0.0.1:8000/v1`. Repeat it for
    /// replicas of the same model behind no load balancer: a prompt's requests go to one replica
    /// (prefix-cache affinity), and one that fails rests while its prompts go to another.
    #[arg(long)]
    pub base_url: Vec<String>,
    /// Instances in flight at once (default: enough to fill the backend: the rows of candle's
    /// continuous batch, or the server's requests in flight).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Requests in flight at once to an OpenAI-compatible server (default 128).
    #[arg(long)]
    pub max_requests: Option<usize>,
    /// Retries of a failed request (connection error, timeout, 408, 429, 5xx, a stream cut short)
    /// before its instance is recorded as failed; waits grow exponentially with jitter and follow
    /// the server's `Retry-After`.
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,
    /// Benchmark file (CSV, parquet or JSONL); default: the benchmark's file in the deepconf cache
    /// or on the hub.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run at most this many instances (a seeded, stratified sample); 0 = all.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Traces per instance (the budget of online/compat policies).
    #[arg(long)]
    pub traces: Option<usize>,
    /// Sampling policy.
    #[arg(long, value_enum)]
    pub policy: Option<PolicyKind>,
    /// Percent of traces kept: 10 = DeepConf-low, 90 = DeepConf-high (offline and online).
    #[arg(long)]
    pub keep_percent: Option<f64>,
    /// Warmup traces of the online policy.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Consensus tau of the online policy: sampling stops once the confidence-weighted vote's
    /// share of the winner reaches it. A value above 1 is never reached, so the whole budget is
    /// sampled and only the confidence threshold cuts traces.
    #[arg(long)]
    pub consensus: Option<f64>,
    /// Sliding window of group confidence, in tokens.
    #[arg(long)]
    pub window: Option<usize>,
    /// The refusal classifier and its judge (`--classifier`, `--judge-*`).
    #[command(flatten)]
    pub classifier: ClassifierArgs,
    /// Maximum generated tokens per trace.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Sampling temperature.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Run seed: instance selection and every instance's sampling seed derive from it.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep every token's top-k log-probabilities in the trace records.
    #[arg(long)]
    pub store_logprobs: bool,
    /// Continue the run in `--out` (same flags), skipping finished instances.
    #[arg(long)]
    pub resume: bool,
    /// No progress bar (periodic log lines only).
    #[arg(long)]
    pub quiet: bool,
    /// Skip the analysis (report and plots) after the run; `analyze` can make it later.
    #[arg(long)]
    pub no_report: bool,
}

/// An example's defaults for the options a user leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// Name of the run (and of the default output directory `out/NAME`).
    pub name: &'static str,
    /// Instances (`None`: all).
    pub limit: Option<usize>,
    /// Traces per instance.
    pub traces: usize,
    /// Warmup traces (online).
    pub warmup: usize,
    /// Policy.
    pub policy: PolicyKind,
    /// Percent kept.
    pub keep_percent: f64,
    /// Consensus tau of the online policy (above 1: no consensus stop).
    pub consensus: f64,
    /// Maximum tokens per trace.
    pub max_tokens: usize,
    /// How instances are sampled when limited.
    pub stratify: Stratify,
}

impl Defaults {
    /// The README's main job, sized to finish in a few minutes on 2 CPU cores with the embedded
    /// model: 32 behaviours stratified over functional categories (16 standard, 8 contextual, 8
    /// copyright), DeepConf online with 4 warmup and at most 8 traces, 128 tokens per trace.
    pub fn harmbench() -> Self {
        Self {
            name: "harmbench",
            limit: Some(32),
            traces: 8,
            warmup: 4,
            policy: PolicyKind::Online,
            keep_percent: 10.0,
            consensus: 0.95,
            max_tokens: 128,
            stratify: Stratify::Category,
        }
    }

    /// A labelled benchmark with harmful and benign prompts (sample keeps the label ratio).
    pub fn labelled(name: &'static str) -> Self {
        Self {
            name,
            limit: Some(40),
            stratify: Stratify::Label,
            ..Self::harmbench()
        }
    }
}

/// The options resolved against an example's [`Defaults`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Run name.
    pub name: String,
    /// Instances to run (`None`: all).
    pub limit: Option<usize>,
    /// Policy, confidence and sampling settings (`sampling.seed` is the run seed).
    pub run: RunConfig,
    /// Output directory.
    pub out: PathBuf,
    /// How instances are sampled.
    pub stratify: Stratify,
}

impl EvalArgs {
    /// Resolves the flags against `defaults` and checks them.
    pub fn plan(&self, defaults: &Defaults) -> Result<Plan> {
        let traces = self.traces.unwrap_or(defaults.traces);
        let keep_percent = self.keep_percent.unwrap_or(defaults.keep_percent);
        let policy = match self.policy.unwrap_or(defaults.policy) {
            PolicyKind::Fixed => PolicyConfig::fixed(traces),
            PolicyKind::Offline => PolicyConfig::offline(traces, keep_percent),
            PolicyKind::Online => {
                let warmup = self.warmup.unwrap_or(defaults.warmup).min(traces);
                match PolicyConfig::online(warmup, traces, keep_percent) {
                    PolicyConfig::Online {
                        warmup_traces,
                        max_traces,
                        keep_percent,
                        batch_size,
                        voting,
                        ..
                    } => PolicyConfig::Online {
                        warmup_traces,
                        max_traces,
                        keep_percent,
                        consensus: self.consensus.unwrap_or(defaults.consensus),
                        batch_size,
                        voting,
                    },
                    other => other,
                }
            }
            PolicyKind::Compat => match PolicyConfig::compat() {
                PolicyConfig::Prototype {
                    warmup_traces,
                    batch_size,
                    percentile,
                    ..
                } => PolicyConfig::Prototype {
                    warmup_traces: warmup_traces.min(traces),
                    batch_size,
                    max_traces: traces,
                    percentile,
                },
                other => other,
            },
        };
        let mut run = RunConfig {
            policy,
            ..RunConfig::default()
        };
        if let Some(window) = self.window {
            run.confidence.window = window;
        }
        run.sampling = SamplingParams {
            max_tokens: self.max_tokens.unwrap_or(defaults.max_tokens),
            seed: self.seed,
            ..run.sampling
        };
        if let Some(t) = self.temperature {
            run.sampling.temperature = t;
        }
        run.validate()?;
        let limit = match self.limit.or(defaults.limit) {
            Some(0) => None,
            other => other,
        };
        Ok(Plan {
            name: defaults.name.to_string(),
            limit,
            run,
            out: self
                .out
                .clone()
                .unwrap_or_else(|| Path::new("out").join(defaults.name)),
            stratify: defaults.stratify,
        })
    }

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

/// What `run.json` records about a dataset: name, split, file name and checksum.
pub fn dataset_info(dataset: &Dataset, instances: usize) -> DatasetInfo {
    if !dataset.summary.sources.is_empty() {
        // A mixture: its sources by name, and each source file's checksum (in the same order).
        let sources: Vec<&str> = dataset.summary.sources.keys().map(String::as_str).collect();
        let checksums: Option<Vec<String>> = dataset
            .summary
            .sources
            .values()
            .map(|source| sha256_file(Path::new(&source.file)).ok())
            .collect();
        return DatasetInfo {
            name: "mixture".into(),
            split: Some(sources.join(" + ")),
            instances,
            sha256: checksums.map(|c| c.join(",")),
        };
    }
    let path = Path::new(&dataset.summary.file);
    DatasetInfo {
        name: dataset
            .summary
            .benchmark
            .map_or_else(|| "generic".into(), |b| b.name().to_string()),
        split: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        instances,
        sha256: sha256_file(path).ok(),
    }
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(Error::io(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(Error::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
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

/// A model ready to run, with what `run.json` records about it.
pub struct Backend {
    /// The model.
    pub model: Box<dyn LogprobModel>,
    /// Name, backend, source and checksum.
    pub info: ModelInfo,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("info", &self.info).finish()
    }
}

/// Builds the backend of `--backend`/`--model`/`--base-url`/`--max-requests`/`--max-retries`.
pub fn build_backend(args: &EvalArgs) -> Result<Backend> {
    build_model(args.backend, args.model.as_deref(), args)
}

/// The largest number of traces a policy starts at once ([`PolicyConfig::largest_batch`]).
pub fn policy_batch(policy: &PolicyConfig) -> usize {
    policy.largest_batch()
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The `--model` name of the embedded model with the project's guarded LoRA adapter.
pub const GUARDED_MODEL: &str = "guarded";

/// What `run.json` records about the adapter in `dir`: its name, checksum, how it is applied and
/// the recipe of its `training.json` (if it has one).
pub fn adapter_info(dir: &Path, applied: &str) -> Result<deepconf_records::AdapterInfo> {
    let weights = dir.join("adapter_model.safetensors");
    let training = dir.join("training.json");
    let recipe = match std::fs::read_to_string(&training) {
        Ok(text) => {
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::InvalidParameter {
                    parameter: "adapter",
                    value: training.display().to_string(),
                    reason: format!("not JSON: {e}"),
                })?;
            json!({
                "recipe": value.get("recipe").cloned().unwrap_or_default(),
                "produced_by": value.get("produced_by").cloned().unwrap_or_default(),
                "held_out": value.get("held_out_guarded").cloned().unwrap_or_default(),
            })
        }
        Err(_) => serde_json::Value::Null,
    };
    Ok(deepconf_records::AdapterInfo {
        name: file_name(dir),
        sha256: Some(sha256_file(&weights)?),
        applied: applied.to_string(),
        recipe,
    })
}

#[cfg(feature = "candle")]
fn build_candle(model: Option<&str>, adapter: Option<&Path>) -> Result<Backend> {
    use deepconf_candle::{CandleModel, LoraAdapter, ModelSource};
    let guarded = model == Some(GUARDED_MODEL);
    let path = match model {
        Some(name) if name != GUARDED_MODEL => PathBuf::from(name),
        _ => deepconf_candle::default_model_path(),
    };
    let adapter_dir = adapter
        .map(Path::to_path_buf)
        .or_else(|| guarded.then(deepconf_candle::lora::guarded_adapter_dir));
    let mut builder = CandleModel::builder().source(ModelSource::from_path(&path));
    let mut adapter_record = None;
    if let Some(dir) = &adapter_dir {
        if guarded && adapter.is_none() && !dir.is_dir() {
            return Err(Error::InvalidParameter {
                parameter: "model",
                value: GUARDED_MODEL.into(),
                reason: format!(
                    "the guarded adapter is not in {}; run `cargo xtask fetch-model guarded`",
                    dir.display()
                ),
            });
        }
        let lora =
            LoraAdapter::load(dir).map_err(|e| deepconf_core::Error::backend("candle", e))?;
        adapter_record = Some(adapter_info(dir, "merged q8_0")?);
        builder = builder.adapter(lora);
    }
    let loaded = builder
        .build()
        .map_err(|e| deepconf_core::Error::backend("candle", e))?;
    let sha256 = if path.is_file() {
        Some(sha256_file(&path)?)
    } else {
        None
    };
    Ok(Backend {
        info: ModelInfo {
            name: loaded.model_id(),
            backend: "candle".into(),
            source: file_name(&path),
            sha256,
            adapter: adapter_record,
        },
        model: Box::new(loaded),
    })
}

#[cfg(not(feature = "candle"))]
fn build_candle(_: Option<&str>, _: Option<&Path>) -> Result<Backend> {
    Err(Error::BackendUnavailable { backend: "candle" })
}

#[cfg(feature = "openai")]
fn build_openai(model: Option<&str>, args: &EvalArgs) -> Result<Backend> {
    let (base_url, replicas) =
        args.base_url
            .split_first()
            .ok_or_else(|| Error::InvalidParameter {
                parameter: "base-url",
                value: "(none)".into(),
                reason: "--backend openai needs --base-url, e.g. http://127.0.0.1:8000/v1".into(),
            })?;
    let name = model.ok_or_else(|| Error::InvalidParameter {
        parameter: "model",
        value: "(none)".into(),
        reason: "--backend openai needs --model, the served model's name".into(),
    })?;
    let mut builder =
        deepconf_openai::OpenAiModel::builder(base_url, name).max_retries(args.max_retries);
    if let Some(requests) = args.max_requests {
        builder = builder.max_concurrency(requests);
    }
    for replica in replicas {
        builder = builder.replica(replica);
    }
    // Policies that never cut a trace need no stream: a prompt's traces are then asked for in one
    // request (`n`), which vLLM and SGLang serve with one prefill.
    if matches!(args.policy, Some(PolicyKind::Fixed | PolicyKind::Offline)) {
        builder = builder.stream(false);
    }
    let loaded = builder
        .build()
        .map_err(|e| deepconf_core::Error::backend("openai", e))?;
    Ok(Backend {
        info: ModelInfo {
            name: name.to_string(),
            backend: "openai".into(),
            source: args.base_url.join(" "),
            sha256: None,
            adapter: None,
        },
        model: Box::new(loaded),
    })
}

#[cfg(not(feature = "openai"))]
fn build_openai(_: Option<&str>, _: &EvalArgs) -> Result<Backend> {
    Err(Error::BackendUnavailable { backend: "openai" })
}

fn build_model(kind: BackendKind, model: Option<&str>, args: &EvalArgs) -> Result<Backend> {
    match kind {
        BackendKind::Candle => build_candle(model, args.adapter.as_deref()),
        BackendKind::Openai if args.adapter.is_some() => Err(Error::InvalidParameter {
            parameter: "adapter",
            value: args
                .adapter
                .as_deref()
                .map_or_else(String::new, |p| p.display().to_string()),
            reason:
                "adapters are applied by the candle backend; a served model has its own weights"
                    .into(),
        }),
        BackendKind::Openai => build_openai(model, args),
    }
}

/// A refusal classifier ready to run, with what `run.json` records about it.
pub struct Classifier {
    /// The classifier.
    pub classifier: Box<dyn RefusalClassifier>,
    /// Its name and settings, as `run.json` records them.
    pub info: ClassifierInfo,
    /// The judge's calls, cache hits and parse errors, when there is a judge.
    pub judge_counts: Option<JudgeCountsHandle>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("info", &self.info)
            .finish()
    }
}

/// Builds the classifier of `--classifier` (loading or connecting the judge of `--judge-*` for
/// `judge` and `ensemble`; without `--judge-model` that is an error naming the flag).
pub fn build_classifier(args: &EvalArgs) -> Result<Classifier> {
    args.classifier.build(args.max_retries)
}
