//! The flags: [`EvalArgs`], flattened into each example's parser, and the classifier flags
//! ([`ClassifierArgs`]) shared with the examples that score or re-score without a model under
//! test. Nothing here applies a default that depends on the example; [`plan`](super::plan) does.

use std::path::PathBuf;

use deepconf_records::ClassifierKind;
use deepconf_refusal::{JudgeFormat, NotHarmfulReading};

use crate::factory::BackendKind;

/// The sampling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyKind {
    /// `--traces` complete traces, majority vote.
    Fixed,
    /// `--traces` complete traces, keep the top `--keep-percent`% by lowest group confidence.
    Offline,
    /// DeepConf online: `--warmup` traces set the threshold, later traces are cut below it.
    Online,
    /// The Python prototype's schedule (3 warmup, batches of 3, up to `--traces`); `compat`, its
    /// earlier name, is still accepted, and records keep writing its kind as `compat`.
    #[value(alias = "compat")]
    Prototype,
}

/// The flags every evaluation example shares. Options left out take the example's [`Defaults`](crate::Defaults).
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

/// `--classifier`: clap's face of [`ClassifierKind`], the records' one list of kinds (a foreign
/// type cannot derive `clap::ValueEnum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClassifierKindArg(pub(crate) ClassifierKind);

impl clap::ValueEnum for ClassifierKindArg {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            ClassifierKindArg(ClassifierKind::Patterns),
            ClassifierKindArg(ClassifierKind::Judge),
            ClassifierKindArg(ClassifierKind::Ensemble),
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let help = match self.0 {
            ClassifierKind::Patterns => "The normalising pattern classifier (fast, no model)",
            ClassifierKind::Judge => "An LLM judge of its own (`--judge-model`, `--judge-format`)",
            ClassifierKind::Ensemble => {
                "Patterns first, the judge when the pattern score is uncertain"
            }
        };
        Some(clap::builder::PossibleValue::new(self.0.name()).help(help))
    }
}

/// The parser of `--classifier`: the wrapper's values, unwrapped.
fn classifier_kind() -> impl clap::builder::TypedValueParser<Value = ClassifierKind> {
    use clap::builder::TypedValueParser;
    clap::builder::EnumValueParser::<ClassifierKindArg>::new().map(|kind| kind.0)
}

/// `--judge-format`: the judge's published format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JudgeFormatArg {
    /// WildGuard's three lines (`allenai/wildguard`).
    Wildguard,
    /// The HarmBench classifier's yes/no (`cais/HarmBench-Llama-2-13b-cls`).
    Harmbench,
    /// Llama Guard 3's safe/unsafe and categories (`meta-llama/Llama-Guard-3-8B`).
    LlamaGuard,
}

impl From<JudgeFormatArg> for JudgeFormat {
    fn from(arg: JudgeFormatArg) -> Self {
        match arg {
            JudgeFormatArg::Wildguard => JudgeFormat::WildGuard,
            JudgeFormatArg::Harmbench => JudgeFormat::HarmBench,
            JudgeFormatArg::LlamaGuard => JudgeFormat::LlamaGuard3,
        }
    }
}

/// `--judge-not-harmful`: what a harm judge's "not harmful" answer becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NotHarmfulArg {
    /// No label: the trace abstains (only harmful compliance is labelled).
    Abstain,
    /// A refusal (the attack-success convention; for all-harmful benchmarks).
    Refusal,
}

impl From<NotHarmfulArg> for NotHarmfulReading {
    fn from(arg: NotHarmfulArg) -> Self {
        match arg {
            NotHarmfulArg::Abstain => NotHarmfulReading::Abstain,
            NotHarmfulArg::Refusal => NotHarmfulReading::Refusal,
        }
    }
}

/// The classifier flags, shared by the evaluation examples (flattened into [`EvalArgs`]
/// (crate::EvalArgs)) and the ones that re-score or score without a model under test.
#[derive(Debug, Clone, clap::Args)]
pub struct ClassifierArgs {
    /// Refusal classifier.
    #[arg(long = "classifier", value_parser = classifier_kind(), default_value = "patterns")]
    pub kind: ClassifierKind,
    /// Where the judge runs (default: openai when --judge-base-url is given, else candle).
    #[arg(long, value_enum)]
    pub judge_backend: Option<BackendKind>,
    /// Base URL of the judge's OpenAI-compatible server, e.g. `http://127.0.0.1:8001/v1`; repeat
    /// it for replicas.
    #[arg(long)]
    pub judge_base_url: Vec<String>,
    /// The judge model, needed by `--classifier judge|ensemble`: a GGUF file or checkpoint
    /// directory (candle), or the served model's name (openai). The model under test never
    /// judges itself.
    #[arg(long)]
    pub judge_model: Option<String>,
    /// The judge's published prompt and answer format.
    #[arg(long, value_enum, default_value_t = JudgeFormatArg::Wildguard)]
    pub judge_format: JudgeFormatArg,
    /// What a HarmBench `No` or a Llama Guard `safe` becomes: no label (the trace abstains) or a
    /// refusal (the attack-success convention, for benchmarks whose prompts are all harmful).
    #[arg(long, value_enum, default_value_t = NotHarmfulArg::Abstain)]
    pub judge_not_harmful: NotHarmfulArg,
    /// The judge's answer cache (JSON lines); default `<cache>/judges/<judge>.jsonl`.
    #[arg(long)]
    pub judge_cache: Option<PathBuf>,
    /// Requests in flight at once to the judge's server (default 128).
    #[arg(long)]
    pub judge_max_requests: Option<usize>,
    /// Ensemble: ask the judge about every answer, not only the uncertain ones, so that the
    /// agreement of the two stages covers them all (labels still follow the band).
    #[arg(long)]
    pub judge_all: bool,
    /// A JSON pattern set appended to the built-in patterns (patterns and ensemble).
    #[arg(long)]
    pub patterns: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        classifier: ClassifierArgs,
    }

    #[test]
    fn classifier_kinds_are_the_records_kinds() {
        for kind in [
            ClassifierKind::Patterns,
            ClassifierKind::Judge,
            ClassifierKind::Ensemble,
        ] {
            let cli = Cli::try_parse_from(["x", "--classifier", kind.name()]).unwrap();
            assert_eq!(cli.classifier.kind, kind);
        }
        let default = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(default.classifier.kind, ClassifierKind::Patterns);
        assert!(Cli::try_parse_from(["x", "--classifier", "regex"]).is_err());
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("[default: patterns]") && help.contains("Patterns first, the judge"),
            "{help}"
        );
    }
}
