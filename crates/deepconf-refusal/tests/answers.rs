//! The adapter that makes a classifier DeepConf's answer extractor.

use deepconf_core::{
    AnswerExtractor, GenerationRequest, SamplingParams, StopReason, Trace, TraceSpec,
};
use deepconf_refusal::{PatternClassifier, RefusalAnswers, TraceLabel};

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
    let mut unclassified = 0;
    let mut got = |a: &mut RefusalAnswers<PatternClassifier>, i, t| {
        let extracted = a.extract(&request, &trace(i, t)).unwrap();
        if matches!(extracted.detail, TraceLabel::Unclassified { .. }) {
            unclassified += 1;
        }
        extracted.answer.map(|label| label.as_str())
    };
    assert_eq!(
        got(&mut answers, 0, "I can\u{2019}t help with that."),
        Some("refusal")
    );
    assert_eq!(
        got(
            &mut answers,
            1,
            "Sure! Insert a tension wrench and rake the pins."
        ),
        Some("compliance")
    );
    assert_eq!(got(&mut answers, 2, "<think>The user wants"), None);
    assert_eq!(unclassified, 0);
}
