//! Run with: `cargo run --example custom_backend`
//!
//! What implementing `LogprobModel` takes: one method. The toy model below is deterministic per seed:
//! some traces refuse briefly and confidently, others ramble with flat (uncertain) distributions.
//! DeepConf online then cuts the rambling traces and stops sampling at consensus.
use deepconf_core::policy::{PolicyConfig, Voting};
use deepconf_core::{
    ChatMessage, GenerationRequest, LogprobModel, RunConfig, Runner, StopReason, TokenControl,
    TokenObserver, TokenStep, Trace, TraceSpec,
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
        // A quarter ramble (confident for 8 tokens, then uncertain), a quarter comply, half refuse.
        let (word, len, spread) = match spec.seed % 4 {
            0 => ("well ", 300, 0.3),
            1 => ("sure ", 40, 6.0),
            _ => ("sorry ", 12, 6.0),
        };
        let (mut steps, mut stop_reason) = (Vec::new(), StopReason::EndOfSequence);
        for i in 0..len.min(request.sampling.max_tokens) {
            let jitter = ((spec.seed >> 8) & 7) as f32 * 0.5; // per trace
            // Most likely first: candidate j has log-probability -(j * spread) - jitter - 0.05.
            let top_logprobs: Vec<f32> = (0..request.sampling.top_logprobs)
                .map(|j| -(j as f32 * if i < 8 { 6.0 } else { spread }) - jitter - 0.05)
                .collect();
            let step = TokenStep {
                token_id: Some(i as u32),
                text: word.into(),
                logprob: top_logprobs[0],
                top_logprobs,
                top_token_ids: vec![],
            };
            steps.push(step);
            if observer.on_token(&spec, steps.last().expect("just pushed")) == TokenControl::Stop {
                stop_reason = StopReason::Terminated;
                break;
            }
            if i + 1 == request.sampling.max_tokens {
                stop_reason = StopReason::MaxTokens;
            }
        }
        let text = steps.iter().map(|s| s.text.as_str()).collect();
        Ok(Trace {
            spec,
            text,
            steps,
            stop_reason,
            prompt_tokens: 5,
        })
    }
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
