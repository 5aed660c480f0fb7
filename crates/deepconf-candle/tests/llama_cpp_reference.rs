//! Forward passes checked against llama.cpp (llama-cpp-python 0.3.36) on small random-weight
//! GGUF files written with llama.cpp's own GGUF writer and quantized with its `llama-quantize`:
//!
//! - a random Qwen3 as F32 GGUF: greedy tokens equal and top-20 logprobs within 1e-4 of
//!   llama.cpp's, and the same checkpoint as safetensors gives our GGUF path's logprobs;
//! - that Qwen3 in every quantized type the kernels run: greedy tokens equal, and our top-20
//!   logprobs no further from llama.cpp's on the quantized file than llama.cpp's quantized run
//!   is from its own F32 run (teacher-forced on the same tokens);
//! - a random Llama with a SentencePiece vocabulary, plain and with each RoPE scaling
//!   (frequency factors, linear, YaRN): tokenization, greedy tokens and logprobs (1e-4);
//! - what we refuse (LongRoPE, Q2_K under `WeightFormat::Native`) fails with an error that names
//!   the GGUF key or tensor.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use deepconf_candle::{CandleModel, ModelSource, WeightFormat};
use deepconf_core::{GenerationRequest, NoObserver, SamplingParams, TokenStep, TraceSpec};

use crate::common::{self, Qwen3Shape, llama_cpp};

/// Greedy steps per comparison.
const STEPS: usize = 12;

/// Dimensions that are multiples of the K-quants' 256-value super-blocks.
const QWEN3: Qwen3Shape = Qwen3Shape {
    hidden: 256,
    inter: 512,
    layers: 2,
    heads: 4,
    kv_heads: 2,
    head_dim: 64,
    embedding_scale: 0.1,
    norm_noise: 0.1,
};

/// One llama.cpp run: the tokens it produced (or was forced through) and its top-20
/// `(id, logprob)` before each.
#[derive(Debug, serde::Deserialize)]
struct Reference {
    tokens: Vec<u32>,
    top: Vec<Vec<(u32, f32)>>,
    ended: bool,
}

fn llama_cpp_run(model: &Path, prompt: &[u32], forced: Option<&[u32]>) -> Reference {
    let prompt = serde_json::to_string(prompt).unwrap();
    let steps = STEPS.to_string();
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("run"),
        model.as_os_str(),
        OsStr::new(&steps),
        OsStr::new(&prompt),
    ];
    let forced = forced.map(|f| serde_json::to_string(f).unwrap());
    if let Some(forced) = &forced {
        args.push(OsStr::new(forced));
    }
    serde_json::from_str(&llama_cpp::reference_script(&args)).expect("reference JSON")
}

/// A model of ours, loaded once per comparison.
struct Ours(CandleModel);

impl Ours {
    fn load(source: ModelSource, format: WeightFormat) -> Self {
        let model = CandleModel::builder()
            .source(source)
            .weight_format(format)
            .build()
            .unwrap();
        Self(model)
    }

    /// Greedy steps from `prompt` (top-20 logprobs each; an end-of-generation token ends the
    /// run without a step).
    fn greedy(&mut self, prompt: &[u32], steps: usize) -> Vec<TokenStep> {
        let sampling = SamplingParams::greedy()
            .with_max_tokens(steps)
            .with_top_logprobs(20);
        let request = GenerationRequest::user("", sampling);
        let mut traces = self
            .0
            .generate_from_tokens(
                prompt,
                &request,
                &[TraceSpec::derive(0, 0)],
                &mut NoObserver,
            )
            .unwrap();
        traces.pop().unwrap().steps
    }
}

/// Our greedy steps from `prompt` with a freshly loaded model.
fn ours(source: ModelSource, format: WeightFormat, prompt: &[u32]) -> Vec<TokenStep> {
    Ours::load(source, format).greedy(prompt, STEPS)
}

fn top(step: &TokenStep) -> Vec<(u32, f32)> {
    step.top_token_ids
        .iter()
        .copied()
        .zip(step.top_logprobs.iter().copied())
        .collect()
}

