//! The files of an analysis in a run directory: [`analyze_dir`] computes the analysis from the
//! run's records and writes `analysis.json`; the report (`report.md`, `report.html`,
//! `plots/*.png|svg`) is rendered from the analysis alone, so [`render_report`] can write it again
//! from `analysis.json` without the records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::analysis::{Analysis, AnalysisOptions, analyze_run};
use crate::error::{Error, Result, io_error};
use crate::plots::RenderedPlot;
use crate::report::{build_report, draw_plots, title};
use deepconf_records::read_run;

/// File name of the analysis results.
pub const ANALYSIS_FILE: &str = "analysis.json";
/// File name of the Markdown report.
pub const REPORT_MD_FILE: &str = "report.md";
/// File name of the HTML report.
pub const REPORT_HTML_FILE: &str = "report.html";
/// Directory of the plots.
pub const PLOTS_DIR: &str = "plots";

/// Reads the run in `dir`, analyses it and writes `analysis.json`, `report.md`, `report.html` and
/// (unless disabled) `plots/*.png` and `plots/*.svg` into `dir`.
pub fn analyze_dir(dir: &Path, options: &AnalysisOptions) -> Result<Analysis> {
    let records = read_run(dir)?;
    let mut analysis = analyze_run(&records, options)?;
    if let Some(live_dir) = &options.live_run {
        let live = read_run(live_dir)?;
        analysis.findings.live_check = Some(crate::crosscheck::cross_check(&records, &live)?);
    }
    let rendered = draw(&mut analysis, dir)?;
    let json_path = dir.join(ANALYSIS_FILE);
    let json = serde_json::to_string_pretty(&analysis).map_err(|e| Error::Json {
        path: json_path.clone(),
        line: None,
        message: e.to_string(),
    })?;
    std::fs::write(&json_path, json).map_err(io_error(&json_path))?;
    write_documents(&analysis, rendered, dir)?;
    Ok(analysis)
}

/// Renders the report of `dir` again from its `analysis.json` alone (no records needed): the plots
/// (when the analysis was made with them), `report.md` and `report.html`. `analysis.json` is left
/// as it is; the analysis read is returned with the plots drawn.
pub fn render_report(dir: &Path) -> Result<Analysis> {
    let mut analysis = read_analysis(dir)?;
    let rendered = draw(&mut analysis, dir)?;
    write_documents(&analysis, rendered, dir)?;
    Ok(analysis)
}

/// Draws the plots the options ask for into `dir/plots` and lists them in the analysis, which the
/// report then reads to place its figures.
fn draw(analysis: &mut Analysis, dir: &Path) -> Result<Vec<RenderedPlot>> {
    let rendered = if analysis.options.plots {
        draw_plots(analysis, &dir.join(PLOTS_DIR))?
    } else {
        Vec::new()
    };
    analysis.plots = rendered.iter().map(|p| p.name.clone()).collect();
    Ok(rendered)
}

fn write_documents(analysis: &Analysis, rendered: Vec<RenderedPlot>, dir: &Path) -> Result<()> {
    let document = build_report(analysis);
    let md_path = dir.join(REPORT_MD_FILE);
    std::fs::write(&md_path, document.to_markdown()).map_err(io_error(&md_path))?;
    let svgs: BTreeMap<String, String> =
        rendered.into_iter().map(|p| (p.name, p.svg_text)).collect();
    let html_path = dir.join(REPORT_HTML_FILE);
    let html = document.to_html(&title(analysis), &svgs);
    std::fs::write(&html_path, html).map_err(io_error(&html_path))
}

/// Reads `analysis.json` back.
pub fn read_analysis(dir: &Path) -> Result<Analysis> {
    let path: PathBuf = dir.join(ANALYSIS_FILE);
    let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path,
        line: Some(e.line()),
        message: e.to_string(),
    })
}
