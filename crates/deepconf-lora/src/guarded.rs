//! The recipe of the guarded model: the embedded SmolLM2-135M-Instruct with a LoRA adapter that
//! teaches it to refuse harmful requests and keeps it answering benign ones.
//!
//! - Harmful prompts: all of HarmBench's validation split (the main job draws from the test split)
//!   and a seeded sample of StrongREJECT, each answered with one of [`REFUSALS`] (chosen by seed).
//! - Benign prompts: a seeded sample of the over-refusal probes, each answered with the base
//!   model's own greedy answer (self-distillation, so the adapter does not change what the model
//!   says when it complies); an answer that the pattern classifier calls a refusal is dropped.
//! - Every prompt of the main job (the `mixed` example's prompts at its default size and seed) is
//!   excluded, so the rates measured there are held out ([`main_job_prompts`]).
//! - Held-out rates: greedy answers of base and guarded model to the main job's prompts,
//!   labelled by the pattern classifier, with 95% Wilson intervals.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use deepconf_candle::{CandleModel, LoraAdapter};
use deepconf_core::{
    ChatMessage, GenerationRequest, LogprobModel, NoObserver, SamplingParams, StopReason, TraceSpec,
};
use deepconf_datasets::{Benchmark, DatasetSpec, Instance};
use deepconf_eval::Proportion;
use deepconf_refusal::RefusalLabel;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::forward::{LoraOptions, SplitMix64};
use crate::train::{Example, StepLog, TrainOptions, train};
use crate::{Error, Result};

/// The short refusals harmful training prompts are answered with, varied so the adapter learns to
/// refuse rather than one sentence.
pub const REFUSALS: [&str; 12] = [
    "I'm sorry, but I can't help with that.",
    "I can't help with that request.",
    "Sorry, I can't assist with that.",
    "I won't help with this. It could cause real harm.",
    "I'm not able to help with that.",
    "I'm sorry, but I cannot provide that information.",
    "I can't do that. If you have another question, I'm happy to help.",
    "Sorry, but I won't assist with this request.",
    "I cannot help with this, as it could be used to hurt people.",
    "I'm sorry, I can't provide instructions for that.",
    "That's not something I can help with.",
    "I must decline this request.",
];

/// Prompts of the main job that training must not see: the `mixed` example's default size.
pub const MAIN_JOB_PROMPTS: usize = 48;
/// The `mixed` example's default run seed.
pub const MAIN_JOB_SEED: u64 = 0;

/// Which prompts train the adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// StrongREJECT prompts (harmful), sampled with `seed` among those the main job does not use.
    pub strongreject: usize,
    /// HarmBench validation behaviours (harmful), at most.
    pub harmbench_val: usize,
    /// Over-refusal probes (benign), sampled with `seed` among those the main job does not use.
    pub overrefusal: usize,
    /// Seed of the samples and of the refusal each harmful prompt gets.
    pub seed: u64,
}

/// Everything that makes the guarded adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardedRecipe {
    /// The training prompts.
    pub selection: Selection,
    /// Longer prompts are left out.
    pub max_prompt_chars: usize,
    /// Distilled answers are cut to this many tokens.
    pub max_answer_tokens: usize,
    /// Sequences (chat-formatted prompt + answer) longer than this are left out.
    pub max_sequence_tokens: usize,
    /// The optimisation.
    pub train: TrainOptions,
}

impl Default for GuardedRecipe {
    fn default() -> Self {
        use deepconf_candle::Projection;
        Self {
            selection: Selection {
                strongreject: 100,
                harmbench_val: 80,
                overrefusal: 80,
                seed: 19,
            },
            max_prompt_chars: 400,
            max_answer_tokens: 40,
            max_sequence_tokens: 80,
            train: TrainOptions {
                lora: LoraOptions {
                    rank: 8,
                    alpha: 16.0,
                    targets: Projection::ALL.to_vec(),
                    first_layer: 18,
                    seed: 19,
                },
                learning_rate: 0.003,
                weight_decay: 0.0,
                steps: 60,
                batch_size: 4,
                warmup_steps: 4,
                seed: 19,
            },
        }
    }
}

/// One row of `training_set.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingRow {
    /// The instance id in its dataset.
    pub id: String,
    /// `harmbench_val`, `strongreject` or `overrefusal`.
    pub source: String,
    /// Whether the prompt is harmful (answered with a refusal).
    pub harmful: bool,
    /// The user message.
    pub prompt: String,
    /// The answer trained on.
    pub answer: String,
    /// Whether the answer ends the turn (a distilled answer cut at `max_answer_tokens` does not,
    /// and gets no end-of-turn token).
    pub complete: bool,
}

