//! Loading a 5,000-row ToxicChat-schema file: the parquet conversion, with the same rows as CSV as
//! the same-run peer. The fixture files are generated here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use criterion::{Criterion, criterion_group, criterion_main};
use deepconf_datasets::{Benchmark, DatasetSpec};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

const ROWS: usize = 5_000;

struct Row {
    conv_id: String,
    user_input: String,
    model_output: String,
    toxic: bool,
    jailbreaking: bool,
}

/// Deterministic rows of realistic length (ToxicChat prompts are a few hundred characters).
fn rows() -> Vec<Row> {
    (0..ROWS)
        .map(|i| {
            let words = 20 + (i * 7919) % 80;
            let user_input = (0..words)
                .map(|w| {
                    [
                        "please", "explain", "how", "the", "weather", "works", "in", "detail,",
                    ][(i + w) % 8]
                })
                .collect::<Vec<_>>()
                .join(" ");
            Row {
                conv_id: format!("{:032x}", (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                model_output: format!("Answer {i}: {}", user_input.to_uppercase()),
                user_input,
                toxic: i % 14 == 0,
                jailbreaking: i % 50 == 0,
            }
        })
        .collect()
}

fn write_parquet(path: &Path, rows: &[Row]) {
    let text = |f: fn(&Row) -> &str| -> ArrayRef {
        Arc::new(rows.iter().map(|row| Some(f(row))).collect::<StringArray>())
    };
    let flag = |f: fn(&Row) -> bool| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(|row| Some(i64::from(f(row))))
                .collect::<Int64Array>(),
        )
    };
    let batch = RecordBatch::try_from_iter([
        ("conv_id", text(|row| &row.conv_id)),
        ("user_input", text(|row| &row.user_input)),
        ("model_output", text(|row| &row.model_output)),
        (
            "human_annotation",
            Arc::new(
                rows.iter()
                    .map(|row| Some(row.toxic))
                    .collect::<BooleanArray>(),
            ) as ArrayRef,
        ),
        ("toxicity", flag(|row| row.toxic)),
        ("jailbreaking", flag(|row| row.jailbreaking)),
        (
            "openai_moderation",
            text(|_| "[[\"sexual\", 0.0001], [\"harassment\", 0.0002]]"),
        ),
    ])
    .expect("batch");
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(path).expect("create"),
        batch.schema(),
        Some(properties),
    )
    .expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

fn write_csv(path: &Path, rows: &[Row]) {
    let mut writer = csv::Writer::from_path(path).expect("csv");
    writer
        .write_record([
            "conv_id",
            "user_input",
            "model_output",
            "human_annotation",
            "toxicity",
            "jailbreaking",
            "openai_moderation",
        ])
        .expect("header");
    for row in rows {
        let toxicity = u8::from(row.toxic).to_string();
        let jailbreaking = u8::from(row.jailbreaking).to_string();
        let annotation = if row.toxic { "True" } else { "False" };
        writer
            .write_record([
                &row.conv_id,
                &row.user_input,
                &row.model_output,
                annotation,
                &toxicity,
                &jailbreaking,
                "[]",
            ])
            .expect("row");
    }
    writer.flush().expect("flush");
}

fn fixtures(dir: &Path) -> (PathBuf, PathBuf) {
    let rows = rows();
    let parquet = dir.join("toxicchat-5000.parquet");
    let csv = dir.join("toxicchat-5000.csv");
    write_parquet(&parquet, &rows);
    write_csv(&csv, &rows);
    (parquet, csv)
}

fn load(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (parquet, csv) = fixtures(dir.path());
    let mut group = c.benchmark_group("load_toxicchat_5000");
    for (name, path) in [("parquet", &parquet), ("csv", &csv)] {
        let spec = DatasetSpec::local(Benchmark::ToxicChat, path);
        assert_eq!(spec.load().expect("load").len(), ROWS);
        group.bench_function(name, |b| b.iter(|| spec.load().expect("load")));
    }
    group.finish();
}

criterion_group!(benches, load);
criterion_main!(benches);
