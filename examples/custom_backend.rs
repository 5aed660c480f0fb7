//! Run with: `cargo run --example custom_backend`
//!
//! What implementing `LogprobModel` takes: one method. The toy model below is deterministic per
//! seed: half its traces refuse ("sorry", 12 tokens), a quarter comply ("sure", 40 tokens) and a
//! quarter ramble ("well", cut at `max_tokens` = 256). Every trace is confident for its first 8
//! tokens; ramblers then go flat. A seed-dependent jitter shifts all of a trace's log-probabilities
//! down by 0 to 3.5, so some refusals and compliances are a little less confident than others.
//!
//! `main` runs the same prompt under two policies and prints every trace:
//! - fixed-32 samples 32 full traces (2,748 tokens), all of which vote: refusal wins.
//! - DeepConf online (8 warmup traces, keep 50%, window 8, budget 32) sets its threshold at the
//!   median lowest-group confidence of the warmup (58.05), then samples in batches of 4. A trace
//!   whose first full window falls below the threshold is cut: the 6 ramblers among the 24 later
//!   traces at token 9 (their first flat token), and also 5 refusals and compliances whose jitter
//!   puts them just under the threshold, at token 8. The 8 warmup traces and the 13 later traces
//!   that finish vote (majority): refusal with 13 of 21, a consensus of 0.62, short of the 0.95
//!   that would stop sampling, so the run spends its budget of 32 traces: 1,218 tokens, 44% of
//!   fixed-32's, for the same answer.
//!
//! `tests/examples.rs` pins these numbers.
use deepconf_core::policy::{PolicyConfig, Voting};
use deepconf_core::{
    ChatMessage, GenerationRequest, LogprobModel, RunConfig, Runner, StopReason, TokenObserver,
    Trace, TraceBuilder, TraceSpec,
};

/// A toy model: the seed decides whether a trace refuses, complies, or rambles (uncertain).
#[derive(Debug)]
pub struct ToyModel;

impl LogprobModel for ToyModel {
    fn generate(
        &mut self,
        request: &GenerationRequest,
        spec: TraceSpec,
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Trace> {
        // The builder calls the observer, cuts the top-k list and sets the stop reason.
        let mut trace = TraceBuilder::new(request, spec, observer).with_prompt_tokens(5);
        let (word, len) = toy_answer(spec);
        for i in 0..len {
            let top = toy_logprobs(spec, i, request.sampling.top_logprobs);
            if trace
                .push_token(Some(i as u32), word, top[0], top)?
                .is_stop()
            {
                break;
            }
        }
        Ok(trace.finish(StopReason::EndOfSequence))
    }
}

/// A quarter of the traces ramble (300 tokens, so `max_tokens` ends them), a quarter comply (40),
/// half refuse (12).
fn toy_answer(spec: TraceSpec) -> (&'static str, usize) {
    match spec.seed % 4 {
        0 => ("well ", 300),
        1 => ("sure ", 40),
        _ => ("sorry ", 12),
    }
}

/// The top-`k` log-probabilities of token `i`, most likely first: candidate `j` has
/// `-(j * spread) - jitter - 0.05`, the sampled token is candidate 0. Every trace is confident for
/// 8 tokens; ramblers then flatten out (spread 0.3), the others stay peaked (spread 6). The jitter
/// (0 to 3.5 by the seed) lowers a whole trace's confidence.
fn toy_logprobs(spec: TraceSpec, i: usize, k: usize) -> Vec<f32> {
    let spread = if i < 8 || !spec.seed.is_multiple_of(4) {
        6.0
    } else {
        0.3
    };
    let jitter = ((spec.seed >> 8) & 7) as f32 * 0.5;
    (0..k)
        .map(|j| -(j as f32 * spread) - jitter - 0.05)
        .collect()
}

/// The toy answer extractor: a trace that says "sorry" refuses.
pub fn refusal_label(trace: &Trace) -> Option<String> {
    Some(
        if trace.text.starts_with("sorry") {
            "refusal"
        } else {
            "compliance"
        }
        .to_string(),
    )
}

/// DeepConf online keeping the top 50% (threshold: warmup median), with a budget of 32 traces and
/// plain majority voting.
pub fn online_policy() -> PolicyConfig {
    PolicyConfig::Online {
        warmup_traces: 8,
        max_traces: 32,
        keep_percent: 50.0,
        consensus: 0.95,
        batch_size: 4,
        voting: Voting::Majority,
    }
}

/// Runs one prompt under `policy` (window 8, at most 256 tokens per trace) and returns the
/// outcome.
pub fn run_policy(policy: PolicyConfig) -> deepconf_core::Result<deepconf_core::PromptOutcome> {
    let mut config = RunConfig {
        policy,
        ..RunConfig::default()
    };
    config.sampling.max_tokens = 256;
    config.confidence.window = 8;
    let messages = [ChatMessage::user("How do I pick a lock?")];
    Runner::new(config)?.run(&mut ToyModel, &messages, &mut refusal_label)
}

#[allow(dead_code)] // `main` is unused when the integration tests include this file.
fn main() -> deepconf_core::Result<()> {
    for (name, policy) in [
        ("fixed-32", PolicyConfig::fixed(32)),
        ("online", online_policy()),
    ] {
        let outcome = run_policy(policy)?;
        println!(
            "{name}: answer {:?}, {} traces, {} tokens, finish {:?}",
            outcome.answer(),
            outcome.traces.len(),
            outcome.tokens_generated,
            outcome.finish
        );
        for r in &outcome.traces {
            println!(
                "  trace {:2} {:?}: {} tokens, {}, lowest group {:.2}",
                r.trace.spec.index,
                r.phase,
                r.trace.n_tokens(),
                r.trace.stop_reason.as_str(),
                r.confidence.map_or(0.0, |c| c.lowest_group)
            );
        }
    }
    Ok(())
}
