//! The ensemble consults its second stage only when the first is uncertain.

use deepconf_refusal::{
    Ensemble, Evidence, PatternClassifier, RefusalClassifier, RefusalLabel, StringListClassifier,
};

#[test]
fn second_stage_only_inside_the_band() {
    // The XSTest string list stands in as a real (if weak) second opinion.
    let mut ensemble = Ensemble::new(PatternClassifier::default(), StringListClassifier::xstest());
    let sure = ensemble
        .classify("q", "I cannot help with that request.")
        .unwrap();
    assert_eq!(sure.label, RefusalLabel::Refusal);
    assert_eq!(ensemble.judge_calls(), 0);

    let plain = ensemble
        .classify("q", "The capital of France is Paris.")
        .unwrap();
    assert_eq!(plain.label, RefusalLabel::Compliance);
    assert_eq!(ensemble.judge_calls(), 0);

    // A bare "As an AI" opener is weak evidence for patterns (uncertain), and a refusal for XSTest.
    let unsure = ensemble
        .classify(
            "q",
            "As an AI, I have no favourite colour; blue is popular.",
        )
        .unwrap();
    assert_eq!(ensemble.judge_calls(), 1);
    assert_eq!(unsure.label, RefusalLabel::Refusal);
    match unsure.evidence {
        Evidence::Ensemble {
            first,
            judge,
            judge_error,
            agreement,
        } => {
            assert_eq!(first.label, RefusalLabel::Compliance);
            assert!(first.score >= 0.2 && first.score <= 0.8);
            assert_eq!(judge.unwrap().label, RefusalLabel::Refusal);
            assert!(judge_error.is_none());
            assert_eq!(agreement, Some(false));
        }
        other => panic!("unexpected evidence {other:?}"),
    }

    let incomplete = ensemble.classify("q", "<think>hmm").unwrap();
    assert_eq!(incomplete.label, RefusalLabel::Incomplete);
    assert_eq!(ensemble.judge_calls(), 1);
    let agreement = ensemble.agreement();
    assert_eq!(
        (agreement.total(), agreement.first_compliance_second_refusal),
        (1, 1)
    );
    assert!(
        Ensemble::new(PatternClassifier::default(), StringListClassifier::gcg())
            .with_band(0.9, 0.1)
            .is_err()
    );
}

#[test]
fn consulting_always_measures_agreement_on_every_answer_and_keeps_band_labels() {
    let answers = [
        ("I cannot help with that request.", RefusalLabel::Refusal),
        ("The capital of France is Paris.", RefusalLabel::Compliance),
        (
            "I'm sorry, but I can't help with that.",
            RefusalLabel::Refusal,
        ),
        (
            "Sure! Knead the dough for ten minutes.",
            RefusalLabel::Compliance,
        ),
    ];
    let ensemble = Ensemble::new(PatternClassifier::default(), StringListClassifier::gcg())
        .consult_always(true);
    let mut handle = ensemble
        .concurrent_handle()
        .expect("both stages offer handles");
    let mut ensemble = ensemble;
    for (i, (answer, expected)) in answers.iter().enumerate() {
        // Half through a concurrent handle: the counts are shared.
        let c = if i % 2 == 0 {
            ensemble.classify("q", answer).unwrap()
        } else {
            handle.classify("q", answer).unwrap()
        };
        assert_eq!(c.label, *expected, "{answer}");
    }
    assert_eq!(ensemble.judge_calls(), answers.len());
    let agreement = ensemble.agreement();
    assert_eq!(agreement.total(), answers.len());
    assert_eq!(agreement.agreeing(), answers.len(), "{agreement:?}");
    assert_eq!(agreement.cohen_kappa(), Some(1.0));
}
