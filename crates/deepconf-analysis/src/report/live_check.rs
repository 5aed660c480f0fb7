//! The live-vs-replay section: the live run's tokens, traces, votes and cut points against the
//! replay of its policy on the stored full traces.

use crate::crosscheck::LiveCheck;
use crate::findings::Findings;
use crate::report::Document;

impl LiveCheck {
    /// One sentence for a report.
    pub fn sentence(&self) -> String {
        let policy = self.policy.label();
        if self.compared == 0 {
            return format!(
                "**Live-vs-replay check:** none of the live {policy} run's instances is in the full run, so nothing was compared."
            );
        }
        let missing = if self.missing.is_empty() {
            String::new()
        } else {
            format!(
                " ({} live instances were not in the full run and were not compared)",
                self.missing.len()
            )
        };
        let verdict = if self.matching == self.compared {
            "equal"
        } else {
            "not equal"
        };
        let cuts = if self.live_cut_traces == 0 && self.replay_cut_traces == 0 {
            " No trace was cut by the confidence threshold, live or replayed, so early termination was not exercised.".to_string()
        } else {
            format!(
                " Cut traces: the live run cut {}, the replay {}; {} live cut traces were compared with the replay's, and {} of them were cut at the same token.",
                self.live_cut_traces,
                self.replay_cut_traces,
                self.cut_traces_compared,
                self.cut_points_equal
            )
        };
        format!(
            "**Live-vs-replay check:** replaying the live {policy} policy on the stored full traces ({} per instance) gave the live run's tokens, traces and vote on {} of {} instances{missing}, so the replay's tokens and votes are {verdict} to the live run's (tokens {} live vs {} replayed; votes equal on {}; {} of {} live traces are exact prefixes of their stored full traces).{cuts}",
            self.full_traces,
            self.matching,
            self.compared,
            self.live_tokens,
            self.replay_tokens,
            self.votes_equal,
            self.prefix_traces,
            self.live_traces
        )
    }
}

impl Findings {
    /// Appends the live-vs-replay section, when a live run was checked.
    pub fn write_live_check(&self, d: &mut Document) {
        let Some(check) = &self.live_check else {
            return;
        };
        d.heading(2, "Live run against the replay");
        d.paragraph(check.sentence());
        if check.mismatches.is_empty() {
            return;
        }
        d.table(
            &[
                "instance",
                "tokens (live / replay)",
                "traces (live / replay)",
                "refused (live / replay)",
                "first divergent trace, token",
            ],
            check
                .mismatches
                .iter()
                .map(|m| {
                    let refused = |r: Option<bool>| r.map_or("n/a".to_string(), |r| r.to_string());
                    vec![
                        m.instance_id.clone(),
                        format!("{} / {}", m.live_tokens, m.replay_tokens),
                        format!("{} / {}", m.live_traces, m.replay_traces),
                        format!(
                            "{} / {}",
                            refused(m.live_refused),
                            refused(m.replay_refused)
                        ),
                        m.divergence.map_or("none".to_string(), |v| {
                            format!("trace {}, token {}", v.trace_index, v.token)
                        }),
                    ]
                })
                .collect(),
        );
    }
}
