//! [`Experiment`]: benchmark instances x model x policy x refusal classifier, written as a resumable
//! run directory.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use deepconf_analysis::records::{
    DatasetInfo, InstanceMeta, InstanceRow, MANIFEST_FILE, ModelInfo, PREDICTIONS_FILE,
    RunManifest, RunWriter, TraceClassification, rows_from_outcome,
};
use deepconf_core::{
    AnswerExtractor, GenerationRequest, LogprobModel, Role, RunConfig, Runner, Trace,
};
use deepconf_datasets::Instance;
use deepconf_refusal::{Classification, RefusalClassifier, RefusalLabel};

use crate::progress::{Progress, ProgressMode};
use crate::seed::instance_seed;
use crate::{Error, Result};

/// Instances per trace part file: a kill loses at most this many finished instances.
pub const DEFAULT_INSTANCES_PER_PART: usize = 4;

/// Everything that defines a run besides the model and the classifier objects; recorded in
/// `run.json` and compared field by field on `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentConfig {
    /// Run name (the example name, e.g. `harmbench`).
    pub name: String,
    /// Policy, confidence and sampling settings; `sampling.seed` is the run seed from which every
    /// instance's seed derives ([`instance_seed`]).
    pub run: RunConfig,
    /// The model that is run.
    pub model: ModelInfo,
    /// The dataset the instances come from.
    pub dataset: DatasetInfo,
    /// The refusal classifier's name and settings.
    pub classifier: serde_json::Value,
    /// Keep every token's top-k log-probabilities in `traces/` (`--store-logprobs`).
    pub store_logprobs: bool,
    /// Other seeds (e.g. instance selection).
    pub seeds: BTreeMap<String, u64>,
    /// Anything else worth keeping (the command line, ...); not compared on resume.
    pub extra: serde_json::Value,
}

impl ExperimentConfig {
    /// A configuration with unnamed model, dataset and classifier.
    pub fn new(name: impl Into<String>, run: RunConfig) -> Self {
        Self {
            name: name.into(),
            run,
            model: ModelInfo::default(),
            dataset: DatasetInfo::default(),
            classifier: serde_json::Value::Null,
            store_logprobs: false,
            seeds: BTreeMap::new(),
            extra: serde_json::Value::Null,
        }
    }

    /// The `run.json` manifest of this configuration.
    pub fn manifest(&self) -> RunManifest {
        let mut seeds = self.seeds.clone();
        seeds.insert("sampling".into(), self.run.sampling.seed);
        RunManifest {
            name: self.name.clone(),
            created_at: Some(crate::time::now_rfc3339()),
            model: self.model.clone(),
            dataset: self.dataset.clone(),
            config: self.run.clone(),
            classifier: self.classifier.clone(),
            seeds,
            versions: versions(),
            store_logprobs: self.store_logprobs,
            extra: self.extra.clone(),
        }
    }
}

/// Versions recorded in `run.json`.
pub fn versions() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("deepconf-eval".into(), env!("CARGO_PKG_VERSION").into()),
        (
            "target".into(),
            format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        ),
    ])
}

/// What [`Experiment::run`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// The run directory.
    pub out_dir: PathBuf,
    /// Instances of the run (selected).
    pub instances: usize,
    /// Instances found finished in the directory and skipped (`--resume`).
    pub resumed: usize,
    /// Instances run now.
    pub newly_run: usize,
    /// False when the run stopped early ([`Experiment::stop_after`]); `--resume` continues it.
    pub completed: bool,
    /// Tokens generated now (not counting resumed instances).
    pub tokens_generated: u64,
    /// Wall time of this call.
    pub elapsed: Duration,
}

impl RunReport {
    /// Tokens per second over this call's wall time.
    pub fn tokens_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.tokens_generated as f64 / secs
        } else {
            0.0
        }
    }
}

/// Runs benchmark instances through a model under a policy, labels every trace with a refusal
/// classifier, and writes `run.json`, `traces/part-*.parquet` and `predictions.jsonl` as instances
/// finish.
///
/// Instances are the unit of work and of resumption: each instance samples with
/// [`instance_seed`]`(run seed, instance id)`, so resuming (which skips finished instances) gives
/// the same records as an uninterrupted run.
#[derive(Debug, Clone)]
pub struct Experiment {
    config: ExperimentConfig,
    instances: Vec<Instance>,
    resume: bool,
    progress: ProgressMode,
    instances_per_part: usize,
    stop_after: Option<usize>,
}

impl Experiment {
    /// An experiment over `instances`.
    pub fn new(config: ExperimentConfig, instances: Vec<Instance>) -> Self {
        Self {
            config,
            instances,
            resume: false,
            progress: ProgressMode::Auto,
            instances_per_part: DEFAULT_INSTANCES_PER_PART,
            stop_after: None,
        }
    }

    /// Continue the run already in the output directory (its `run.json` must match).
    #[must_use]
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// How progress is shown.
    #[must_use]
    pub fn progress(mut self, mode: ProgressMode) -> Self {
        self.progress = mode;
        self
    }