/// The largest logprob difference two top-20 lists show: over the ids in both, and for an id
/// in one list only, how far it is above the other list's 20th value (where the other list's
/// value for it can be at most).
fn distance(a: &[(u32, f32)], b: &[(u32, f32)]) -> f32 {
    let one_way = |a: &[(u32, f32)], b: &[(u32, f32)]| {
        let floor = b.last().map_or(f32::NEG_INFINITY, |&(_, lp)| lp);
        a.iter()
            .map(
                |&(id, lp)| match b.iter().find(|&&(other, _)| other == id) {
                    Some(&(_, other)) => (lp - other).abs(),
                    None => (lp - floor).max(0.0),
                },
            )
            .fold(0f32, f32::max)
    };
    one_way(a, b).max(one_way(b, a))
}

/// Follows llama.cpp's greedy run `reference` with ours and returns the largest top-20
/// distance over its steps. Our own greedy decode is used while it takes llama.cpp's tokens; a
/// step where it takes another token must be a near tie, where llama.cpp's margin between the
/// two tokens is within twice our distance from llama.cpp at that step (last-bit differences in
/// the activations reaching an 8-bit rounding boundary make such flips possible); from there on
/// our next-token distributions are taken on llama.cpp's tokens. A near tie is reported, a
/// divergence that is not one fails with both engines' candidates at every step. Prints how
/// many steps agree within 1e-4.
fn follow(ours: &mut Ours, prompt: &[u32], reference: &Reference, what: &str) -> f32 {
    let expected = &reference.tokens[..reference.tokens.len() - usize::from(reference.ended)];
    let free = ours.greedy(prompt, STEPS);
    let mut on_path = true;
    let mut distances = Vec::new();
    let mut report = Vec::new();
    for (i, want) in reference.top.iter().enumerate() {
        on_path &= i < free.len()
            && free[..i]
                .iter()
                .zip(expected)
                .all(|(s, &t)| s.token_id == Some(t));
        let step = if on_path {
            free.get(i).cloned()
        } else {
            let context: Vec<u32> = prompt.iter().chain(&expected[..i]).copied().collect();
            ours.greedy(&context, 1).pop()
        };
        let Some(step) = step else {
            // Our argmax ended generation here: llama.cpp must have ended too.
            assert!(
                reference.ended && i + 1 == reference.top.len(),
                "{what}: step {i}: our argmax is an end-of-generation token, llama.cpp's is {:?}\n{}",
                want[0],
                report.join("\n")
            );
            break;
        };
        let top = top(&step);
        let d = distance(&top, want);
        distances.push(d);
        report.push(format!(
            "  step {i}: {d:.1e}, ours {:?}, llama.cpp {:?}",
            &top[..2],
            &want[..2]
        ));
        let chosen = step.token_id.unwrap();
        if i < expected.len() && chosen != expected[i] {
            let margin = want[0].1
                - want
                    .iter()
                    .find(|(id, _)| *id == chosen)
                    .map_or(f32::NEG_INFINITY, |(_, lp)| *lp);
            assert!(
                margin <= 2.0 * d,
                "{what}: step {i}: we take token {chosen}, llama.cpp {} with a margin of {margin:.2e} (our distance {d:.1e})\n{}",
                expected[i],
                report.join("\n")
            );
            eprintln!(
                "{what}: near tie at step {i} (llama.cpp margin {margin:.1e}, our distance {d:.1e})"
            );
        }
    }
    assert!(!report.is_empty(), "{what}: no steps compared");
    let close = distances.iter().filter(|&&d| d <= 1e-4).count();
    eprintln!(
        "{what}: {close} of {} steps within 1e-4 of llama.cpp",
        distances.len()
    );
    distances.into_iter().fold(0f32, f32::max)
}

