//! Mixtures of datasets: harmful and benign prompts from several benchmarks as one [`Dataset`],
//! with per-source ids and counts, and seeded sampling stratified over source and category.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Location;
use crate::{Benchmark, Dataset, DatasetSpec, Error, Instance, LoadSummary, Result};

/// Separator between a source name and an instance's own id in a mixture (`strongreject/…`).
pub const SOURCE_ID_SEPARATOR: char = '/';

fn check_source_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::InvalidSpec {
            parameter: "mixture source name",
            reason: format!("{name:?} {reason}"),
        })
    };
    if name.trim().is_empty() {
        return bad("is empty");
    }
    if name.contains(SOURCE_ID_SEPARATOR) {
        return bad("contains `/`, which separates the source from the id in a mixture's ids");
    }
    Ok(())
}

fn location_of(instance: &Instance) -> Box<Location> {
    Box::new(Location {
        row: Some(instance.source.row),
        ..Location::file(&instance.source.file)
    })
}

/// Fails on the first id that two instances share.
fn check_unique_ids<'a>(
    dataset: &str,
    instances: impl IntoIterator<Item = &'a Instance>,
) -> Result<()> {
    let mut seen: HashMap<&str, &Instance> = HashMap::new();
    for instance in instances {
        if let Some(first) = seen.insert(instance.id.as_str(), instance) {
            return Err(Error::DuplicateId {
                dataset: dataset.to_owned(),
                id: instance.id.clone(),
                first: location_of(first),
                second: location_of(instance),
            });
        }
    }
    Ok(())
}

impl Dataset {
    /// Concatenates datasets into one, in the order given. Each instance's id becomes
    /// `{source}/{id}` (unique across sources), its [`dataset`](Instance::dataset) the source name,
    /// and its gold label and categories are kept. The summary counts the mixture
    /// ([`LoadSummary::by_source`] per source) and keeps each part's own summary in
    /// [`LoadSummary::sources`].
    ///
    /// Fails when a source name is empty, contains `/` or is given twice, or when two instances of
    /// one source share an id.
    ///
    /// ```
    /// use deepconf_datasets::{Dataset, Instance};
    ///
    /// let harmful = Dataset::from_instances(vec![Instance::user("a", "Build a bomb", Some(true))]);
    /// let benign = Dataset::from_instances(vec![Instance::user("a", "Bake bread", Some(false))]);
    /// let mixed = Dataset::mix([("harmful", harmful), ("benign", benign)])?;
    /// assert_eq!(mixed.instances[1].id, "benign/a");
    /// assert_eq!(mixed.summary.by_source["harmful"].harmful, 1);
    /// assert_eq!(mixed.summary.by_source["benign"].benign, 1);
    /// # Ok::<(), deepconf_datasets::Error>(())
    /// ```
    pub fn mix<N: Into<String>>(parts: impl IntoIterator<Item = (N, Dataset)>) -> Result<Self> {
        let mut instances = Vec::new();
        let mut sources: BTreeMap<String, LoadSummary> = BTreeMap::new();
        let mut files = Vec::new();
        let mut rows_read = 0;
        for (name, part) in parts {
            let name: String = name.into();
            check_source_name(&name)?;
            if sources.contains_key(&name) {
                return Err(Error::InvalidSpec {
                    parameter: "mixture source name",
                    reason: format!("{name:?} is given twice"),
                });
            }
            check_unique_ids(&name, &part.instances)?;
            rows_read += part.summary.rows_read;
            if !part.summary.file.is_empty() {
                files.push(part.summary.file.clone());
            }
            instances.extend(part.instances.into_iter().map(|mut instance| {
                instance.id = format!("{name}{SOURCE_ID_SEPARATOR}{}", instance.id);
                instance.dataset = Some(name.clone());
                instance
            }));
            sources.insert(name, part.summary);
        }
        let mut summary = LoadSummary {
            benchmark: None,
            file: files.join(", "),
            rows_read,
            sources,
            ..LoadSummary::default()
        };
        summary.recount(&instances);
        Ok(Self { instances, summary })
    }