    /// Instances per trace part file (default [`DEFAULT_INSTANCES_PER_PART`]).
    #[must_use]
    pub fn instances_per_part(mut self, n: usize) -> Self {
        self.instances_per_part = n;
        self
    }

    /// Stop as a kill would after `n` newly finished instances: the instances not yet flushed to a
    /// part file are lost and the run is left for `--resume`. For tests of resumption.
    #[must_use]
    pub fn stop_after(mut self, n: usize) -> Self {
        self.stop_after = Some(n);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &ExperimentConfig {
        &self.config
    }

    /// The instances.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    fn check(&self) -> Result<()> {
        self.config.run.validate()?;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, instance) in self.instances.iter().enumerate() {
            if let Some(first) = seen.insert(instance.id.as_str(), i) {
                return Err(Error::DuplicateInstance {
                    id: instance.id.clone(),
                    first,
                    second: i,
                });
            }
        }
        Ok(())
    }

    /// Opens the run directory: a fresh run, or (with resume) the existing one after checking that
    /// its configuration matches.
    fn open(&self, out_dir: &Path) -> Result<RunWriter> {
        let mut manifest = self.config.manifest();
        manifest.dataset.instances = self.instances.len();
        let has_run = out_dir.join(PREDICTIONS_FILE).exists();
        if has_run && self.resume {
            let recorded = RunManifest::read(out_dir)?;
            compare_manifests(&out_dir.join(MANIFEST_FILE), &recorded, &manifest)?;
            return Ok(RunWriter::resume(out_dir, self.instances_per_part)?);
        }
        if has_run {
            return Err(Error::RunExists {
                path: out_dir.to_path_buf(),
            });
        }
        Ok(RunWriter::create(
            out_dir,
            &manifest,
            self.instances_per_part,
        )?)
    }

    /// Runs every instance not yet finished in `out_dir`.
    pub fn run(
        &self,
        model: &mut dyn LogprobModel,
        classifier: &mut dyn RefusalClassifier,
        out_dir: &Path,
    ) -> Result<RunReport> {
        self.check()?;
        let started = Instant::now();
        let mut writer = self.open(out_dir)?;
        let resumed = self
            .instances
            .iter()
            .filter(|i| writer.is_done(&i.id))
            .count();
        let mut progress = Progress::new(
            self.progress,
            &self.config.name,
            self.instances.len(),
            resumed,
        );
        let mut newly_run = 0;
        let mut tokens_generated = 0u64;
        for instance in &self.instances {
            if writer.is_done(&instance.id) {
                continue;
            }
            if self.stop_after.is_some_and(|n| newly_run >= n) {
                progress.finish();
                // Dropping the writer without flushing is what a kill leaves behind.
                drop(writer);
                return Ok(RunReport {
                    out_dir: out_dir.to_path_buf(),
                    instances: self.instances.len(),
                    resumed,
                    newly_run,
                    completed: false,
                    tokens_generated,
                    elapsed: started.elapsed(),
                });
            }
            let (row, traces) = self.run_instance(model, classifier, instance, &mut progress)?;
            tokens_generated += row.tokens_generated;
            writer.push(row, traces)?;
            newly_run += 1;
            progress.on_instance(newly_run, resumed);
        }
        writer.finish()?;
        progress.finish();
        Ok(RunReport {
            out_dir: out_dir.to_path_buf(),
            instances: self.instances.len(),
            resumed,
            newly_run,
            completed: true,
            tokens_generated,
            elapsed: started.elapsed(),
        })
    }

    fn run_instance(
        &self,
        model: &mut dyn LogprobModel,
        classifier: &mut dyn RefusalClassifier,
        instance: &Instance,
        progress: &mut Progress,
    ) -> Result<(InstanceRow, Vec<deepconf_analysis::records::TraceRow>)> {
        let mut config = self.config.run.clone();
        config.sampling.seed = instance_seed(self.config.run.sampling.seed, &instance.id);
        let runner = Runner::new(config)?;
        let mut answers = RecordingAnswers::new(classifier);
        let mut on_token = |_: &deepconf_core::TraceSpec, _: &deepconf_core::TokenStep| {
            progress.on_token();
        };
        let outcome = runner.run_with_progress(
            model,
            &instance.messages,
            &mut answers,
            Some(&mut on_token),
        )?;
        let classifications: Vec<TraceClassification> = outcome
            .traces
            .iter()
            .map(|t| answers.take(t.trace.spec.index))
            .collect();
        let reference_refusal_predicted =
            match (&instance.reference_response, instance.reference_refusal) {
                (Some(response), Some(_)) => {
                    match answers
                        .classifier
                        .classify(instance.user_prompt(), response)
                    {
                        Ok(c) => match c.label {
                            RefusalLabel::Refusal => Some(true),
                            RefusalLabel::Compliance => Some(false),
                            _ => None,
                        },
                        Err(deepconf_refusal::Error::Model(e)) => return Err(e.into()),
                        Err(_) => None,
                    }
                }
                _ => None,
            };
        let meta = InstanceMeta {
            instance_id: instance.id.clone(),
            prompt: instance.user_prompt().to_string(),
            gold_harmful: instance.harmful,
            category: instance.category.clone(),
            subcategory: instance.subcategory.clone(),
            adversarial: instance.adversarial,
            reference_refusal: instance.reference_refusal,
            reference_refusal_predicted,
        };
        Ok(rows_from_outcome(
            &meta,
            &outcome,
            &self.config.run.confidence,
            self.config.store_logprobs,
            &classifications,
        ))
    }
}