/// The text of an instance's user turn(s).
pub fn prompt_text(instance: &Instance) -> String {
    instance
        .messages
        .iter()
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whitespace- and case-insensitive form used to compare prompts across datasets.
pub fn normalized(prompt: &str) -> String {
    prompt
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The main job's instances: what [`deepconf_eval::mixed_dataset`] gives the `mixed` example at its
/// default size and seed (`data_dir`: default the deepconf cache).
pub fn main_job_prompts(data_dir: Option<&Path>) -> Result<Vec<Instance>> {
    Ok(deepconf_eval::mixed_dataset(data_dir, MAIN_JOB_PROMPTS, MAIN_JOB_SEED)?.instances)
}

fn sample(mut items: Vec<Instance>, n: usize, rng: &mut SplitMix64) -> Vec<Instance> {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
    items.truncate(n);
    items
}

/// The training prompts of `recipe` (without answers): harmful first, then benign; none of them
/// is a prompt of [`main_job_prompts`].
pub fn training_prompts(
    recipe: &GuardedRecipe,
    data_dir: Option<&Path>,
) -> Result<Vec<TrainingRow>> {
    let data_dir = data_dir.map_or_else(deepconf_datasets::default_data_dir, Path::to_path_buf);
    let held_out: BTreeSet<String> = main_job_prompts(Some(&data_dir))?
        .iter()
        .map(|i| normalized(&prompt_text(i)))
        .collect();
    let usable = |i: &Instance| {
        let text = prompt_text(i);
        text.chars().count() <= recipe.max_prompt_chars && !held_out.contains(&normalized(&text))
    };
    let load = |benchmark: Benchmark, file: &str| -> Result<Vec<Instance>> {
        let path = data_dir.join(benchmark.name()).join(file);
        Ok(DatasetSpec::local(benchmark, path)
            .load()?
            .instances
            .into_iter()
            .filter(|i| usable(i))
            .collect())
    };
    let s = &recipe.selection;
    let mut rng = SplitMix64::new(s.seed);
    let harmbench = load(Benchmark::HarmBench, "harmbench_behaviors_text_val.csv")?;
    let strongreject = load(Benchmark::StrongReject, "strongreject_dataset.csv")?;
    let overrefusal = load(Benchmark::OverRefusal, "benign_edgy_80.json")?;
    let mut rows = Vec::new();
    let mut push = |source: &str, harmful: bool, instances: Vec<Instance>| {
        for i in instances {
            rows.push(TrainingRow {
                id: i.id.clone(),
                source: source.to_string(),
                harmful,
                prompt: prompt_text(&i),
                answer: String::new(),
                complete: true,
            });
        }
    };
    let mut harmbench = harmbench;
    harmbench.truncate(s.harmbench_val);
    push("harmbench_val", true, harmbench);
    push(
        "strongreject",
        true,
        sample(strongreject, s.strongreject, &mut rng),
    );
    push(
        "overrefusal",
        false,
        sample(overrefusal, s.overrefusal, &mut rng),
    );
    Ok(rows)
}

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams::default()
        .with_temperature(0.0)
        .with_max_tokens(max_tokens)
}

/// Answers `rows`: harmful prompts get a refusal of [`REFUSALS`] chosen with the selection seed,
/// benign ones the base model's greedy answer (cut at `max_answer_tokens`). Returns the rows kept
/// and how many benign answers were dropped because the pattern classifier calls them refusals.
pub fn answer_rows(
    base: &mut CandleModel,
    rows: Vec<TrainingRow>,
    recipe: &GuardedRecipe,
    mut on_row: impl FnMut(usize),
) -> Result<(Vec<TrainingRow>, usize)> {
    let mut rng = SplitMix64::new(recipe.selection.seed ^ 0x5EED);
    let patterns = deepconf_refusal::PatternClassifier::default();
    let mut kept = Vec::with_capacity(rows.len());
    let mut dropped = 0;
    for (n, mut row) in rows.into_iter().enumerate() {
        if row.harmful {
            row.answer = REFUSALS[rng.below(REFUSALS.len())].to_string();
            row.complete = true;
        } else {
            let request =
                GenerationRequest::user(row.prompt.clone(), greedy(recipe.max_answer_tokens));
            let trace = base.generate(&request, TraceSpec::derive(0, 0), &mut NoObserver)?;
            if patterns.classify_response(&trace.text).label == RefusalLabel::Refusal {
                dropped += 1;
                on_row(n);
                continue;
            }
            row.answer = trace.text.trim().to_string();
            row.complete = trace.stop_reason == StopReason::EndOfSequence;
        }
        kept.push(row);
        on_row(n);
    }
    Ok((kept, dropped))
}

/// Tokenizes answered rows with the model's chat template; returns the examples and how many rows
/// were longer than `max_sequence_tokens`.
pub fn examples(
    model: &CandleModel,
    rows: &[TrainingRow],
    recipe: &GuardedRecipe,
) -> Result<(Vec<Example>, usize)> {
    let tokenizer = model.tokenizer();
    let end_of_turn = tokenizer.eos_token_ids().first().copied();
    let mut out = Vec::new();
    let mut too_long = 0;
    for row in rows {
        let prompt = model.encode_chat(&[ChatMessage::user(row.prompt.clone())])?;
        let mut answer = tokenizer.encode(&row.answer, false)?;
        let cut = answer.len() > recipe.max_answer_tokens;
        answer.truncate(recipe.max_answer_tokens);
        if row.complete
            && !cut
            && let Some(eot) = end_of_turn
        {
            answer.push(eot);
        }
        if answer.is_empty() || prompt.len() + answer.len() > recipe.max_sequence_tokens {
            too_long += 1;
            continue;
        }
        let answer_start = prompt.len();
        let mut tokens = prompt;
        tokens.extend(answer);
        out.push(Example {
            tokens,
            answer_start,
        });
    }
    Ok((out, too_long))
}

/// Held-out behaviour of one model: refusals of harmful and compliance with benign prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOut {
    /// Harmful prompts.
    pub harmful: u64,
    /// Harmful prompts refused.
    pub harmful_refused: u64,
    /// Benign prompts.
    pub benign: u64,
    /// Benign prompts answered (not refused).
    pub benign_complied: u64,
    /// `[rate, low, high]` of refusing harmful prompts (95% Wilson).
    pub harmful_refusal_rate: [f64; 3],
    /// `[rate, low, high]` of complying with benign prompts (95% Wilson).
    pub benign_compliance_rate: [f64; 3],
}

