//! llama.cpp's own tokenizer tests (`models/ggml-vocab-*.gguf` with `.gguf.inp` / `.gguf.out` in
//! the llama-cpp-python 0.3.36 sdist) run against our tokenizer: every case of every vocabulary
//! we support must give llama.cpp's ids. Every vocabulary the sdist ships is either in
//! [`SUPPORTED`] or in [`UNSUPPORTED`] with the reason, and the unsupported ones must be refused
//! with an error, so neither list can go stale silently.

use std::path::PathBuf;

use deepconf_candle::tokenizer::Tokenizer;

use crate::common::llama_cpp;

/// Vocabularies whose every case must match.
const SUPPORTED: &[&str] = &[
    "command-r",
    "deepseek-coder",
    "deepseek-llm",
    "falcon",
    "gpt-2",
    "llama-bpe",
    "llama-spm",
    "mpt",
    "phi-3",
    "qwen2",
    "qwen35",
    "refact",
    "starcoder",
];

/// Vocabularies we refuse to load, and why.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("bert-bge", "WordPiece (`tokenizer.ggml.model = bert`)"),
    (
        "gemma-4",
        "Gemma 4's tokenizer (`tokenizer.ggml.model = gemma4`)",
    ),
];

fn vocab_path(name: &str) -> PathBuf {
    llama_cpp::sources()
        .join("models")
        .join(format!("ggml-vocab-{name}.gguf"))
}

/// The cases of a vocabulary, read as llama.cpp's `test-tokenizer-0` reads them: inputs
/// separated by `\n__ggml_vocab_test__\n`, expected ids one line per input.
fn cases(name: &str) -> Vec<(String, Vec<u32>)> {
    let path = vocab_path(name);
    let inputs = std::fs::read_to_string(path.with_extension("gguf.inp")).unwrap();
    let outputs = std::fs::read_to_string(path.with_extension("gguf.out")).unwrap();
    let separator = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut at = 0;
    while at < inputs.len() {
        match inputs[at..].find(separator) {
            Some(offset) => {
                texts.push(inputs[at..at + offset].to_string());
                at += offset + separator.len();
            }
            None => {
                texts.push(inputs[at..].to_string());
                break;
            }
        }
    }
    let ids: Vec<Vec<u32>> = outputs
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(|id| id.parse().expect("a token id"))
                .collect()
        })
        .collect();
    assert_eq!(
        texts.len(),
        ids.len(),
        "{name}: inputs and outputs differ in count"
    );
    texts.into_iter().zip(ids).collect()
}

fn check_vocabulary(name: &str) {
    let tokenizer =
        Tokenizer::from_gguf_path(&vocab_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let cases = cases(name);
    assert!(cases.len() >= 40, "{name}: only {} cases", cases.len());
    let mismatches: Vec<String> = cases
        .iter()
        .filter_map(|(text, want)| {
            let got = tokenizer.encode(text, false).expect("encode");
            (&got != want).then(|| format!("{text:?}:\n  ours      {got:?}\n  llama.cpp {want:?}"))
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

macro_rules! vocabulary_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check_vocabulary($name);
            }
        )*

        /// The tests above, by vocabulary name, to check them against [`SUPPORTED`].
        const TESTED: &[&str] = &[$($name),*];
    };
}

vocabulary_tests! {
    command_r_cases_equal_llama_cpp => "command-r",
    deepseek_coder_cases_equal_llama_cpp => "deepseek-coder",
    deepseek_llm_cases_equal_llama_cpp => "deepseek-llm",
    falcon_cases_equal_llama_cpp => "falcon",
    gpt_2_cases_equal_llama_cpp => "gpt-2",
    llama_bpe_cases_equal_llama_cpp => "llama-bpe",
    llama_spm_cases_equal_llama_cpp => "llama-spm",
    mpt_cases_equal_llama_cpp => "mpt",
    phi_3_cases_equal_llama_cpp => "phi-3",
    qwen2_cases_equal_llama_cpp => "qwen2",
    qwen35_cases_equal_llama_cpp => "qwen35",
    refact_cases_equal_llama_cpp => "refact",
    starcoder_cases_equal_llama_cpp => "starcoder",
}

#[test]
fn every_shipped_vocabulary_is_tested_or_refused() {
    assert_eq!(TESTED, SUPPORTED);
    let models = llama_cpp::sources().join("models");
    let mut shipped: Vec<String> = std::fs::read_dir(&models)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            Some(
                name.strip_prefix("ggml-vocab-")?
                    .strip_suffix(".gguf.inp")?
                    .to_string(),
            )
        })
        .collect();
    shipped.sort();
    assert!(
        shipped.len() >= 15,
        "only {shipped:?} in {}",
        models.display()
    );
    for name in &shipped {
        let supported = SUPPORTED.contains(&name.as_str());
        let refused = UNSUPPORTED.iter().any(|(n, _)| n == name);
        assert!(
            supported ^ refused,
            "{name}: list it in exactly one of SUPPORTED and UNSUPPORTED"
        );
    }
    for (name, why) in UNSUPPORTED {
        assert!(shipped.iter().any(|s| s == name), "{name} is not shipped");
        let err = Tokenizer::from_gguf_path(&vocab_path(name))
            .expect_err(&format!("{name} ({why}) loads: move it to SUPPORTED"));
        assert!(err.to_string().contains("not supported"), "{name}: {err}");
    }
}

#[test]
fn sentencepiece_decoding_inverts_encoding() {
    for name in ["llama-spm", "phi-3"] {
        let tokenizer = Tokenizer::from_gguf_path(&vocab_path(name)).unwrap();
        assert!(tokenizer.is_sentencepiece());
        assert!(tokenizer.add_bos());
        assert_eq!(tokenizer.bos_token_id(), Some(1));
        // `</s>` ends generation, whatever the metadata names as eos.
        assert!(tokenizer.eos_token_ids().contains(&2));
        for (text, ids) in cases(name) {
            // SentencePiece cannot tell a leading space from its own prefix space.
            if text.starts_with(' ') {
                continue;
            }
            assert_eq!(tokenizer.decode(&ids, false).unwrap(), text, "{name}");
        }
        // Byte fallback: characters without a piece become their UTF-8 bytes.
        let ids = tokenizer.encode("🦙", false).unwrap();
        let bytes: Vec<&str> = ids
            .iter()
            .map(|&id| tokenizer.token_text(id).unwrap())
            .collect();
        assert_eq!(
            bytes,
            ["▁", "<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"],
            "{name}"
        );
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), "🦙");
    }
}

#[test]
fn phi_3_special_tokens_take_the_whitespace_after_them() {
    let tokenizer = Tokenizer::from_gguf_path(&vocab_path("phi-3")).unwrap();
    let user = tokenizer.token_id("<|user|>").unwrap();
    let end = tokenizer.token_id("<|end|>").unwrap();
    assert!(tokenizer.eos_token_ids().contains(&end));
    let ids = tokenizer.encode("<|user|>\nHi<|end|>\n", true).unwrap();
    // No newline token after either special token, and no prefix space before "Hi" beyond the
    // one SentencePiece adds after a special token.
    assert_eq!(ids.first(), Some(&user));
    assert_eq!(ids.last(), Some(&end));
    assert_eq!(
        tokenizer.decode(&ids[1..ids.len() - 1], false).unwrap(),
        "Hi"
    );
}
