use deepconf_core::{SamplingParams, TraceSpec};

#[test]
fn trace_seeds_derive_from_base_seed() {
    let p = SamplingParams::default().with_seed(3);
    assert_eq!(TraceSpec::derive(p.seed, 2).index, 2);
}