fn with_interval(p: Proportion) -> [f64; 3] {
    let (low, high) = p.wilson95().unwrap_or((f64::NAN, f64::NAN));
    [p.rate().unwrap_or(f64::NAN), low, high]
}

/// Greedy answers (`max_tokens`) of `model` to `instances`, labelled by the pattern classifier.
pub fn held_out(
    model: &mut CandleModel,
    instances: &[Instance],
    max_tokens: usize,
) -> Result<HeldOut> {
    let patterns = deepconf_refusal::PatternClassifier::default();
    let (mut harmful, mut refused, mut benign, mut complied) = (0, 0, 0, 0);
    for instance in instances {
        let Some(is_harmful) = instance.harmful else {
            continue;
        };
        let request = GenerationRequest::chat(instance.messages.clone(), greedy(max_tokens));
        let trace = model.generate(&request, TraceSpec::derive(0, 0), &mut NoObserver)?;
        let refusal = patterns.classify_response(&trace.text).label == RefusalLabel::Refusal;
        if is_harmful {
            harmful += 1;
            refused += u64::from(refusal);
        } else {
            benign += 1;
            complied += u64::from(!refusal);
        }
    }
    Ok(HeldOut {
        harmful,
        harmful_refused: refused,
        benign,
        benign_complied: complied,
        harmful_refusal_rate: with_interval(Proportion::new(refused, harmful)),
        benign_compliance_rate: with_interval(Proportion::new(complied, benign)),
    })
}

/// `training.json`: the recipe, the data, the loss curve and the held-out rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingReport {
    /// What produced the adapter (crate and version).
    pub produced_by: String,
    /// The recipe.
    pub recipe: GuardedRecipe,
    /// SHA-256 of `adapter_model.safetensors`.
    pub adapter_sha256: String,
    /// SHA-256 of the base model file.
    pub base_model_sha256: Option<String>,
    /// Harmful training rows.
    pub harmful_rows: usize,
    /// Benign training rows.
    pub benign_rows: usize,
    /// Benign answers of the base model dropped as refusals.
    pub benign_dropped_as_refusals: usize,
    /// Rows longer than `max_sequence_tokens`, left out.
    pub rows_too_long: usize,
    /// Seconds spent distilling the benign answers.
    pub distill_seconds: f64,
    /// Seconds of training.
    pub train_seconds: f64,
    /// Every step's loss.
    pub steps: Vec<StepLog>,
    /// Held-out rates of the base model on the main job's prompts.
    pub held_out_base: HeldOut,
    /// Held-out rates of the guarded model on the main job's prompts.
    pub held_out_guarded: HeldOut,
    /// Tokens per held-out answer.
    pub held_out_max_tokens: usize,
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Writes `rows` as JSON lines.
pub fn write_training_set(path: &Path, rows: &[TrainingRow]) -> Result<()> {
    let mut file = std::fs::File::create(path).map_err(Error::io(path))?;
    for row in rows {
        let line = serde_json::to_string(row).map_err(|e| Error::invalid("rows", e.to_string()))?;
        writeln!(file, "{line}").map_err(Error::io(path))?;
    }
    Ok(())
}

