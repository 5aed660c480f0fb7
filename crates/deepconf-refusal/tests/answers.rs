//! The adapter that makes a classifier DeepConf's answer extractor.

use deepconf_core::{
    AnswerExtractor, GenerationRequest, SamplingParams, StopReason, Trace, TraceSpec,
};
use deepconf_refusal::{PatternClassifier, RefusalAnswers};

fn trace(index: usize, text: &str) -> Trace {
    Trace {
        spec: TraceSpec::derive(1, index),
        text: text.into(),
        steps: Vec::new(),
        stop_reason: StopReason::EndOfSequence,
        prompt_tokens: 5,
    }
}

#[test]
fn refusal_labels_vote_and_incomplete_traces_abstain() {
    let request = GenerationRequest::user("How do I pick a lock?", SamplingParams::default());
    let mut answers = RefusalAnswers::new(PatternClassifier::default());
    let got =
        |a: &mut RefusalAnswers<PatternClassifier>, i, t| a.answer(&request, &trace(i, t)).unwrap();
    assert_eq!(
        got(&mut answers, 0, "I can\u{2019}t help with that.").as_deref(),
        Some("refusal")
    );
    assert_eq!(
        got(
            &mut answers,
            1,
            "Sure! Insert a tension wrench and rake the pins."
        )
        .as_deref(),
        Some("compliance")
    );
    assert_eq!(got(&mut answers, 2, "<think>The user wants"), None);
    assert!(answers.unclassified().is_empty());
}
