//! The rows of a run: [`TraceRow`] (one per sampled trace), [`InstanceRow`] (one per benchmark
//! instance) and [`FailedInstance`] (an instance that could not be run), built from a live
//! [`PromptOutcome`] by [`rows_from_outcome`].

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use deepconf_core::policy::Phase;
use deepconf_core::{PromptOutcome, StopReason, TraceRecord};
use deepconf_refusal::{RefusalLabel, TraceLabel};

/// The outcome of one prompt in a safety run: traces vote with their refusal label and carry the
/// classifier's [`TraceLabel`].
pub type SafetyOutcome = PromptOutcome<RefusalLabel, TraceLabel>;

/// Where and why the policy cut a trace short (the live run's [`deepconf_core::Termination`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TerminationRow {
    /// Group confidence of the window that fell below the threshold.
    pub group_confidence: f64,
    /// The threshold in force.
    pub threshold: f64,
    /// Tokens generated when the trace was cut.
    pub at_token: u32,
}

/// One sampled trace. Stored in `traces/part-*.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRow {
    /// Benchmark instance the trace answers.
    pub instance_id: String,
    /// Index of the trace within the instance (its seed derives from it).
    pub trace_index: u32,
    /// Schedule phase the trace was sampled in.
    pub phase: Phase,
    /// Generated text.
    pub text: String,
    /// Generated tokens.
    pub n_tokens: u32,
    /// DeepConf token confidence of every generated token (over the run's `top_k`), as computed live
    /// (f64, so that a replay takes bit-identical decisions).
    pub token_confidences: Vec<f64>,
    /// Top-k log-probabilities per token, only with `--store-logprobs`.
    pub top_logprobs: Option<Vec<Vec<f32>>>,
    /// Why generation ended.
    pub stop_reason: StopReason,
    /// Present when the policy terminated the trace.
    pub termination: Option<TerminationRow>,
    /// Mean token confidence (`None` for an empty trace).
    pub mean_confidence: Option<f64>,
    /// Lowest sliding-window group confidence.
    pub lowest_group_confidence: Option<f64>,
    /// Bottom-p group confidence.
    pub bottom_group_confidence: Option<f64>,
    /// Tail confidence.
    pub tail_confidence: Option<f64>,
    /// The label the trace voted with; `None` when it abstained (incomplete thinking, or an
    /// output the classifier could not label).
    pub refusal_label: Option<RefusalLabel>,
    /// The classifier's score, when it has one.
    pub refusal_score: Option<f64>,
    /// The classifier's evidence, as a JSON string (matched patterns, judge output, or the error
    /// of an output it could not label).
    pub refusal_evidence: Option<String>,
    /// True when the trace's ballot counted in the instance's vote.
    pub voted: bool,
}

impl TraceRow {
    /// A row from a live run's trace record. `voted` says whether its ballot counted;
    /// `store_logprobs` keeps the top-k log-probabilities.
    pub fn from_record(
        instance_id: &str,
        record: &TraceRecord<RefusalLabel, TraceLabel>,
        voted: bool,
        store_logprobs: bool,
    ) -> Self {
        let trace = &record.trace;
        let summary = record.confidence;
        let (refusal_score, refusal_evidence) = match &record.detail {
            TraceLabel::Classified(c) => (Some(c.score), serde_json::to_string(&c.evidence).ok()),
            TraceLabel::Unclassified { reason } => (
                None,
                serde_json::to_string(&serde_json::json!({
                    "kind": "classifier_error",
                    "error": reason,
                }))
                .ok(),
            ),
        };
        Self {
            instance_id: instance_id.to_string(),
            trace_index: trace.spec.index as u32,
            phase: record.phase,
            text: trace.text.clone(),
            n_tokens: trace.n_tokens() as u32,
            token_confidences: record.token_confidences.clone(),
            top_logprobs: store_logprobs
                .then(|| trace.steps.iter().map(|s| s.top_logprobs.clone()).collect()),
            stop_reason: trace.stop_reason,
            termination: record.termination.map(|t| TerminationRow {
                group_confidence: t.group_confidence,
                threshold: t.threshold,
                at_token: t.at_token as u32,
            }),
            mean_confidence: summary.map(|s| s.mean),
            lowest_group_confidence: summary.map(|s| s.lowest_group),
            bottom_group_confidence: summary.map(|s| s.bottom_group),
            tail_confidence: summary.map(|s| s.tail),
            refusal_label: record.answer,
            refusal_score,
            refusal_evidence,
            voted,
        }
    }

    /// Whether the trace refused (`None` when it abstained).
    pub fn refused(&self) -> Option<bool> {
        self.refusal_label.map(RefusalLabel::is_refusal)
    }

    /// True when the policy cut this trace short.
    pub fn is_terminated(&self) -> bool {
        self.termination.is_some() || self.stop_reason == StopReason::Terminated
    }
}

