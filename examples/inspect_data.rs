//! Run with: `cargo run --example inspect_data -- --benchmark harmbench --instances --limit 5`
//!
//! Loads a benchmark (a local file with `--data`, otherwise the default hub file or a placed copy
//! under the deepconf data dir), prints the load summary as one JSON object and, with
//! `--instances`, one JSON line per instance.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use deepconf_datasets::{Benchmark, ColumnMapping, DatasetSpec, Split};
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    /// toxicchat | wildguardmix | harmbench | xstest | jsonl (any JSONL/CSV/parquet of prompts).
    #[arg(long)]
    benchmark: String,
    /// Local data file; without it the benchmark's hub file (or a placed copy) is used.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Read at most N rows.
    #[arg(long)]
    limit: Option<usize>,
    /// train | validation | test.
    #[arg(long, default_value = "test")]
    split: String,
    /// Config, e.g. toxicchat1123 or contextual.
    #[arg(long)]
    config: Option<String>,
    /// Keep only this category.
    #[arg(long)]
    category: Option<String>,
    /// Stratified sample of this many instances (keeps the harmful/benign ratio).
    #[arg(long)]
    sample: Option<usize>,
    /// Seed of `--sample`.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Generic files: prompt column.
    #[arg(long, default_value = "prompt")]
    prompt_column: String,
    /// Generic files: gold label column.
    #[arg(long)]
    label_column: Option<String>,
    /// Generic files: id column.
    #[arg(long)]
    id_column: Option<String>,
    /// Generic files: category column.
    #[arg(long)]
    category_column: Option<String>,
    /// Also print one JSON line per instance.
    #[arg(long)]
    instances: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let benchmark: Benchmark = args.benchmark.parse()?;
    let mut columns = ColumnMapping::new(&args.prompt_column);
    columns.label = args.label_column;
    columns.id = args.id_column;
    columns.category = args.category_column;
    let mut spec = DatasetSpec::new(benchmark)
        .with_split(args.split.parse::<Split>()?)
        .with_columns(columns);
    spec.config = args.config;
    spec.limit = args.limit;
    if let Some(path) = args.data {
        spec = spec.with_path(path);
    }
    let mut dataset = spec.load().context("loading the benchmark")?;
    if let Some(category) = &args.category {
        dataset = dataset.with_category(category);
    }
    if let Some(size) = args.sample {
        dataset = dataset.stratified_sample(size, args.seed);
    }

    println!("{}", serde_json::to_string(&dataset.summary)?);
    if args.instances {
        for instance in &dataset {
            let line = json!({
                "id": instance.id,
                "prompt": instance.user_prompt(),
                "harmful": instance.harmful,
                "category": instance.category,
                "reference_refusal": instance.reference_refusal,
            });
            println!("{line}");
        }
    }
    Ok(())
}
