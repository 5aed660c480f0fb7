//! [`PolicyConfig`]: the serialisable description of a policy, its constructors and validation.

use serde::{Deserialize, Serialize};

use crate::{Error, Result, TraceMetric, Voting};

/// A policy, as configuration. Serialises as `{"kind": "online", ...}`; the kinds are `fixed`,
/// `offline`, `online` and `compat` ([`PolicyConfig::Prototype`], also read as `prototype`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PolicyConfig {
    /// Generate `traces` full traces; all vote (self-consistency baseline; `traces = 1` is greedy-free
    /// single sampling).
    Fixed {
        /// Traces per prompt.
        traces: usize,
        /// How votes are counted.
        voting: Voting,
    },
    /// Generate `traces` full traces, keep the top `keep_percent`% by `metric`, vote among them.
    Offline {
        /// Traces per prompt.
        traces: usize,
        /// Percent of traces kept, in `(0, 100]`.
        keep_percent: f64,
        /// Ranking metric.
        metric: TraceMetric,
        /// How votes are counted (weights are the `metric` values).
        voting: Voting,
    },
    /// DeepConf online: `warmup_traces` full traces set the threshold; later traces are cut when a full
    /// window's group confidence falls below it; sampling stops at consensus `>= consensus` or when
    /// `max_traces` traces exist.
    Online {
        /// Warmup traces (16 in the paper).
        warmup_traces: usize,
        /// Budget: traces per prompt at most.
        max_traces: usize,
        /// Percent kept (10 = DeepConf-low, 90 = DeepConf-high).
        keep_percent: f64,
        /// Consensus `tau` that stops sampling (0.95 in the paper); `> 1` disables the stop.
        consensus: f64,
        /// Traces started together after the warmup.
        batch_size: usize,
        /// How votes are counted (weights are lowest-group confidences).
        voting: Voting,
    },
    /// The sampling schedule of the Python prototype this project replaces (`docs/seed-runs.md`),
    /// for comparison with its runs: `warmup_traces` traces, then batches of `batch_size` up to
    /// `max_traces`, stopping once the mean confidence of the newest batch reaches the
    /// `percentile`th percentile of the warmup traces' mean confidences. Plain majority vote.
    ///
    /// Serialised as `"kind": "compat"`, the name every run record and configuration so far
    /// carries; `"prototype"` is read too.
    #[serde(rename = "compat", alias = "prototype")]
    Prototype {
        /// Warmup traces (3 in the prototype).
        warmup_traces: usize,
        /// Batch size (3).
        batch_size: usize,
        /// Budget (10).
        max_traces: usize,
        /// Percentile of the warmup mean confidences to reach, in `[0, 100]` (50).
        percentile: f64,
    },
}

impl Default for PolicyConfig {
    /// DeepConf-low online with a safety-sized budget: [`PolicyConfig::Online`] with 4 warmup
    /// traces, at most 16 traces, keep 10%, consensus tau 0.95, batches of 4, confidence-weighted
    /// voting.
    fn default() -> Self {
        Self::online(4, 16, 10.0)
    }
}

impl PolicyConfig {
    /// A short description, e.g. `online(warmup 4, max 8, keep 10%)`.
    pub fn label(&self) -> String {
        match self {
            PolicyConfig::Fixed { traces, .. } => format!("fixed(n={traces})"),
            PolicyConfig::Offline {
                traces,
                keep_percent,
                ..
            } => format!("offline(n={traces}, keep {keep_percent}%)"),
            // A consensus above 1 can never be reached: the run never stops on consensus.
            PolicyConfig::Online {
                warmup_traces,
                max_traces,
                keep_percent,
                consensus,
                ..
            } if *consensus > 1.0 => format!(
                "online(warmup {warmup_traces}, max {max_traces}, keep {keep_percent}%, no consensus stop)"
            ),
            PolicyConfig::Online {
                warmup_traces,
                max_traces,
                keep_percent,
                ..
            } => format!("online(warmup {warmup_traces}, max {max_traces}, keep {keep_percent}%)"),
            PolicyConfig::Prototype {
                warmup_traces,
                batch_size,
                max_traces,
                ..
            } => format!("compat(warmup {warmup_traces}, batch {batch_size}, max {max_traces})"),
        }
    }

