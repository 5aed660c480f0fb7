//! Tokenizer and chat template tests: the real SmolLM2 GGUF against llama.cpp's ids, and a
//! tiny `tokenizer.json` built for these tests.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use deepconf_candle::chat::{ChatTemplate, RenderOptions};
use deepconf_candle::tokenizer::Tokenizer;
use deepconf_core::ChatMessage;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// The default model; a missing file fails the test with the command that fetches it.
fn default_model() -> PathBuf {
    let path = deepconf_candle::default_model_path();
    assert!(
        path.is_file(),
        "the default model is missing at {}: run `cargo xtask fetch-model` first",
        path.display()
    );
    path
}

fn smollm2_content() -> gguf_file::Content {
    let path = default_model();
    let mut file = std::fs::File::open(&path).expect("open the default model");
    gguf_file::Content::read(&mut file).expect("read GGUF metadata")
}

fn smollm2() -> Tokenizer {
    Tokenizer::from_gguf(&smollm2_content()).expect("build the SmolLM2 tokenizer")
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

fn reference_cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixture("tokenizer_smollm2.json")).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

#[test]
fn smollm2_ids_equal_llama_cpp_on_every_reference_string() {
    let tokenizer = smollm2();
    let cases = reference_cases();
    assert!(
        cases.len() >= 30,
        "the fixture has only {} cases",
        cases.len()
    );
    let mismatches: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let ids = tokenizer.encode(&case.text, true).expect("encode");
            (ids != case.ids)
                .then(|| format!("{:?}: got {ids:?}, llama.cpp {:?}", case.text, case.ids))
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "mismatches:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn smollm2_decode_inverts_encode() {
    let tokenizer = smollm2();
    for case in reference_cases() {
        let ids = tokenizer.encode(&case.text, true).expect("encode");
        assert_eq!(tokenizer.decode(&ids, false).expect("decode"), case.text);
    }
}

#[test]
fn smollm2_metadata_is_read() {
    let tokenizer = smollm2();
    assert_eq!(tokenizer.vocab_size(), 49_152);
    assert_eq!(tokenizer.eos_token_ids().first(), Some(&2));
    assert_eq!(tokenizer.bos_token_id(), Some(1));
    assert!(!tokenizer.add_bos());
    assert_eq!(tokenizer.token_text(2), Some("<|im_end|>"));
    assert_eq!(tokenizer.token_text(17), Some("!"));
    assert_eq!(tokenizer.token_text(49_152), None);
}

#[test]
fn smollm2_special_tokens_are_parsed_only_when_asked() {
    let tokenizer = smollm2();
    let text = "<|im_start|>user\nHi<|im_end|>";
    let parsed = tokenizer.encode(text, true).unwrap();
    assert_eq!(parsed.first(), Some(&1));
    assert_eq!(parsed.last(), Some(&2));
    let literal = tokenizer.encode(text, false).unwrap();
    assert!(
        !literal.contains(&1) && !literal.contains(&2),
        "{literal:?}"
    );
    assert!(literal.len() > parsed.len());
    assert_eq!(tokenizer.decode(&literal, false).unwrap(), text);
    assert_eq!(tokenizer.decode(&parsed, true).unwrap(), "user\nHi");
}

#[test]
fn decoding_joins_multibyte_characters_split_over_tokens() {
    let tokenizer = smollm2();
    let ids = tokenizer.encode("👨‍👩‍👧", false).unwrap();
    assert!(ids.len() > 1);
    let pieces: String = ids
        .iter()
        .map(|&id| tokenizer.decode(&[id], false).unwrap())
        .collect();
    assert!(
        pieces.contains('\u{FFFD}'),
        "single tokens are partial bytes"
    );
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), "👨‍👩‍👧");
    assert!(tokenizer.decode(&[49_152], false).is_err());
}

const SMOLLM_DEFAULT_SYSTEM: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";

