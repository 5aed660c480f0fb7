//! Which trace of a request ([`TraceSpec`]) and why it ended ([`StopReason`]). Plain data, kept
//! below the error type: a contract [`Violation`](crate::Violation) names them, and
//! [`Error`](crate::Error) carries the violation, while the richer types in `types` return that
//! error from their checks.

use serde::{Deserialize, Serialize};

/// Identity of one trace within a request: its index and its own seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceSpec {
    /// Index of the trace within the prompt's traces (0-based).
    pub index: usize,
    /// Seed of this trace's sampler. Equal seeds must give equal traces.
    pub seed: u64,
}

impl TraceSpec {
    /// Trace `index` of a request with base seed `base_seed`. The seed is mixed (SplitMix64) so that
    /// neighbouring indices get unrelated random streams.
    pub fn derive(base_seed: u64, index: usize) -> Self {
        let mut z = base_seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self {
            index,
            seed: z ^ (z >> 31),
        }
    }
}

/// Why a trace ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model emitted an end-of-sequence token.
    EndOfSequence,
    /// The trace reached `max_tokens`.
    MaxTokens,
    /// The model's context window is full.
    ContextFull,
    /// The token observer asked to stop it (online early termination).
    Terminated,
}

impl StopReason {
    /// Snake-case name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::EndOfSequence => "end_of_sequence",
            StopReason::MaxTokens => "max_tokens",
            StopReason::ContextFull => "context_full",
            StopReason::Terminated => "terminated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_and_are_stable() {
        let a = TraceSpec::derive(7, 0);
        let b = TraceSpec::derive(7, 1);
        assert_ne!(a.seed, b.seed);
        assert_eq!(a, TraceSpec::derive(7, 0));
        assert_ne!(TraceSpec::derive(8, 0).seed, a.seed);
    }
}