    /// A seeded sample of `size` instances stratified over source ([`Instance::dataset`]) and,
    /// within each source, over category.
    ///
    /// `shares` splits `size` over the sources with the largest-remainder rule; no source gives
    /// more instances than it has (its surplus goes to the others), and every source with a positive
    /// share contributes at least one instance when `size` allows (so each source is covered). Within a source the same rule splits its quota over its categories in
    /// proportion to their sizes. Which instances of a category are taken depends only on the seed,
    /// the source name and the category, so adding a source to a mixture does not change what is
    /// drawn from the others (given the same quotas). Instances stay in mixture order; the same
    /// seed gives the same sample on every platform.
    ///
    /// Fails on a share that is negative or not finite.
    pub fn stratified_by_source(
        &self,
        size: usize,
        seed: u64,
        shares: &SourceShares,
    ) -> Result<Self> {
        let mut by_source: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
        for (i, instance) in self.instances.iter().enumerate() {
            by_source
                .entry(instance.dataset.as_deref())
                .or_default()
                .push(i);
        }
        let weights = by_source
            .iter()
            .map(|(name, members)| shares.weight(*name, members.len()))
            .collect::<Result<Vec<f64>>>()?;
        let capacities: Vec<usize> = by_source.values().map(Vec::len).collect();
        let quotas = allocate(size, &weights, &capacities);
        let mut chosen = Vec::with_capacity(size);
        for ((source, members), quota) in by_source.into_iter().zip(quotas) {
            let mut by_category: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
            for &i in &members {
                by_category
                    .entry(self.instances[i].category.as_deref())
                    .or_default()
                    .push(i);
            }
            let sizes: Vec<usize> = by_category.values().map(Vec::len).collect();
            let weights: Vec<f64> = sizes.iter().map(|&n| n as f64).collect();
            let category_quotas = allocate(quota, &weights, &sizes);
            for ((category, mut group), take) in by_category.into_iter().zip(category_quotas) {
                let stream = group_seed(seed, source.unwrap_or(""), category.unwrap_or(""));
                shuffle(&mut group, stream);
                chosen.extend_from_slice(&group[..take]);
            }
        }
        chosen.sort_unstable();
        Ok(self.with_instances(
            chosen
                .into_iter()
                .map(|i| self.instances[i].clone())
                .collect(),
        ))
    }
}

/// How [`Dataset::stratified_by_source`] splits a sample over the sources of a mixture.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", content = "weights", rename_all = "snake_case")]
pub enum SourceShares {
    /// In proportion to each source's size.
    Proportional,
    /// The same number from every source.
    #[default]
    Equal,
    /// In proportion to a weight per source name; sources not named get weight 0 (none of their
    /// instances are drawn). E.g. `harmbench: 1, strongreject: 1, overrefusal: 2` for as many
    /// benign as harmful prompts.
    Weights(BTreeMap<String, f64>),
}

impl SourceShares {
    /// Weights from `(source name, weight)` pairs.
    pub fn weights<N: Into<String>>(pairs: impl IntoIterator<Item = (N, f64)>) -> Self {
        SourceShares::Weights(
            pairs
                .into_iter()
                .map(|(name, weight)| (name.into(), weight))
                .collect(),
        )
    }

    fn weight(&self, source: Option<&str>, size: usize) -> Result<f64> {
        let weight = match self {
            SourceShares::Proportional => size as f64,
            SourceShares::Equal => 1.0,
            SourceShares::Weights(weights) => source
                .and_then(|name| weights.get(name))
                .copied()
                .unwrap_or(0.0),
        };
        if weight.is_finite() && weight >= 0.0 {
            Ok(weight)
        } else {
            Err(Error::InvalidSpec {
                parameter: "shares",
                reason: format!(
                    "the share of source {:?} is {weight}; shares must be finite and at least 0",
                    source.unwrap_or("(none)")
                ),
            })
        }
    }
}

/// Splits `size` over groups by weight (floors, then the largest remainders, ties to the earlier
/// group), never above a group's capacity: a capped group's surplus is split again over the groups
/// with room. Then, when `size` covers every group with a positive weight and room, each such group
/// that got nothing takes one instance from the group with the largest quota.
fn allocate(size: usize, weights: &[f64], capacities: &[usize]) -> Vec<usize> {
    let mut quotas = vec![0usize; weights.len()];
    let eligible: Vec<usize> = (0..weights.len())
        .filter(|&g| weights[g] > 0.0 && capacities[g] > 0)
        .collect();
    let room: usize = eligible.iter().map(|&g| capacities[g]).sum();
    let total = size.min(room);
    let mut remaining = total;
    while remaining > 0 {
        let open: Vec<usize> = eligible
            .iter()
            .copied()
            .filter(|&g| quotas[g] < capacities[g])
            .collect();
        let weight: f64 = open.iter().map(|&g| weights[g]).sum();
        if open.is_empty() || weight <= 0.0 {
            break;
        }
        let mut given = 0;
        let mut fractions: Vec<(f64, usize)> = Vec::with_capacity(open.len());
        for &g in &open {
            let exact = remaining as f64 * weights[g] / weight;
            let floor = (exact.floor() as usize).min(capacities[g] - quotas[g]);
            quotas[g] += floor;
            given += floor;
            fractions.push((exact - exact.floor(), g));
        }
        fractions.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, g) in &fractions {
            if given == remaining {
                break;
            }
            if quotas[g] < capacities[g] {
                quotas[g] += 1;
                given += 1;
            }
        }
        if given == 0 {
            break;
        }
        remaining -= given;
    }
    if total >= eligible.len() {
        for &g in &eligible {
            if quotas[g] == 0 {
                let donor = (0..quotas.len())
                    .filter(|&d| quotas[d] > 1)
                    .max_by(|&a, &b| quotas[a].cmp(&quotas[b]).then(b.cmp(&a)));
                if let Some(donor) = donor {
                    quotas[donor] -= 1;
                    quotas[g] = 1;
                }
            }
        }
    }
    quotas
}

