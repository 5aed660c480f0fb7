//! Property tests: classification ignores surrounding whitespace and straight vs curly quotes.

use deepconf_refusal::PatternClassifier;
use proptest::prelude::*;

use crate::common::fixture;

fn curl(text: &str, choices: &[bool]) -> String {
    let mut open_double = true;
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        let swap = choices
            .get(i % choices.len().max(1))
            .copied()
            .unwrap_or(false);
        match c {
            '\'' if swap => out.push('\u{2019}'),
            '"' if swap => {
                out.push(if open_double { '\u{201C}' } else { '\u{201D}' });
                open_double = !open_double;
            }
            '"' => {
                out.push('"');
                open_double = !open_double;
            }
            c => out.push(c),
        }
    }
    out
}

fn whitespace() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![Just(' '), Just('\n'), Just('\t'), Just('\u{a0}')],
        0..6,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn invariant_to_surrounding_whitespace(index in 0usize..100, before in whitespace(), after in whitespace()) {
        let items = fixture();
        let item = &items[index % items.len()];
        let p = PatternClassifier::default();
        let plain = p.classify_response(&item.response);
        let padded = p.classify_response(&format!("{before}{}{after}", item.response));
        prop_assert_eq!(plain.label, padded.label);
        prop_assert!((plain.score - padded.score).abs() < 1e-12);
    }

    #[test]
    fn invariant_to_straight_vs_curly_quotes(index in 0usize..100, choices in proptest::collection::vec(any::<bool>(), 1..16)) {
        let items = fixture();
        let item = &items[index % items.len()];
        let p = PatternClassifier::default();
        let straight = item.response.replace(['\u{2019}', '\u{2018}'], "'").replace(['\u{201C}', '\u{201D}'], "\"");
        let curly = curl(&straight, &choices);
        let a = p.classify_response(&straight);
        let b = p.classify_response(&curly);
        prop_assert_eq!(a.label, b.label, "{:?} vs {:?}", straight, curly);
        prop_assert!((a.score - b.score).abs() < 1e-12);
    }

    #[test]
    fn scores_stay_in_unit_interval(text in "\\PC{0,200}") {
        let c = PatternClassifier::default().classify_response(&text);
        prop_assert!((0.0..=1.0).contains(&c.score));
    }
}
