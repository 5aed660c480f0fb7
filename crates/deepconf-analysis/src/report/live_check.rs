//! The live-vs-replay section: the live run's tokens, traces, votes and cut points against the
//! replay of its policy on the stored full traces.

use crate::findings::Findings;
use crate::report::Document;

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