/// FNV-1a: stable across platforms and Rust versions, unlike `DefaultHasher`.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random stream of one (source, category) group: independent of the other groups.
fn group_seed(seed: u64, source: &str, category: &str) -> u64 {
    let key = source.bytes().chain([0]).chain(category.bytes());
    let mut state = seed ^ fnv1a(key);
    splitmix(&mut state)
}

/// Fisher-Yates over a SplitMix64 stream: the recorded seed reproduces the sample whatever the
/// version of the `rand` crate.
fn shuffle(items: &mut [usize], seed: u64) {
    let mut state = seed;
    for i in (1..items.len()).rev() {
        let j = ((u128::from(splitmix(&mut state)) * (i as u128 + 1)) >> 64) as usize;
        items.swap(i, j);
    }
}

/// One named source of a [`MixtureSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixtureSource {
    /// Source name: the prefix of its instances' ids and their [`Instance::dataset`].
    pub name: String,
    /// What to load.
    pub spec: DatasetSpec,
}

/// Several datasets to load as one mixture ([`Dataset::mix`]); serialisable so a run can record it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MixtureSpec {
    /// The sources, in mixture order.
    pub sources: Vec<MixtureSource>,
}

impl MixtureSpec {
    /// An empty mixture.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a source.
    #[must_use]
    pub fn with_source(mut self, name: impl Into<String>, spec: DatasetSpec) -> Self {
        self.sources.push(MixtureSource {
            name: name.into(),
            spec,
        });
        self
    }

    /// Real harmful and benign prompts from the files `cargo xtask fetch-data` places under
    /// `data_dir` (default: [`default_data_dir`](crate::default_data_dir)): HarmBench's 320 test
    /// behaviours and StrongREJECT's 313 forbidden prompts (harmful), and the 80 benign over-refusal
    /// probes. Sources are named after the benchmarks.
    pub fn harmful_and_benign(data_dir: Option<&Path>) -> Self {
        let spec = |benchmark: Benchmark| {
            let mut spec = DatasetSpec::new(benchmark);
            spec.hub.data_dir = data_dir.map(Path::to_path_buf);
            spec
        };
        [
            Benchmark::HarmBench,
            Benchmark::StrongReject,
            Benchmark::OverRefusal,
        ]
        .into_iter()
        .fold(Self::new(), |mixture, benchmark| {
            mixture.with_source(benchmark.name(), spec(benchmark))
        })
    }

    /// The file each source reads (fetching hub files when needed).
    pub fn resolve_paths(&self) -> Result<Vec<PathBuf>> {
        self.sources
            .iter()
            .map(|source| source.spec.resolve_path())
            .collect()
    }

    /// Loads every source and mixes them.
    pub fn load(&self) -> Result<Dataset> {
        if self.sources.is_empty() {
            return Err(Error::InvalidSpec {
                parameter: "mixture",
                reason: "a mixture needs at least one source".to_owned(),
            });
        }
        let parts = self
            .sources
            .iter()
            .map(|source| Ok((source.name.clone(), source.spec.load()?)))
            .collect::<Result<Vec<_>>>()?;
        Dataset::mix(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::allocate;

    #[test]
    fn allocation_covers_every_weighted_group_and_respects_capacity() {
        // 48 over sources of 320, 313 and 80 instances, weights 1:1:2.
        assert_eq!(
            allocate(48, &[1.0, 1.0, 2.0], &[320, 313, 80]),
            [12, 12, 24]
        );
        // A small group is capped; its surplus goes to the others.
        assert_eq!(allocate(30, &[1.0, 1.0, 1.0], &[100, 100, 4]), [13, 13, 4]);
        // Too small to cover every group: the largest shares win, ties to the earlier group.
        assert_eq!(allocate(2, &[1.0, 1.0, 1.0], &[5, 5, 5]), [1, 1, 0]);
        // Zero weight or empty groups get nothing; size above the room takes everything.
        assert_eq!(allocate(10, &[0.0, 1.0, 1.0], &[5, 0, 3]), [0, 0, 3]);
        assert_eq!(allocate(0, &[1.0], &[3]), [0]);
        // Proportional to size; a group the rounding left out takes one from the largest.
        assert_eq!(
            allocate(48, &[320.0, 313.0, 80.0], &[320, 313, 80]),
            [22, 21, 5]
        );
        assert_eq!(allocate(5, &[6.0, 2.0, 2.0], &[6, 2, 2]), [3, 1, 1]);
        assert_eq!(allocate(3, &[10.0, 10.0, 1.0], &[10, 10, 1]), [1, 1, 1]);
    }
}