/// This process's directory for the files the tests write (earlier runs' directories are
/// removed: the files are cheap to write again).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let prefix = "deepconf-candle-llama-cpp-";
        let temp = std::env::temp_dir();
        for entry in std::fs::read_dir(&temp).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = temp.join(format!("{prefix}{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// A random Qwen3 checkpoint and its F32 GGUF (written once per test process), with a prompt
/// tokenized by both engines.
struct Qwen3Fixture {
    checkpoint: PathBuf,
    gguf: PathBuf,
    prompt: Vec<u32>,
    f32_run: Reference,
}

fn qwen3() -> &'static Qwen3Fixture {
    static FIXTURE: OnceLock<Qwen3Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = scratch();
        let checkpoint = dir.join("qwen3-checkpoint");
        common::write_qwen3_checkpoint(&checkpoint, 11, QWEN3);
        let gguf = dir.join("qwen3-f32.gguf");
        llama_cpp::reference_script(&[
            OsStr::new("qwen3-gguf"),
            checkpoint.as_os_str(),
            gguf.as_os_str(),
        ]);
        let text = "<|im_start|>user\nthe cat sat on the mat<|im_end|>\n<|im_start|>assistant\n";
        let tokenizer = deepconf_candle::Tokenizer::from_gguf_path(&gguf).unwrap();
        let prompt = tokenizer.encode(text, true).unwrap();
        let theirs: Vec<u32> = serde_json::from_str(&llama_cpp::reference_script(&[
            OsStr::new("tokenize"),
            gguf.as_os_str(),
            OsStr::new(text),
        ]))
        .unwrap();
        assert_eq!(
            prompt, theirs,
            "prompt tokenization differs from llama.cpp's"
        );
        let f32_run = llama_cpp_run(&gguf, &prompt, None);
        Qwen3Fixture {
            checkpoint,
            gguf,
            prompt,
            f32_run,
        }
    })
}

#[test]
fn qwen3_f32_gguf_and_safetensors_match_llama_cpp() {
    let fixture = qwen3();
    let source = ModelSource::Gguf {
        path: fixture.gguf.clone(),
    };
    let mut model = Ours::load(source.clone(), WeightFormat::Native);
    let d = follow(
        &mut model,
        &fixture.prompt,
        &fixture.f32_run,
        "qwen3 F32 GGUF",
    );
    let gguf = ours(source, WeightFormat::Native, &fixture.prompt);
    eprintln!("qwen3 F32 GGUF vs llama.cpp: max top-20 logprob difference {d:.2e}");
    assert!(d <= 1e-4, "qwen3 F32 GGUF: {d} from llama.cpp");

    let safetensors = ours(
        ModelSource::SafetensorsDir {
            path: fixture.checkpoint.clone(),
        },
        WeightFormat::Native,
        &fixture.prompt,
    );
    assert_eq!(
        safetensors.iter().map(|s| s.token_id).collect::<Vec<_>>(),
        gguf.iter().map(|s| s.token_id).collect::<Vec<_>>()
    );
    let same = gguf
        .iter()
        .zip(&safetensors)
        .map(|(a, b)| distance(&top(a), &top(b)))
        .fold(0f32, f32::max);
    eprintln!("qwen3 safetensors vs our GGUF: {same:.2e}");
    assert!(same <= 1e-6, "safetensors and GGUF paths differ by {same}");
}

/// `llama-quantize --pure` of the F32 Qwen3 to `kind`, compared as the module docs say.
fn check_quantized(kind: &str) {
    let fixture = qwen3();
    let path = fixture.gguf.with_file_name(format!("qwen3-{kind}.gguf"));
    llama_cpp::quantize(&fixture.gguf, &path, kind);
    let quantized = llama_cpp_run(&path, &fixture.prompt, None);
    let continuation = &quantized.tokens;
    let f32_forced = llama_cpp_run(&fixture.gguf, &fixture.prompt, Some(continuation));
    let llama_cpp_own = quantized
        .top
        .iter()
        .zip(&f32_forced.top)
        .map(|(q, f)| distance(q, f))
        .fold(0f32, f32::max);
    let mut model = Ours::load(ModelSource::Gguf { path }, WeightFormat::Native);
    let d = follow(&mut model, &fixture.prompt, &quantized, kind);
    eprintln!(
        "qwen3 {kind}: ours vs llama.cpp {d:.2e}; llama.cpp {kind} vs its F32 {llama_cpp_own:.2e}"
    );
    assert!(
        d <= llama_cpp_own,
        "{kind}: ours is {d} from llama.cpp, more than llama.cpp's own {llama_cpp_own} from F32"
    );
}

macro_rules! quantized_tests {
    ($($test:ident => $kind:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check_quantized($kind);
            }
        )*
    };
}