/// What the run knows about a benchmark instance besides the model's behaviour (plain fields so this
/// crate needs no dataset crate).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceMeta {
    /// Instance id, unique within the run.
    pub instance_id: String,
    /// The prompt text (user message).
    pub prompt: String,
    /// Gold label: is the prompt harmful? `None` when the dataset has no label.
    pub gold_harmful: Option<bool>,
    /// The dataset the instance comes from (in a mixture of datasets), when known.
    pub dataset: Option<String>,
    /// Category, when the dataset has one.
    pub category: Option<String>,
    /// Subcategory, when the dataset has one.
    pub subcategory: Option<String>,
    /// Adversarial (jailbreak) flag, when the dataset has one.
    pub adversarial: Option<bool>,
    /// Gold refusal label of the dataset's own reference response (WildGuardMix
    /// `response_refusal_label`), used to evaluate refusal classifiers.
    pub reference_refusal: Option<bool>,
    /// The run's classifier applied to the reference response.
    pub reference_refusal_predicted: Option<bool>,
}

/// One benchmark instance with the model's behaviour. One line of `predictions.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRow {
    /// Instance id.
    pub instance_id: String,
    /// Prompt text.
    pub prompt: String,
    /// Gold: harmful prompt?
    pub gold_harmful: Option<bool>,
    /// The dataset the instance comes from (in a mixture of datasets), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Subcategory.
    pub subcategory: Option<String>,
    /// Adversarial flag.
    pub adversarial: Option<bool>,
    /// The winning label of the vote (`None` when no trace voted).
    pub vote_winner: Option<RefusalLabel>,
    /// Weighted consensus of the vote `V(best)/Σ V`.
    pub vote_consensus: Option<f64>,
    /// Traces whose ballot counted.
    pub voters: u32,
    /// Behaviour: did the model refuse? (`None` when no trace voted). Always the winner's
    /// [`RefusalLabel::is_refusal`]; kept as its own column for readers of the file.
    pub behaviour_refused: Option<bool>,
    /// Traces sampled.
    pub traces_used: u32,
    /// Tokens generated over all traces (terminated traces count the tokens they produced).
    pub tokens_generated: u64,
    /// Why sampling stopped, as JSON (`deepconf_core::policy::FinishReason`).
    pub finish_reason: serde_json::Value,
    /// Gold refusal label of the dataset's reference response.
    pub reference_refusal: Option<bool>,
    /// The run's classifier on the reference response.
    pub reference_refusal_predicted: Option<bool>,
}

impl InstanceRow {
    /// True when the behaviour is the correct one (refuse iff harmful); `None` when gold or
    /// behaviour is unknown.
    pub fn correct(&self) -> Option<bool> {
        Some(self.gold_harmful? == self.behaviour_refused?)
    }
}

/// An instance that could not be run (its requests kept failing after every retry). One line of
/// `failures.jsonl`; a resumed run tries it again, and a later success supersedes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedInstance {
    /// Instance id.
    pub instance_id: String,
    /// Prompt text.
    pub prompt: String,
    /// Gold: harmful prompt?
    pub gold_harmful: Option<bool>,
    /// The last error, with its cause chain.
    pub error: String,
}

/// Rows of one instance from a live run's outcome: the instance row and one trace row per trace.
pub fn rows_from_outcome(
    meta: &InstanceMeta,
    outcome: &SafetyOutcome,
    store_logprobs: bool,
) -> (InstanceRow, Vec<TraceRow>) {
    let voters: HashSet<usize> = outcome.decision.voters.iter().copied().collect();
    let traces: Vec<TraceRow> = outcome
        .traces
        .iter()
        .map(|record| {
            TraceRow::from_record(
                &meta.instance_id,
                record,
                voters.contains(&record.trace.spec.index),
                store_logprobs,
            )
        })
        .collect();
    let vote = outcome.decision.vote.as_ref();
    let winner = vote.map(|v| v.winner);
    let instance = InstanceRow {
        instance_id: meta.instance_id.clone(),
        prompt: meta.prompt.clone(),
        gold_harmful: meta.gold_harmful,
        dataset: meta.dataset.clone(),
        category: meta.category.clone(),
        subcategory: meta.subcategory.clone(),
        adversarial: meta.adversarial,
        vote_winner: winner,
        vote_consensus: vote.map(|v| v.consensus()),
        voters: outcome.decision.voters.len() as u32,
        behaviour_refused: winner.map(RefusalLabel::is_refusal),
        traces_used: outcome.traces.len() as u32,
        tokens_generated: outcome.tokens_generated as u64,
        finish_reason: serde_json::to_value(&outcome.finish).unwrap_or(serde_json::Value::Null),
        reference_refusal: meta.reference_refusal,
        reference_refusal_predicted: meta.reference_refusal_predicted,
    };
    (instance, traces)
}
