//! Offline replay of 5,000 instances x 10 traces x 256 tokens over 9 thresholds.
//! Run with: cargo bench -p deepconf-analysis

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use deepconf_analysis::stats::SplitMix64;
use deepconf_analysis::{ReplayGrid, ReplayInstance, ReplayPolicy, ReplaySet, ReplayTrace};
use deepconf_core::confidence::ConfidenceConfig;
use deepconf_core::policy::PolicyConfig;
use deepconf_refusal::RefusalLabel;

const INSTANCES: usize = 5_000;
const TRACES: usize = 10;
const TOKENS: usize = 256;

/// Token confidences of every trace: a per-trace level plus noise, with occasional dips so that
/// thresholds cut traces at varied positions.
fn synthetic() -> Vec<Vec<(Vec<f64>, Option<RefusalLabel>)>> {
    let mut rng = SplitMix64::new(7);
    let mut unit = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (0..INSTANCES)
        .map(|_| {
            (0..TRACES)
                .map(|_| {
                    let level = 1.5 + 2.0 * unit();
                    let conf = (0..TOKENS)
                        .map(|_| {
                            let dip = if unit() < 0.05 { -1.5 } else { 0.0 };
                            (level + dip + 0.6 * (unit() - 0.5)).max(0.0)
                        })
                        .collect();
                    let answer = if unit() < 0.5 {
                        RefusalLabel::Refusal
                    } else {
                        RefusalLabel::Compliance
                    };
                    (conf, Some(answer))
                })
                .collect()
        })
        .collect()
}

fn prepare(data: &[Vec<(Vec<f64>, Option<RefusalLabel>)>], config: &ConfidenceConfig) -> ReplaySet {
    let instances = data
        .iter()
        .enumerate()
        .map(|(i, traces)| {
            let prepared = traces
                .iter()
                .enumerate()
                .map(|(j, (conf, answer))| {
                    ReplayTrace::new(j, conf, *answer, config).expect("valid config")
                })
                .collect();
            ReplayInstance::new(format!("i{i}"), Some(i % 2 == 0), prepared)
        })
        .collect();
    ReplaySet::new(config.clone(), instances).expect("valid config")
}

fn online_sweep(consensus: f64) -> Vec<ReplayPolicy> {
    ReplayGrid::default()
        .keep_percents
        .iter()
        .map(|&keep| ReplayPolicy {
            label: format!("online keep {keep}%"),
            keep_percent: Some(keep),
            config: PolicyConfig::online(4, TRACES, keep).with_consensus(consensus),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let config = ConfidenceConfig::default();
    let data = synthetic();
    let set = prepare(&data, &config);
    let mut group = c.benchmark_group("replay_5000x10x256");
    group.sample_size(10);
    group.bench_function("prepare", |b| b.iter(|| black_box(prepare(&data, &config))));
    for (name, consensus) in [
        ("9_thresholds_tau_0.95", 0.95),
        ("9_thresholds_no_consensus_stop", 2.0),
    ] {
        let policies = online_sweep(consensus);
        group.bench_function(name, |b| {
            b.iter(|| black_box(set.replay_all(&policies).expect("replay")))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