/// The answer extractor of a run: labels each trace with the classifier and keeps the score and
/// evidence for the trace records.
struct RecordingAnswers<'a> {
    classifier: &'a mut dyn RefusalClassifier,
    details: HashMap<usize, TraceClassification>,
}

impl<'a> RecordingAnswers<'a> {
    fn new(classifier: &'a mut dyn RefusalClassifier) -> Self {
        Self {
            classifier,
            details: HashMap::new(),
        }
    }

    fn take(&mut self, trace_index: usize) -> TraceClassification {
        self.details.remove(&trace_index).unwrap_or_default()
    }
}

fn evidence_json(classification: &Classification) -> Option<String> {
    serde_json::to_string(&classification.evidence).ok()
}

impl AnswerExtractor for RecordingAnswers<'_> {
    fn answer(
        &mut self,
        request: &GenerationRequest,
        trace: &Trace,
    ) -> deepconf_core::Result<Option<String>> {
        let prompt = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str());
        let (answer, detail) = match self.classifier.classify(prompt, &trace.text) {
            Ok(c) => {
                let detail = TraceClassification {
                    refused: match c.label {
                        RefusalLabel::Refusal => Some(true),
                        RefusalLabel::Compliance => Some(false),
                        _ => None,
                    },
                    score: Some(c.score),
                    evidence: evidence_json(&c),
                };
                // An incomplete answer (unclosed thinking) abstains from the vote.
                let answer = (c.label != RefusalLabel::Incomplete).then(|| c.label.as_str().into());
                (answer, detail)
            }
            Err(deepconf_refusal::Error::Model(e)) => return Err(e),
            Err(e) => (
                None,
                TraceClassification {
                    refused: None,
                    score: None,
                    evidence: serde_json::to_string(&serde_json::json!({
                        "kind": "classifier_error",
                        "error": e.to_string(),
                    }))
                    .ok(),
                },
            ),
        };
        self.details.insert(trace.spec.index, detail);
        Ok(answer)
    }
}

/// Fields of `run.json` that may differ between a run and its resumption.
const NOT_COMPARED: [&str; 3] = ["created_at", "extra", "versions"];

fn compare_manifests(path: &Path, recorded: &RunManifest, requested: &RunManifest) -> Result<()> {
    let to_value = |m: &RunManifest| serde_json::to_value(m).unwrap_or(serde_json::Value::Null);
    let (mut a, mut b) = (to_value(recorded), to_value(requested));
    for field in NOT_COMPARED {
        for value in [&mut a, &mut b] {
            if let Some(object) = value.as_object_mut() {
                object.remove(field);
            }
        }
    }
    match first_difference("", &a, &b) {
        None => Ok(()),
        Some((field, recorded, requested)) => Err(Error::ResumeMismatch {
            path: path.to_path_buf(),
            field,
            recorded,
            requested,
        }),
    }
}

/// The dotted path and both values of the first leaf where `a` and `b` differ.
fn first_difference(
    prefix: &str,
    a: &serde_json::Value,
    b: &serde_json::Value,
) -> Option<(String, String, String)> {
    use serde_json::Value;
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|key| {
                let null = Value::Null;
                first_difference(
                    &join(key),
                    x.get(key).unwrap_or(&null),
                    y.get(key).unwrap_or(&null),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(&join(&i.to_string()), p, q)),
        _ if a == b => None,
        _ => Some((
            if prefix.is_empty() {
                "(root)".into()
            } else {
                prefix.to_string()
            },
            a.to_string(),
            b.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_difference_names_the_nested_field() {
        let a = json!({"config": {"policy": {"kind": "online", "max_traces": 8}}, "name": "x"});
        let b = json!({"config": {"policy": {"kind": "online", "max_traces": 16}}, "name": "x"});
        let (field, left, right) = first_difference("", &a, &b).unwrap();
        assert_eq!(field, "config.policy.max_traces");
        assert_eq!((left.as_str(), right.as_str()), ("8", "16"));
        assert_eq!(first_difference("", &a, &a), None);
    }

    #[test]
    fn compare_ignores_creation_time_and_versions() {
        let config = ExperimentConfig::new("t", RunConfig::default());
        let mut a = config.manifest();
        let mut b = config.manifest();
        a.created_at = Some("2020-01-01T00:00:00Z".into());
        b.versions.insert("x".into(), "y".into());
        compare_manifests(Path::new("run.json"), &a, &b).unwrap();
        b.config.sampling.seed = 99;
        let err = compare_manifests(Path::new("run.json"), &a, &b).unwrap_err();
        assert!(err.to_string().contains("config.sampling.seed"), "{err}");
        assert!(err.to_string().contains("run.json"), "{err}");
    }
}
