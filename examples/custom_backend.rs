//! Run with: `cargo run --example custom_backend`
//!
//! What implementing `LogprobModel` takes: one method. The toy model below is deterministic per seed:
//! some traces refuse briefly and confidently, others ramble with flat (uncertain) distributions.
//! DeepConf online then cuts the rambling traces and stops sampling at consensus.
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

/// A quarter of the traces ramble (300 tokens), a quarter comply (40), half refuse (12).
fn toy_answer(spec: TraceSpec) -> (&'static str, usize) {
    match spec.seed % 4 {
        0 => ("well ", 300),
        1 => ("sure ", 40),
        _ => ("sorry ", 12),
    }
}

/// The top-`k` log-probabilities of token `i`, most likely first: candidate `j` has
/// `-(j * spread) - jitter - 0.05`. Every trace is confident for 8 tokens; ramblers then flatten
/// out (spread 0.3), the others stay peaked (spread 6).
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

/// DeepConf online keeping the top 50% (threshold: warmup median), with a budget of 32 traces and plain majority voting.
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

/// Runs one prompt under `policy` and returns the outcome.
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
