//! Every error names the file and the column or row at fault.

use deepconf_datasets::{Benchmark, DatasetSpec, Error};

use crate::common::{TOXICCHAT_HEADER, ints, strings, write_parquet, write_text};

fn load_error(benchmark: Benchmark, path: &std::path::Path) -> (Error, String) {
    let error = DatasetSpec::local(benchmark, path)
        .load()
        .expect_err("load must fail");
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "message does not name the file: {message}"
    );
    (error, message)
}

#[test]
fn missing_file_names_the_path_and_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("toxic-chat_annotation_test.csv");
    let (error, message) = load_error(Benchmark::ToxicChat, &path);
    assert!(matches!(error, Error::FileNotFound { .. }), "{error:?}");
    assert!(message.contains("lmsys/toxic-chat"), "{message}");

    let harmbench = dir.path().join("harmbench_behaviors_text_test.csv");
    let (_, message) = load_error(Benchmark::HarmBench, &harmbench);
    assert!(
        message.contains("cargo xtask fetch-data harmbench"),
        "{message}"
    );
}

#[test]
fn missing_column_names_the_column_and_the_present_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_text(
        dir.path(),
        "tc.csv",
        "conv_id,user_input,model_output\nx,hello,hi\n",
    );
    let (error, message) = load_error(Benchmark::ToxicChat, &path);
    assert!(matches!(error, Error::MissingColumn { .. }), "{error:?}");
    assert!(message.contains("column `toxicity`"), "{message}");
    assert!(
        message.contains("conv_id, user_input, model_output"),
        "{message}"
    );
}

#[test]
fn wrong_type_in_parquet_names_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_parquet(
        dir.path(),
        "tc.parquet",
        vec![
            ("conv_id", strings(&[Some("a")])),
            ("user_input", ints(&[Some(42)])),
            ("toxicity", ints(&[Some(0)])),
        ],
    );
    let (error, message) = load_error(Benchmark::ToxicChat, &path);
    assert!(matches!(error, Error::WrongType { .. }), "{error:?}");
    assert!(
        message.contains("row 1") && message.contains("column `user_input`"),
        "{message}"
    );
    assert!(
        message.contains("expected string, found integer"),
        "{message}"
    );
}

#[test]
fn unparseable_agreement_is_a_wrong_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_parquet(
        dir.path(),
        "wg.parquet",
        vec![
            ("prompt", strings(&[Some("p1"), Some("p2")])),
            (
                "prompt_harm_label",
                strings(&[Some("harmful"), Some("harmful")]),
            ),
            (
                "prompt_harm_agreement",
                strings(&[Some("3.0"), Some("high")]),
            ),
        ],
    );
    let (_, message) = load_error(Benchmark::WildGuardMix, &path);
    assert!(
        message.contains("row 2") && message.contains("column `prompt_harm_agreement`"),
        "{message}"
    );
    assert!(message.contains("\"high\""), "{message}");
}

#[test]
fn unknown_label_names_value_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_parquet(
        dir.path(),
        "wg.parquet",
        vec![
            ("prompt", strings(&[Some("p1"), Some("p2")])),
            (
                "prompt_harm_label",
                strings(&[Some("harmful"), Some("maybe")]),
            ),
        ],
    );
    let (error, message) = load_error(Benchmark::WildGuardMix, &path);
    assert!(matches!(error, Error::UnknownLabel { .. }), "{error:?}");
    assert!(
        message.contains("row 2") && message.contains("column `prompt_harm_label`"),
        "{message}"
    );
    assert!(
        message.contains("\"maybe\"") && message.contains("harmful, unharmful"),
        "{message}"
    );

    let csv = write_text(
        dir.path(),
        "tc.csv",
        &format!("{TOXICCHAT_HEADER}\na,hi,hello,False,0,0,[]\nb,hey,yo,False,2,0,[]\n"),
    );
    let (_, message) = load_error(Benchmark::ToxicChat, &csv);
    assert!(
        message.contains("row 2 (line 3)") && message.contains("column `toxicity`"),
        "{message}"
    );
}

#[test]
fn empty_prompt_names_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_text(
        dir.path(),
        "tc.csv",
        &format!("{TOXICCHAT_HEADER}\na,hi,hello,False,0,0,[]\nb,\"  \",yo,False,1,0,[]\n"),
    );
    let (error, message) = load_error(Benchmark::ToxicChat, &path);
    assert!(matches!(error, Error::EmptyPrompt { .. }), "{error:?}");
    assert!(
        message.contains("row 2") && message.contains("column `user_input`"),
        "{message}"
    );

    let parquet = write_parquet(
        dir.path(),
        "wg.parquet",
        vec![
            ("prompt", strings(&[None])),
            ("prompt_harm_label", strings(&[Some("harmful")])),
        ],
    );
    let (_, message) = load_error(Benchmark::WildGuardMix, &parquet);
    assert!(
        message.contains("row 1, column `prompt`: empty prompt"),
        "{message}"
    );
}

#[test]
fn unknown_harmbench_functional_category() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_text(
        dir.path(),
        "hb.csv",
        "Behavior,FunctionalCategory,SemanticCategory,Tags,ContextString,BehaviorID\n\
         Do X,standard,illegal,,,x1\n\
         Do Y,multimodal,illegal,,,y1\n",
    );
    let (_, message) = load_error(Benchmark::HarmBench, &path);
    assert!(
        message.contains("row 2") && message.contains("column `FunctionalCategory`"),
        "{message}"
    );
    assert!(message.contains("\"multimodal\""), "{message}");
}

#[test]
fn ragged_csv_row_names_row_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_text(
        dir.path(),
        "x.csv",
        "id,prompt,type,label,focus,note\n1,hi,homonyms,safe,kill,\n2,oops\n",
    );
    let (error, message) = load_error(Benchmark::XsTest, &path);
    assert!(matches!(error, Error::Csv { .. }), "{error:?}");
    assert!(
        message.contains("row 2") && message.contains("line 3"),
        "{message}"
    );
}
