//! A loaded benchmark, its load summary, and the filtering and sampling helpers.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::{Benchmark, Instance};

/// What a load produced: rows read, instances per label and category, nulls per column.
///
/// `rows_read` and `nulls` describe the file as read (up to the load's limit) and are kept when a
/// [`Dataset`] is filtered or sampled; the other counts always describe the current instances.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoadSummary {
    /// Benchmark the file was read as.
    pub benchmark: Option<Benchmark>,
    /// The file read.
    pub file: String,
    /// Data rows read from the file.
    pub rows_read: usize,
    /// Instances in the dataset.
    pub rows: usize,
    /// Instances with gold label harmful.
    pub harmful: usize,
    /// Instances with gold label benign.
    pub benign: usize,
    /// Instances without a gold label (null in the file).
    pub unlabeled: usize,
    /// Instances whose reference response is labeled a refusal.
    pub reference_refusal: usize,
    /// Instances whose reference response is labeled compliance.
    pub reference_compliance: usize,
    /// Null (in CSV: empty) cells per column read, over the rows read.
    pub nulls: BTreeMap<String, usize>,
    /// Instances per category (instances without a category are not counted here).
    pub by_category: BTreeMap<String, usize>,
    /// Instances and gold labels per source dataset ([`Instance::dataset`]; instances without
    /// one are not counted here). A single load has one source, a mixture one per part.
    #[serde(default)]
    pub by_source: BTreeMap<String, LabelCounts>,
    /// For a mixture ([`Dataset::mix`]): each source's own summary as it was loaded (its file, rows
    /// read and nulls per column), by source name. Empty for a single load.
    #[serde(default)]
    pub sources: BTreeMap<String, LoadSummary>,
}

/// Instances of one group by gold label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LabelCounts {
    /// Instances.
    pub rows: usize,
    /// With gold label harmful.
    pub harmful: usize,
    /// With gold label benign.
    pub benign: usize,
    /// Without a gold label.
    pub unlabeled: usize,
}

impl LabelCounts {
    fn add(&mut self, harmful: Option<bool>) {
        self.rows += 1;
        match harmful {
            Some(true) => self.harmful += 1,
            Some(false) => self.benign += 1,
            None => self.unlabeled += 1,
        }
    }
}

impl LoadSummary {
    /// Recomputes the per-instance counts, keeping `benchmark`, `file`, `rows_read`, `nulls` and
    /// `sources`.
    pub(crate) fn recount(&mut self, instances: &[Instance]) {
        self.rows = instances.len();
        self.harmful = count(instances, |instance| instance.harmful == Some(true));
        self.benign = count(instances, |instance| instance.harmful == Some(false));
        self.unlabeled = count(instances, |instance| instance.harmful.is_none());
        self.reference_refusal = count(instances, |instance| {
            instance.reference_refusal == Some(true)
        });
        self.reference_compliance = count(instances, |instance| {
            instance.reference_refusal == Some(false)
        });
        self.by_category.clear();
        for category in instances
            .iter()
            .filter_map(|instance| instance.category.as_ref())
        {
            *self.by_category.entry(category.clone()).or_default() += 1;
        }
        self.by_source.clear();
        for instance in instances {
            if let Some(dataset) = &instance.dataset {
                self.by_source
                    .entry(dataset.clone())
                    .or_default()
                    .add(instance.harmful);
            }
        }
    }
}

fn count(instances: &[Instance], predicate: impl Fn(&Instance) -> bool) -> usize {
    instances
        .iter()
        .filter(|instance| predicate(instance))
        .count()
}

/// Loaded benchmark instances with their [`LoadSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// The instances, in file order.
    pub instances: Vec<Instance>,
    /// Counts describing them.
    pub summary: LoadSummary,
}

impl Dataset {
    /// A dataset of the given instances; the summary counts them (no file statistics).
    pub fn from_instances(instances: Vec<Instance>) -> Self {
        let mut summary = LoadSummary {
            rows_read: instances.len(),
            ..LoadSummary::default()
        };
        summary.recount(&instances);
        Self { instances, summary }
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// Whether there are no instances.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// Iterates over the instances.
    pub fn iter(&self) -> std::slice::Iter<'_, Instance> {
        self.instances.iter()
    }