#[test]
fn smollm2_chat_template_renders_chatml() {
    let template = ChatTemplate::from_gguf(&smollm2_content())
        .unwrap()
        .expect("the GGUF has a chat template");
    let options = RenderOptions::default();
    let user_only = template
        .render(&[ChatMessage::user("How do I bake bread?")], &options)
        .unwrap();
    assert_eq!(
        user_only,
        format!(
            "{SMOLLM_DEFAULT_SYSTEM}<|im_start|>user\nHow do I bake bread?<|im_end|>\n<|im_start|>assistant\n"
        )
    );
    let with_system = template
        .render(
            &[ChatMessage::system("Be brief."), ChatMessage::user("Hi")],
            &RenderOptions {
                add_generation_prompt: false,
                ..RenderOptions::default()
            },
        )
        .unwrap();
    assert_eq!(
        with_system,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
    let ids = smollm2().encode(&user_only, true).unwrap();
    assert_eq!(ids.iter().filter(|&&id| id == 1).count(), 3);
    assert_eq!(ids.iter().filter(|&&id| id == 2).count(), 2);
}

const QWEN3_STYLE_TEMPLATE: &str = r#"{%- if messages[0].role == 'system' %}
{{- '<|im_start|>system\n' + messages[0].content.strip() + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'assistant' and loop.first %}{{ raise_exception('conversation must start with a user message') }}{% endif %}
{%- if message.role == 'user' %}
{{- '<|im_start|>user\n' + message.content + '<|im_end|>\n' }}
{%- elif message.role == 'assistant' %}
{%- set content = message.content.split('</think>')[-1].lstrip('\n') %}
{{- '<|im_start|>assistant\n' + content + '<|im_end|>\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\n' }}
{%- if enable_thinking is defined and enable_thinking is false %}
{{- '<think>\n\n</think>\n\n' }}
{%- endif %}
{%- endif %}"#;

#[test]
fn qwen3_style_template_honours_enable_thinking() {
    let template = ChatTemplate::new(QWEN3_STYLE_TEMPLATE, "test").unwrap();
    let messages = [
        ChatMessage::system("  Be safe.  "),
        ChatMessage::user("Hi"),
        ChatMessage::assistant("<think>\nhmm\n</think>\n\nHello!"),
        ChatMessage::user("Bye"),
    ];
    let expected_history = "<|im_start|>system\nBe safe.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n";
    let no_thinking = template
        .render(&messages, &RenderOptions::default())
        .unwrap();
    assert_eq!(
        no_thinking,
        format!("{expected_history}<think>\n\n</think>\n\n")
    );
    let thinking = template
        .render(
            &messages,
            &RenderOptions {
                enable_thinking: true,
                ..RenderOptions::default()
            },
        )
        .unwrap();
    assert_eq!(thinking, expected_history);
}

#[test]
fn raise_exception_becomes_an_error_with_its_message() {
    let template = ChatTemplate::new(QWEN3_STYLE_TEMPLATE, "test").unwrap();
    let err = template
        .render(&[ChatMessage::assistant("hi")], &RenderOptions::default())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("conversation must start with a user message"),
        "{err}"
    );
    assert!(
        ChatTemplate::new("{% if %}", "broken.jinja")
            .unwrap_err()
            .to_string()
            .contains("broken.jinja")
    );
}

#[test]
fn tiny_tokenizer_json_encodes_and_decodes() {
    let tokenizer = Tokenizer::from_tokenizer_json(&fixture("tokenizer_tiny.json")).unwrap();
    assert_eq!(tokenizer.vocab_size(), 22);
    assert_eq!(tokenizer.encode("abc ab", false).unwrap(), vec![16, 18]);
    // " ab": `a b` (rank 0) merges before `Ġ a` (rank 2), then `Ġ ab` applies.
    assert_eq!(tokenizer.encode(" a", false).unwrap(), vec![17]);
    // " abc": `ab c` (rank 1) wins over `Ġ ab` (rank 3), and `Ġ abc` is no merge.
    assert_eq!(tokenizer.encode(" abc", false).unwrap(), vec![8, 16]);
    assert_eq!(tokenizer.encode("abcd", false).unwrap(), vec![16, 7]);
    assert_eq!(tokenizer.encode("ba", false).unwrap(), vec![5, 4]);
    assert_eq!(tokenizer.encode("12", false).unwrap(), vec![10, 11]);
    // `\s+(?!\S)` leaves the last space of a run to the next word; a trailing run stays whole.
    assert_eq!(tokenizer.encode("a  b", false).unwrap(), vec![4, 8, 8, 5]);
    assert_eq!(tokenizer.encode("a   ", false).unwrap(), vec![4, 19, 8]);
    // NFC: a decomposed é becomes the precomposed one before byte-level BPE.
    assert_eq!(tokenizer.encode("e\u{301}!", false).unwrap(), vec![20, 12]);
    assert_eq!(
        tokenizer.encode("<|im_start|>ab<|im_end|>", true).unwrap(),
        vec![1, 15, 2]
    );
    // Without parse_special the markup is text, and '<' is not in this vocabulary.
    assert!(tokenizer.encode("<|im_start|>", false).is_err());
    // Non-special added tokens are always recognised.
    assert_eq!(
        tokenizer.encode("ab<tool>ab", false).unwrap(),
        vec![15, 3, 15]
    );
    assert_eq!(
        tokenizer.decode(&[1, 15, 2, 21, 3], false).unwrap(),
        "<|im_start|>ab<|im_end|> abc<tool>"
    );
    assert_eq!(tokenizer.decode(&[1, 15, 2], true).unwrap(), "ab");
    assert_eq!(tokenizer.decode(&[13], false).unwrap(), "\u{FFFD}");
    assert_eq!(tokenizer.decode(&[13, 14], false).unwrap(), "é");
    assert!(tokenizer.eos_token_ids().is_empty());
}

#[test]
fn tokenizer_config_next_to_tokenizer_json_sets_eos_and_chat_template() {
    let dir = std::env::temp_dir().join(format!("deepconf-tokenizer-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("tokenizer_tiny.json"), dir.join("tokenizer.json")).unwrap();
    let config = serde_json::json!({
        "eos_token": "<|im_end|>",
        "bos_token": null,
        "chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{% for m in messages %}[{{ m.role }}:{{ m.content | upper }}]{% endfor %}"}
        ]
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let tokenizer = Tokenizer::from_tokenizer_json(&dir.join("tokenizer.json")).unwrap();
    assert_eq!(tokenizer.eos_token_ids(), &[2]);
    assert_eq!(tokenizer.bos_token_id(), None);
    let template = ChatTemplate::from_tokenizer_config(&dir.join("tokenizer_config.json"))
        .unwrap()
        .expect("a default template");
    let rendered = template
        .render(&[ChatMessage::user("hi")], &RenderOptions::default())
        .unwrap();
    assert_eq!(rendered, "[user:HI]");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unsupported_tokenizer_json_is_an_error_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("deepconf-tokenizer-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, r#"{"model": {"type": "Unigram", "vocab": []}}"#).unwrap();
    let err = Tokenizer::from_tokenizer_json(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("Unigram"),
        "{err}"
    );
    std::fs::write(&path, "{ not json").unwrap();
    let err = Tokenizer::from_tokenizer_json(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 1"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hub_offline_uses_the_cache_and_names_what_is_missing() {
    use deepconf_candle::hub::{HubOptions, resolve_repo_files_with};
    let cache = std::env::temp_dir().join(format!("deepconf-hub-test-{}", std::process::id()));
    let options = HubOptions {
        cache_dir: Some(cache.clone()),
        offline: true,
    };
    let err = resolve_repo_files_with(
        &options,
        "owner/model",
        None,
        &["tokenizer.json", "config.json"],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`owner/model`"), "{err}");
    assert!(err.contains("tokenizer.json, config.json"), "{err}");
    let snapshot = cache
        .join("models--owner--model")
        .join("snapshots")
        .join("main");
    assert!(err.contains(&snapshot.display().to_string()), "{err}");

    // Following the error's instructions makes the files resolve without the network.
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(cache.join("models--owner--model").join("refs")).unwrap();
    std::fs::write(
        cache.join("models--owner--model").join("refs").join("main"),
        "main",
    )
    .unwrap();
    std::fs::write(snapshot.join("tokenizer.json"), "{}").unwrap();
    std::fs::write(snapshot.join("config.json"), "{}").unwrap();
    let paths = resolve_repo_files_with(
        &options,
        "owner/model",
        None,
        &["tokenizer.json", "config.json"],
    )
    .unwrap();
    assert_eq!(
        paths,
        vec![
            snapshot.join("tokenizer.json"),
            snapshot.join("config.json")
        ]
    );
    assert!(resolve_repo_files_with(&options, "no-slash", None, &["a"]).is_err());
    std::fs::remove_dir_all(&cache).unwrap();
}
