//! The report of the committed fixture run, byte for byte: restructuring the report code must not
//! change a word, a number or a plot of it. `UPDATE_GOLDEN=1` rewrites the golden files (only for
//! an intended change, listed in its commit message). The report is rendered from the analysis
//! alone, so rendering it again from the golden `analysis.json`, without the run's records, gives
//! the same files.

use std::path::{Path, PathBuf};

use deepconf_analysis::{AnalysisOptions, analyze_dir, render_report};

fn fixture() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/run-before-records"
    ))
}

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

/// A copy of the fixture run's records (`analyze_dir` writes next to them).
fn fixture_copy() -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for file in ["run.json", "predictions.jsonl", "traces/part-00000.parquet"] {
        let to = copy.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(fixture().join(file), to).unwrap();
    }
    copy
}

/// The files compared: analysis, both reports and every plot's SVG (the PNGs are drawn by the
/// same code as the SVGs, and their encoder's bytes are not ours to pin).
fn outputs(dir: &Path) -> Vec<String> {
    let mut files = vec![
        "analysis.json".to_string(),
        "report.md".to_string(),
        "report.html".to_string(),
    ];
    let mut svgs: Vec<String> = std::fs::read_dir(dir.join("plots"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".svg"))
                .map(|name| format!("plots/{name}"))
                .collect()
        })
        .unwrap_or_default();
    svgs.sort();
    files.extend(svgs);
    files
}

fn assert_same_files(written: &Path, expected: &Path) {
    let files = outputs(written);
    assert_eq!(files, outputs(expected), "the same files");
    for file in files {
        let got = std::fs::read_to_string(written.join(&file)).unwrap();
        let want = std::fs::read_to_string(expected.join(&file)).unwrap();
        if got != want {
            let line = got
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(got.lines().count().min(want.lines().count()));
            panic!(
                "{file} differs from the golden file from line {}:\n  got:  {:?}\n  want: {:?}",
                line + 1,
                got.lines().nth(line),
                want.lines().nth(line)
            );
        }
    }
}

#[test]
fn fixture_report_is_byte_identical_to_the_golden_files() {
    let copy = fixture_copy();
    analyze_dir(copy.path(), &AnalysisOptions::default()).unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let _ = std::fs::remove_dir_all(golden());
        for file in outputs(copy.path()) {
            let to = golden().join(&file);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(copy.path().join(&file), to).unwrap();
        }
    }
    assert_same_files(copy.path(), &golden());
}

#[test]
fn the_report_renders_again_from_analysis_json_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        golden().join("analysis.json"),
        dir.path().join("analysis.json"),
    )
    .unwrap();
    let analysis = render_report(dir.path()).unwrap();
    assert!(!dir.path().join("run.json").exists(), "no records needed");
    assert_eq!(analysis.plots.len(), 9, "{:?}", analysis.plots);
    assert_same_files(dir.path(), &golden());
}
