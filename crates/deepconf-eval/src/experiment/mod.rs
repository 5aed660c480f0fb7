//! [`Experiment`]: benchmark instances x model x policy x refusal classifier, written as a resumable
//! run directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use deepconf_core::{LogprobModel, RunConfig};
use deepconf_datasets::Instance;
use deepconf_records::{
    ClassifierInfo, DatasetInfo, MANIFEST_FILE, ModelInfo, PREDICTIONS_FILE, PartLimits,
    RunManifest, RunWriter,
};
use deepconf_refusal::RefusalClassifier;

mod engine;

use crate::progress::ProgressMode;
use crate::{Error, Result};

/// Everything that defines a run besides the model and the classifier objects; recorded in
/// `run.json` and compared field by field on `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentConfig {
    /// Run name (the example name, e.g. `harmbench`).
    pub name: String,
    /// Policy, confidence and sampling settings; `sampling.seed` is the run seed from which every
    /// instance's seed derives ([`instance_seed`](crate::instance_seed)).
    pub run: RunConfig,
    /// The model that is run.
    pub model: ModelInfo,
    /// The dataset the instances come from.
    pub dataset: DatasetInfo,
    /// The refusal classifier's name and settings.
    pub classifier: Option<ClassifierInfo>,
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
            classifier: None,
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
            concurrency: None,
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
    /// Instances run now and written.
    pub newly_run: usize,
    /// Instances that failed now (their requests kept failing after every retry): recorded in
    /// `failures.jsonl`, retried by `--resume`.
    pub failed: Vec<String>,
    /// False when the run stopped before every instance was tried ([`Experiment::stop_after`],
    /// an interrupt); `--resume` continues it.
    pub completed: bool,
    /// True when the run stopped because the interrupt flag was raised (Ctrl-C).
    pub interrupted: bool,
    /// Instances in flight at once.
    pub concurrency: usize,
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
/// classifier, and writes `run.json`, `traces/part-*.parquet`, `predictions.jsonl` (and
/// `failures.jsonl` when an instance fails) as instances finish.
///
/// Many instances are in flight at once ([`concurrency`](Self::concurrency)) when the backend
/// offers concurrent handles (a server's parallel requests, candle's continuous batch); records
/// are still written in the order of the instances, and the results do not depend on the
/// concurrency. Instances are the unit of work and of resumption: each instance samples with
/// [`instance_seed`](crate::instance_seed)`(run seed, instance id)`, so resuming (which skips
/// finished instances and retries failed ones) gives the same records as an uninterrupted run.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub(crate) config: ExperimentConfig,
    pub(crate) instances: Vec<Instance>,
    pub(crate) resume: bool,
    pub(crate) progress: ProgressMode,
    pub(crate) part_limits: PartLimits,
    pub(crate) stop_after: Option<usize>,
    pub(crate) concurrency: Option<usize>,
    pub(crate) interrupt: Option<Arc<AtomicBool>>,
}