    pub(crate) fn with_instances(&self, instances: Vec<Instance>) -> Self {
        let mut summary = self.summary.clone();
        summary.recount(&instances);
        Self { instances, summary }
    }

    /// The instances for which `keep` returns true.
    #[must_use]
    pub fn filter(&self, keep: impl Fn(&Instance) -> bool) -> Self {
        self.with_instances(
            self.instances
                .iter()
                .filter(|instance| keep(instance))
                .cloned()
                .collect(),
        )
    }

    /// The instances of one category (exact match).
    #[must_use]
    pub fn with_category(&self, category: &str) -> Self {
        self.filter(|instance| instance.category.as_deref() == Some(category))
    }

    /// The instances with the given gold label (`None`: the unlabeled ones).
    #[must_use]
    pub fn with_label(&self, harmful: Option<bool>) -> Self {
        self.filter(|instance| instance.harmful == harmful)
    }

    /// The first `limit` instances.
    #[must_use]
    pub fn take(&self, limit: usize) -> Self {
        self.with_instances(self.instances.iter().take(limit).cloned().collect())
    }

    /// A seeded random sample of `size` instances that keeps the proportions of harmful, benign and
    /// unlabeled instances: each group contributes its share of `size` rounded down or up (largest
    /// remainder), so every group's count is within one instance of its exact share. The same seed
    /// gives the same sample; instances stay in file order. `size >= len()` returns everything.
    #[must_use]
    pub fn stratified_sample(&self, size: usize, seed: u64) -> Self {
        let total = self.instances.len();
        if size >= total {
            return self.clone();
        }
        let groups: [Vec<usize>; 3] = [Some(true), Some(false), None].map(|label| {
            (0..total)
                .filter(|&i| self.instances[i].harmful == label)
                .collect()
        });
        let quotas = largest_remainder_quotas(&groups.each_ref().map(Vec::len), size);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut chosen: Vec<usize> = Vec::with_capacity(size);
        for (mut group, quota) in groups.into_iter().zip(quotas) {
            group.shuffle(&mut rng);
            chosen.extend_from_slice(&group[..quota]);
        }
        chosen.sort_unstable();
        self.with_instances(
            chosen
                .into_iter()
                .map(|i| self.instances[i].clone())
                .collect(),
        )
    }
}

impl<'a> IntoIterator for &'a Dataset {
    type Item = &'a Instance;
    type IntoIter = std::slice::Iter<'a, Instance>;

    fn into_iter(self) -> Self::IntoIter {
        self.instances.iter()
    }
}

/// Splits `size` over groups in proportion to their sizes: floors first, then one more to the groups
/// with the largest remainders (ties to the earlier group).
fn largest_remainder_quotas<const N: usize>(sizes: &[usize; N], size: usize) -> [usize; N] {
    let total: usize = sizes.iter().sum();
    if total == 0 {
        return [0; N];
    }
    // Exact share of group g is size * sizes[g] / total; integer arithmetic keeps it exact.
    let mut quotas = sizes.map(|group| size * group / total);
    let mut remainders: Vec<(usize, usize)> = sizes
        .iter()
        .enumerate()
        .map(|(g, &group)| ((size * group) % total, g))
        .collect();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let missing = size - quotas.iter().sum::<usize>();
    for &(_, g) in remainders.iter().take(missing) {
        quotas[g] += 1;
    }
    quotas
}

#[cfg(test)]
mod tests {
    use super::largest_remainder_quotas;

    #[test]
    fn quotas_sum_to_size_and_round_each_share() {
        assert_eq!(largest_remainder_quotas(&[7, 3, 0], 5), [4, 1, 0]);
        assert_eq!(largest_remainder_quotas(&[1, 1, 1], 2), [1, 1, 0]);
        assert_eq!(largest_remainder_quotas(&[0, 0, 0], 2), [0, 0, 0]);
        assert_eq!(largest_remainder_quotas(&[50, 50, 0], 100), [50, 50, 0]);
    }
}
