//! Run with: `cargo run -p deepconf-candle --example tokenize -- [--model FILE.gguf] < lines.jsonl`
//!
//! Reads one JSON string per line on stdin and prints, per line, the JSON array of its token
//! ids (special tokens such as `<|im_start|>` recognised, no BOS added).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use candle_core::quantized::gguf_file;
use deepconf_candle::Tokenizer;

fn default_model_path() -> PathBuf {
    let cache = match std::env::var_os("DEEPCONF_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".cache")
            .join("deepconf"),
    };
    cache.join("models").join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut model = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--model" => model = Some(PathBuf::from(args.next().context("--model needs a path")?)),
            other => bail!("unknown argument `{other}` (usage: tokenize [--model FILE.gguf])"),
        }
    }
    let model = model.unwrap_or_else(default_model_path);
    if !model.is_file() {
        bail!(
            "no model at {}: run `cargo xtask fetch-model` or pass --model",
            model.display()
        );
    }
    let mut file = std::fs::File::open(&model).with_context(|| model.display().to_string())?;
    let content = gguf_file::Content::read(&mut file)
        .with_context(|| format!("{}: not a GGUF file", model.display()))?;
    let tokenizer = Tokenizer::from_gguf(&content)?;

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let text: String = serde_json::from_str(&line)
            .with_context(|| format!("stdin line {}: not a JSON string", number + 1))?;
        let ids = tokenizer.encode(&text, true)?;
        writeln!(out, "{}", serde_json::to_string(&ids)?)?;
    }
    Ok(())
}