impl Experiment {
    /// An experiment over `instances`.
    pub fn new(config: ExperimentConfig, instances: Vec<Instance>) -> Self {
        Self {
            config,
            instances,
            resume: false,
            progress: ProgressMode::Auto,
            part_limits: PartLimits::default(),
            stop_after: None,
            concurrency: None,
            interrupt: None,
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

    /// When a trace part file is written (default [`PartLimits::default`]: by rows, bytes or age).
    #[must_use]
    pub fn part_limits(mut self, limits: PartLimits) -> Self {
        self.part_limits = limits;
        self
    }

    /// A part file every `n` instances (and the default row, byte and age limits).
    #[must_use]
    pub fn instances_per_part(self, n: usize) -> Self {
        self.part_limits(PartLimits::instances(n))
    }

    /// Instances in flight at once (default: enough to fill the backend, see
    /// [`default_concurrency`]). A backend without concurrent handles runs one at a time.
    #[must_use]
    pub fn concurrency(mut self, instances: usize) -> Self {
        self.concurrency = Some(instances.max(1));
        self
    }

    /// A flag that stops the run cleanly when raised (a Ctrl-C handler sets it): no new instance
    /// starts, the ones in flight are abandoned, everything finished is written.
    #[must_use]
    pub fn interrupt_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.interrupt = Some(flag);
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

    /// The instances in flight at once with `model`: the configured concurrency (or the default
    /// for the backend), or 1 when the backend has no concurrent handles.
    pub fn effective_concurrency(&self, model: &dyn LogprobModel) -> usize {
        if model.concurrent_handle().is_none() {
            return 1;
        }
        self.concurrency
            .unwrap_or_else(|| default_concurrency(model, &self.config.run))
            .min(self.instances.len().max(1))
    }

    pub(crate) fn check(&self) -> Result<()> {
        self.config.run.validate()?;
        match first_duplicate(&self.instances) {
            Some((first, second)) => Err(Error::DuplicateInstance {
                id: self.instances[second].id.clone(),
                first,
                second,
            }),
            None => Ok(()),
        }
    }

    /// Opens the run directory: a fresh run, or (with resume) the existing one after checking that
    /// its configuration matches.
    pub(crate) fn open(&self, out_dir: &Path, concurrency: usize) -> Result<RunWriter> {
        let mut manifest = self.config.manifest();
        manifest.dataset.instances = self.instances.len();
        manifest.concurrency = Some(concurrency);
        let has_run = out_dir.join(PREDICTIONS_FILE).exists();
        if has_run && self.resume {
            let recorded = RunManifest::read(out_dir)?;
            compare_manifests(&out_dir.join(MANIFEST_FILE), &recorded, &manifest)?;
            return Ok(RunWriter::resume(out_dir, self.part_limits)?);
        }
        if has_run {
            return Err(Error::RunExists {
                path: out_dir.to_path_buf(),
            });
        }
        Ok(RunWriter::create(out_dir, &manifest, self.part_limits)?)
    }

    /// Runs every instance not yet finished in `out_dir` (failed ones are tried again).
    pub fn run(
        &self,
        model: &mut dyn LogprobModel,
        classifier: &mut dyn RefusalClassifier,
        out_dir: &Path,
    ) -> Result<RunReport> {
        engine::run(self, model, classifier, out_dir)
    }
}

/// The positions of the first repeated id (the earliest position whose id came before) and of its
/// first occurrence. Sorts positions by id rather than hashing the ids: a word per instance,
/// freed before the run starts.
fn first_duplicate(instances: &[Instance]) -> Option<(usize, usize)> {
    let mut order: Vec<usize> = (0..instances.len()).collect();
    let id = |position: usize| instances[position].id.as_str();
    // Stable: equal ids keep their positions in order.
    order.sort_by(|&a, &b| id(a).cmp(id(b)));
    order
        .windows(2)
        .filter(|pair| id(pair[0]) == id(pair[1]))
        .map(|pair| (pair[0], pair[1]))
        // Within a run of equal ids the first pair holds the first and second occurrence; a later
        // pair of the same run has a later second occurrence, so the minimum is still right.
        .min_by_key(|&(_, second)| second)
}

/// The default number of instances in flight: twice as many as fill the backend's concurrent
/// traces with the policy's largest batch, so that a new prompt is ready when rows free up.
pub fn default_concurrency(model: &dyn LogprobModel, run: &RunConfig) -> usize {
    let capacity = model.capabilities().max_concurrent_traces;
    let batch = run.policy.largest_batch().max(1);
    (2 * capacity.div_ceil(batch)).clamp(1, 256)
}

/// What identifies a run's results: its manifest without the fields that may differ between a
/// run and its resumption. Those are when it was made, crate versions, free-form extras, the
/// concurrency, and where the model and the judge were found (a server's URL may change between
/// runs; the model's name and checksum identify it) and where the judge's answers are cached.
fn identifying(manifest: &RunManifest) -> RunManifest {
    RunManifest {
        created_at: None,
        concurrency: None,
        versions: BTreeMap::new(),
        extra: serde_json::Value::Null,
        model: ModelInfo {
            source: String::new(),
            ..manifest.model.clone()
        },
        classifier: manifest
            .classifier
            .as_ref()
            .map(ClassifierInfo::identifying),
        ..manifest.clone()
    }
}

fn compare_manifests(path: &Path, recorded: &RunManifest, requested: &RunManifest) -> Result<()> {
    let to_value =
        |m: &RunManifest| serde_json::to_value(identifying(m)).unwrap_or(serde_json::Value::Null);
    let (a, b) = (to_value(recorded), to_value(requested));
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

    fn instances(ids: &[&str]) -> Vec<Instance> {
        ids.iter()
            .map(|id| Instance::user(*id, "p", None))
            .collect()
    }

    #[test]
    fn the_first_repeated_id_is_named_with_its_first_occurrence() {
        // `b` repeats at 3 before `a` repeats at 4; `b`'s first occurrence is 1.
        let list = instances(&["a", "b", "c", "b", "a", "b"]);
        assert_eq!(first_duplicate(&list), Some((1, 3)));
        let list = instances(&["z", "y", "x", "z"]);
        assert_eq!(first_duplicate(&list), Some((0, 3)));
        assert_eq!(first_duplicate(&instances(&["a", "b", "c"])), None);
        assert_eq!(first_duplicate(&[]), None);
    }

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
        // Where the judge was found and where its answers are cached may change.
        let judge = |source: &str, cache: &str| ClassifierInfo {
            name: "wildguard-judge(wg)".into(),
            kind: deepconf_records::ClassifierKind::Judge,
            extra_patterns: None,
            judge: Some(deepconf_records::JudgeInfo {
                format: deepconf_refusal::JudgeFormat::WildGuard,
                not_harmful: deepconf_refusal::NotHarmfulReading::Abstain,
                backend: "openai".into(),
                model: "wg".into(),
                source: source.into(),
                sha256: None,
                cache: Some(cache.into()),
            }),
            judge_all: None,
        };
        a.classifier = Some(judge("http://a", "x"));
        b.classifier = Some(judge("http://b", "y"));
        compare_manifests(Path::new("run.json"), &a, &b).unwrap();
        if let Some(info) = b.classifier.as_mut().and_then(|c| c.judge.as_mut()) {
            info.model = "llama-guard".into();
        }
        let err = compare_manifests(Path::new("run.json"), &a, &b).unwrap_err();
        assert!(err.to_string().contains("classifier.judge.model"), "{err}");
        b.classifier = a.classifier.clone();
        b.config.sampling.seed = 99;
        let err = compare_manifests(Path::new("run.json"), &a, &b).unwrap_err();
        assert!(err.to_string().contains("config.sampling.seed"), "{err}");
        assert!(err.to_string().contains("run.json"), "{err}");
    }
}
