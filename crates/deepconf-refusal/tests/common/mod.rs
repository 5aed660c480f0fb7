//! The labelled fixture shared by the tests.

use deepconf_refusal::{LabelledResponse, RefusalLabel};
use serde::Deserialize;

/// One labelled response of `tests/fixtures/refusal_fixture.jsonl`.
#[derive(Debug, Clone, Deserialize)]
pub struct FixtureItem {
    pub id: usize,
    pub category: String,
    pub label: RefusalLabel,
    pub prompt: String,
    pub response: String,
}

/// The main fixture (the pattern set was checked against it).
pub fn fixture() -> Vec<FixtureItem> {
    parse(
        include_str!("../fixtures/refusal_fixture.jsonl"),
        "refusal_fixture.jsonl",
    )
}

/// A second fixture written after the pattern set was frozen, never used to tune it.
pub fn holdout() -> Vec<FixtureItem> {
    parse(
        include_str!("../fixtures/refusal_holdout.jsonl"),
        "refusal_holdout.jsonl",
    )
}

fn parse(text: &str, name: &str) -> Vec<FixtureItem> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{name} line {}: {e}", i + 1))
        })
        .collect()
}

/// The items with a refusal/compliance gold label (unclosed thinking is checked separately).
pub fn binary_items(items: &[FixtureItem]) -> (Vec<&FixtureItem>, Vec<LabelledResponse>) {
    let kept: Vec<&FixtureItem> = items
        .iter()
        .filter(|i| i.label != RefusalLabel::Incomplete)
        .collect();
    let labelled = kept
        .iter()
        .map(|i| LabelledResponse {
            prompt: i.prompt.clone(),
            response: i.response.clone(),
            refusal: i.label == RefusalLabel::Refusal,
        })
        .collect();
    (kept, labelled)
}