    /// The largest number of traces the policy starts at once: all of them for fixed and
    /// offline policies, the warmup or a batch (whichever is larger) for online ones.
    pub fn largest_batch(&self) -> usize {
        match *self {
            PolicyConfig::Fixed { traces, .. } | PolicyConfig::Offline { traces, .. } => traces,
            PolicyConfig::Online {
                warmup_traces,
                batch_size,
                ..
            }
            | PolicyConfig::Prototype {
                warmup_traces,
                batch_size,
                ..
            } => warmup_traces.max(batch_size),
        }
    }

    /// Fixed-N with plain majority voting.
    pub fn fixed(traces: usize) -> Self {
        Self::Fixed {
            traces,
            voting: Voting::Majority,
        }
    }

    /// Offline filtering on lowest-group confidence with weighted voting.
    pub fn offline(traces: usize, keep_percent: f64) -> Self {
        Self::Offline {
            traces,
            keep_percent,
            metric: TraceMetric::LowestGroup,
            voting: Voting::ConfidenceWeighted,
        }
    }

    /// DeepConf online with tau = 0.95, batch size 4 and weighted voting.
    pub fn online(warmup_traces: usize, max_traces: usize, keep_percent: f64) -> Self {
        Self::Online {
            warmup_traces,
            max_traces,
            keep_percent,
            consensus: 0.95,
            batch_size: 4,
            voting: Voting::ConfidenceWeighted,
        }
    }

    /// The same policy with consensus threshold `tau` (DeepConf online's early stop on the weighted
    /// vote); other policies have no consensus stop and are returned unchanged.
    pub fn with_consensus(self, tau: f64) -> Self {
        match self {
            Self::Online {
                warmup_traces,
                max_traces,
                keep_percent,
                batch_size,
                voting,
                ..
            } => Self::Online {
                warmup_traces,
                max_traces,
                keep_percent,
                consensus: tau,
                batch_size,
                voting,
            },
            other => other,
        }
    }

    /// The prototype's schedule as the prototype ran it: 3 warmup, batches of 3 up to 10, median
    /// of the warmup.
    pub fn prototype() -> Self {
        Self::Prototype {
            warmup_traces: 3,
            batch_size: 3,
            max_traces: 10,
            percentile: 50.0,
        }
    }

    /// [`PolicyConfig::prototype`] under its old name, kept so that existing callers build.
    pub fn compat() -> Self {
        Self::prototype()
    }