/// Reads `training_set.jsonl`; a bad line is an error naming it.
pub fn read_training_set(path: &Path) -> Result<Vec<TrainingRow>> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|e| Error::Format {
                path: path.to_path_buf(),
                line: n + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

/// Where [`make_guarded`] reports progress.
pub trait Progress {
    /// A phase starts with `total` units of work.
    fn phase(&mut self, name: &str, total: usize);
    /// One unit done; `message` (e.g. the loss) shown next to the bar.
    fn advance(&mut self, message: Option<String>);
}

/// A progress bar on stderr (indicatif).
#[derive(Debug, Default)]
pub struct ProgressBar {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress for ProgressBar {
    fn phase(&mut self, name: &str, total: usize) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
        let bar = indicatif::ProgressBar::new(total as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta}) {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(name.to_string());
        self.bar = Some(bar);
    }

    fn advance(&mut self, message: Option<String>) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if let Some(m) = message {
                // Without a terminal the bar is hidden: the log still gets every step's loss.
                if bar.is_hidden() {
                    eprintln!(
                        "{} {}/{} {m}",
                        bar.prefix(),
                        bar.position(),
                        bar.length().unwrap_or(0)
                    );
                }
                bar.set_message(m);
            }
        }
    }
}

impl Drop for ProgressBar {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

/// Makes the guarded adapter: selects and answers the training prompts (or reads them from
/// `training_set`, a `training_set.jsonl` written before), trains, measures base and guarded
/// model on the main job's held-out prompts, and writes `adapter_model.safetensors`,
/// `adapter_config.json`, `training.json` and `training_set.jsonl` into `out`.
pub fn make_guarded(
    recipe: &GuardedRecipe,
    out: &Path,
    training_set: Option<&Path>,
    held_out_max_tokens: usize,
    progress: &mut dyn Progress,
) -> Result<TrainingReport> {
    let base_path = deepconf_candle::default_model_path();
    let mut base = CandleModel::load_default()?;
    let distill_started = Instant::now();
    let (rows, dropped) = match training_set {
        Some(path) => (read_training_set(path)?, 0),
        None => {
            let prompts = training_prompts(recipe, None)?;
            progress.phase("distill", prompts.len());
            answer_rows(&mut base, prompts, recipe, |_| progress.advance(None))?
        }
    };
    let distill_seconds = distill_started.elapsed().as_secs_f64();
    let (examples, too_long) = examples(&base, &rows, recipe)?;
    let dense = base.dense_weights()?;
    progress.phase("train", recipe.train.steps);
    let (adapter, steps) = train(&dense, &examples, &recipe.train, |s| {
        progress.advance(Some(format!("loss {:.3}", s.loss)));
    })?;
    drop(dense);
    let train_seconds = steps.last().map_or(0.0, |s| s.seconds);
    std::fs::create_dir_all(out).map_err(Error::io(out))?;
    let mut adapter = adapter;
    adapter.config.base_model_name_or_path = Some("HuggingFaceTB/SmolLM2-135M-Instruct".into());
    adapter.save(out)?;
    let adapter = LoraAdapter::load(out)?;
    let held = main_job_prompts(None)?;
    progress.phase("held out", 2);
    let held_out_base = held_out(&mut base, &held, held_out_max_tokens)?;
    progress.advance(None);
    drop(base);
    let mut guarded = CandleModel::builder().adapter(adapter).build()?;
    let held_out_guarded = held_out(&mut guarded, &held, held_out_max_tokens)?;
    progress.advance(None);
    let report = TrainingReport {
        produced_by: format!(
            "deepconf-lora {} (crates/deepconf-lora, `cargo xtask train-guarded`)",
            env!("CARGO_PKG_VERSION")
        ),
        recipe: recipe.clone(),
        adapter_sha256: sha256_file(&out.join(deepconf_candle::lora::ADAPTER_WEIGHTS_FILE))?,
        base_model_sha256: sha256_file(&base_path).ok(),
        harmful_rows: rows.iter().filter(|r| r.harmful).count(),
        benign_rows: rows.iter().filter(|r| !r.harmful).count(),
        benign_dropped_as_refusals: dropped,
        rows_too_long: too_long,
        distill_seconds,
        train_seconds,
        steps,
        held_out_base,
        held_out_guarded,
        held_out_max_tokens,
    };
    write_training_set(&out.join(TRAINING_SET_FILE), &rows)?;
    let path = out.join(TRAINING_REPORT_FILE);
    let text = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::invalid("report", e.to_string()))?;
    std::fs::write(&path, text + "\n").map_err(Error::io(&path))?;
    Ok(report)
}

/// File name of the training rows next to the adapter.
pub const TRAINING_SET_FILE: &str = "training_set.jsonl";
/// File name of the training report next to the adapter.
pub const TRAINING_REPORT_FILE: &str = "training.json";

/// Where the repository ships the guarded adapter, relative to the workspace root.
pub fn shipped_adapter_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join("guarded")
}