quantized_tests! {
    qwen3_q4_0_matches_llama_cpp => "Q4_0",
    qwen3_q4_1_matches_llama_cpp => "Q4_1",
    qwen3_q5_0_matches_llama_cpp => "Q5_0",
    qwen3_q5_1_matches_llama_cpp => "Q5_1",
    qwen3_q8_0_matches_llama_cpp => "Q8_0",
    qwen3_q4_k_matches_llama_cpp => "Q4_K",
    qwen3_q5_k_matches_llama_cpp => "Q5_K",
    qwen3_q6_k_matches_llama_cpp => "Q6_K",
}

#[test]
fn unsupported_quant_types_are_errors_under_native_and_convert_on_request() {
    let fixture = qwen3();
    let path = fixture.gguf.with_file_name("qwen3-Q2_K.gguf");
    llama_cpp::quantize(&fixture.gguf, &path, "Q2_K");
    let err = CandleModel::builder()
        .source(ModelSource::Gguf { path: path.clone() })
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Q2K") && err.contains("tensor `") && err.contains("WeightFormat::F32"),
        "{err}"
    );
    let steps = ours(
        ModelSource::Gguf { path },
        WeightFormat::F32,
        &fixture.prompt,
    );
    assert_eq!(steps.len(), STEPS.min(steps.len()));
    assert!(!steps.is_empty());
}

/// Writes a random Llama GGUF with RoPE variant `rope`.
fn llama(rope: &str) -> PathBuf {
    let path = scratch().join(format!("llama-{rope}.gguf"));
    llama_cpp::reference_script(&[
        OsStr::new("llama-gguf"),
        path.as_os_str(),
        OsStr::new("5"),
        OsStr::new(rope),
    ]);
    path
}

/// Our prompt for a Llama GGUF (BOS added as the vocabulary asks), checked against llama.cpp.
fn llama_prompt(path: &Path) -> Vec<u32> {
    let text = "what is this? the cat sat on a mat, the dog ran to the cat!";
    let tokenizer = deepconf_candle::Tokenizer::from_gguf_path(path).unwrap();
    assert!(tokenizer.is_sentencepiece() && tokenizer.add_bos());
    let mut prompt = vec![tokenizer.bos_token_id().unwrap()];
    prompt.extend(tokenizer.encode(text, true).unwrap());
    let theirs: Vec<u32> = serde_json::from_str(&llama_cpp::reference_script(&[
        OsStr::new("tokenize"),
        path.as_os_str(),
        OsStr::new(text),
    ]))
    .unwrap();
    assert_eq!(
        prompt, theirs,
        "SentencePiece prompt differs from llama.cpp's"
    );
    prompt
}

#[test]
fn llama_with_rope_scaling_matches_llama_cpp() {
    let plain = llama("plain");
    let prompt = llama_prompt(&plain);
    let plain_run = llama_cpp_run(&plain, &prompt, None);
    let mut model = Ours::load(ModelSource::Gguf { path: plain }, WeightFormat::Native);
    let d = follow(&mut model, &prompt, &plain_run, "llama plain");
    eprintln!("llama plain RoPE: {d:.2e}");
    assert!(d <= 1e-4, "plain: {d}");
    for rope in ["freq-factors", "linear", "yarn"] {
        let path = llama(rope);
        let reference = llama_cpp_run(&path, &prompt, None);
        // The scaling must matter, or this comparison would not test it.
        let moved = reference
            .top
            .iter()
            .zip(&plain_run.top)
            .map(|(a, b)| distance(a, b))
            .fold(0f32, f32::max);
        assert!(
            moved > 1e-2,
            "{rope}: llama.cpp's logprobs barely moved ({moved})"
        );
        let mut model = Ours::load(ModelSource::Gguf { path }, WeightFormat::Native);
        let d = follow(&mut model, &prompt, &reference, rope);
        eprintln!("llama {rope} RoPE: {d:.2e} (scaling moved llama.cpp's logprobs by {moved:.2})");
        assert!(d <= 1e-4, "{rope}: {d} from llama.cpp");
    }
}

#[test]
fn longrope_is_an_error_naming_the_key_and_value() {
    let path = llama("longrope");
    let err = CandleModel::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("llama.rope.scaling.type") && err.contains("longrope"),
        "{err}"
    );
}