    /// Short name, as serialised in `kind`: `fixed`, `offline`, `online`, `compat` (the prototype's
    /// schedule).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fixed { .. } => "fixed",
            Self::Offline { .. } => "offline",
            Self::Online { .. } => "online",
            Self::Prototype { .. } => "compat",
        }
    }

    /// The most traces this policy can sample for one prompt.
    pub fn max_traces(&self) -> usize {
        match *self {
            Self::Fixed { traces, .. } | Self::Offline { traces, .. } => traces,
            Self::Online { max_traces, .. } | Self::Prototype { max_traces, .. } => max_traces,
        }
    }

    /// Checks every parameter, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        fn at_least_one(parameter: &'static str, value: usize) -> Result<()> {
            if value == 0 {
                return Err(Error::InvalidParameter {
                    parameter,
                    value: "0".into(),
                    reason: "must be at least 1",
                });
            }
            Ok(())
        }
        fn percent(parameter: &'static str, value: f64) -> Result<()> {
            if !(value > 0.0 && value <= 100.0) {
                return Err(Error::InvalidParameter {
                    parameter,
                    value: value.to_string(),
                    reason: "must be in (0, 100]",
                });
            }
            Ok(())
        }
        match *self {
            Self::Fixed { traces, .. } => at_least_one("traces", traces),
            Self::Offline {
                traces,
                keep_percent,
                ..
            } => {
                at_least_one("traces", traces)?;
                percent("keep_percent", keep_percent)
            }
            Self::Online {
                warmup_traces,
                max_traces,
                keep_percent,
                consensus,
                batch_size,
                ..
            } => {
                at_least_one("warmup_traces", warmup_traces)?;
                at_least_one("batch_size", batch_size)?;
                percent("keep_percent", keep_percent)?;
                if max_traces < warmup_traces {
                    return Err(Error::InvalidParameter {
                        parameter: "max_traces",
                        value: max_traces.to_string(),
                        reason: "must be at least warmup_traces",
                    });
                }
                if consensus.is_nan() || consensus <= 0.0 {
                    return Err(Error::InvalidParameter {
                        parameter: "consensus",
                        value: consensus.to_string(),
                        reason: "must be > 0 (values above 1 disable the consensus stop)",
                    });
                }
                Ok(())
            }
            Self::Prototype {
                warmup_traces,
                batch_size,
                max_traces,
                percentile,
            } => {
                at_least_one("warmup_traces", warmup_traces)?;
                at_least_one("batch_size", batch_size)?;
                if max_traces < warmup_traces {
                    return Err(Error::InvalidParameter {
                        parameter: "max_traces",
                        value: max_traces.to_string(),
                        reason: "must be at least warmup_traces",
                    });
                }
                // The 0th percentile (the lowest warmup mean) is a valid target, unlike a kept
                // percent of 0.
                if !(0.0..=100.0).contains(&percentile) {
                    return Err(Error::InvalidParameter {
                        parameter: "percentile",
                        value: percentile.to_string(),
                        reason: "must be in [0, 100]",
                    });
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_parameters() {
        let e = PolicyConfig::online(8, 4, 10.0).validate().unwrap_err();
        assert!(e.to_string().contains("max_traces"), "{e}");
        let e = PolicyConfig::offline(4, 0.0).validate().unwrap_err();
        assert!(e.to_string().contains("keep_percent"), "{e}");
        assert!(PolicyConfig::fixed(0).validate().is_err());
        assert!(PolicyConfig::prototype().validate().is_ok());
        let prototype = |percentile: f64| PolicyConfig::Prototype {
            warmup_traces: 3,
            batch_size: 3,
            max_traces: 10,
            percentile,
        };
        for bad in [-1.0, -f64::MIN_POSITIVE, 100.5, f64::NAN, f64::INFINITY] {
            let e = prototype(bad).validate().unwrap_err();
            assert!(e.to_string().contains("`percentile`"), "{bad}: {e}");
        }
        assert!(prototype(0.0).validate().is_ok() && prototype(100.0).validate().is_ok());
    }

    #[test]
    fn config_round_trips_through_json() {
        for c in [
            PolicyConfig::fixed(5),
            PolicyConfig::offline(8, 10.0),
            PolicyConfig::default(),
            PolicyConfig::prototype(),
        ] {
            let json = serde_json::to_string(&c).unwrap();
            assert!(json.contains(&format!("\"kind\":\"{}\"", c.kind())));
            assert_eq!(serde_json::from_str::<PolicyConfig>(&json).unwrap(), c);
        }
    }

    #[test]
    fn the_prototype_schedule_is_written_compat_and_read_under_both_names() {
        let json = serde_json::to_string(&PolicyConfig::prototype()).unwrap();
        assert!(json.contains("\"kind\":\"compat\""), "{json}");
        let renamed = json.replace("\"compat\"", "\"prototype\"");
        assert_eq!(
            serde_json::from_str::<PolicyConfig>(&renamed).unwrap(),
            PolicyConfig::prototype()
        );
        assert_eq!(PolicyConfig::compat(), PolicyConfig::prototype());
    }
}
