//! After a run: the analysis with report and plots, and the refusal classifier scored against a
//! dataset's gold labels of its reference responses.

use std::path::{Path, PathBuf};

use deepconf_analysis::{
    Analysis, AnalysisOptions, PLOTS_DIR, REPORT_HTML_FILE, REPORT_MD_FILE, analyze_dir,
};
use deepconf_datasets::Instance;
use deepconf_refusal::{ClassifierEvaluation, LabelledResponse, RefusalClassifier};

use crate::{Error, Result};

/// Where [`write_report`] wrote its files.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFiles {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html` (plots inlined).
    pub html: PathBuf,
    /// `plots/`.
    pub plots: PathBuf,
}

/// Analyses the run in `dir` (no model needed): writes `analysis.json`, `report.md`, `report.html`
/// and the plots, and returns the analysis with the report's paths.
pub fn write_report(dir: &Path) -> Result<(Analysis, ReportFiles)> {
    let analysis = analyze_dir(dir, &AnalysisOptions::default())?;
    Ok((
        analysis,
        ReportFiles {
            markdown: dir.join(REPORT_MD_FILE),
            html: dir.join(REPORT_HTML_FILE),
            plots: dir.join(PLOTS_DIR),
        },
    ))
}

/// The reference responses of `instances` that carry a gold refusal label (WildGuardMix
/// `response_refusal_label`).
pub fn reference_responses(instances: &[Instance]) -> Vec<LabelledResponse> {
    instances
        .iter()
        .filter_map(|instance| {
            Some(LabelledResponse {
                prompt: instance.user_prompt().to_string(),
                response: instance.reference_response.clone()?,
                refusal: instance.reference_refusal?,
            })
        })
        .collect()
}

/// Scores `classifier` on the gold-labelled reference responses of `instances` and writes the result
/// to `out` (JSON) when given. Errors when no instance has a labelled reference response.
pub fn score_classifier(
    classifier: &mut dyn RefusalClassifier,
    instances: &[Instance],
    out: Option<&Path>,
) -> Result<ClassifierEvaluation> {
    let items = reference_responses(instances);
    if items.is_empty() {
        return Err(Error::InvalidParameter {
            parameter: "data",
            value: format!("{} instances", instances.len()),
            reason: "no instance has a reference response with a gold refusal label".into(),
        });
    }
    let evaluation = ClassifierEvaluation::evaluate(classifier, &items)?;
    if let Some(path) = out {
        let json = serde_json::to_string_pretty(&evaluation).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(path, json).map_err(Error::io(path))?;
    }
    Ok(evaluation)
}
