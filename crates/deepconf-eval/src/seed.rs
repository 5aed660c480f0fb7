//! Per-instance seeds and seeded selection of instances.

use std::collections::BTreeMap;

use deepconf_datasets::{Dataset, Instance};

/// FNV-1a over the id's bytes: stable across platforms and Rust versions (unlike `DefaultHasher`).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The base sampling seed of one instance: a mix of the run's seed and the instance **id**.
///
/// Deriving it from the id rather than from the instance's position makes a resumed run (which
/// skips finished instances) and a run over a different selection sample exactly the traces an
/// uninterrupted run would have sampled for the same instance.
pub fn instance_seed(run_seed: u64, instance_id: &str) -> u64 {
    splitmix(run_seed ^ splitmix(fnv1a(instance_id)))
}

/// How [`select_instances`] draws a subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stratify {
    /// The first `limit` instances in file order.
    #[default]
    None,
    /// A seeded sample keeping the harmful/benign/unlabeled proportions.
    Label,
    /// A seeded sample keeping the proportions of [`Instance::category`] (HarmBench: functional
    /// category).
    Category,
}

/// Picks at most `limit` instances of `dataset` (all of them for `None`), seeded, in file order.
pub fn select_instances(
    dataset: &Dataset,
    limit: Option<usize>,
    seed: u64,
    stratify: Stratify,
) -> Vec<Instance> {
    let Some(limit) = limit.filter(|&l| l < dataset.len()) else {
        return dataset.instances.clone();
    };
    match stratify {
        Stratify::None => dataset.instances[..limit].to_vec(),
        Stratify::Label => dataset.stratified_sample(limit, seed).instances,
        Stratify::Category => {
            let mut groups: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
            for (i, instance) in dataset.instances.iter().enumerate() {
                groups
                    .entry(instance.category.as_deref())
                    .or_default()
                    .push(i);
            }
            let sizes: Vec<usize> = groups.values().map(Vec::len).collect();
            let quotas = largest_remainder(&sizes, limit);
            let mut state = seed;
            let mut chosen = Vec::with_capacity(limit);
            for (mut members, quota) in groups.into_values().zip(quotas) {
                // Fisher-Yates with a SplitMix stream: a seeded shuffle without extra dependencies.
                for i in (1..members.len()).rev() {
                    state = splitmix(state);
                    let j = (state % (i as u64 + 1)) as usize;
                    members.swap(i, j);
                }
                chosen.extend_from_slice(&members[..quota]);
            }
            chosen.sort_unstable();
            chosen
                .into_iter()
                .map(|i| dataset.instances[i].clone())
                .collect()
        }
    }
}

/// Splits `total` over groups in proportion to their sizes (floors, then the largest remainders).
fn largest_remainder(sizes: &[usize], total: usize) -> Vec<usize> {
    let all: usize = sizes.iter().sum();
    if all == 0 {
        return vec![0; sizes.len()];
    }
    let mut quotas: Vec<usize> = sizes.iter().map(|&s| total * s / all).collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&g| (std::cmp::Reverse((total * sizes[g]) % all), g));
    let missing = total - quotas.iter().sum::<usize>();
    for &g in order.iter().take(missing) {
        quotas[g] += 1;
    }
    quotas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_seed_depends_on_id_and_run_seed_only() {
        assert_eq!(instance_seed(7, "a"), instance_seed(7, "a"));
        assert_ne!(instance_seed(7, "a"), instance_seed(7, "b"));
        assert_ne!(instance_seed(7, "a"), instance_seed(8, "a"));
    }

    #[test]
    fn quotas_are_proportional_and_sum_to_total() {
        assert_eq!(largest_remainder(&[159, 81, 80], 24), vec![12, 6, 6]);
        assert_eq!(largest_remainder(&[1, 1, 1], 2), vec![1, 1, 0]);
        assert_eq!(largest_remainder(&[], 3), Vec::<usize>::new());
    }
}
