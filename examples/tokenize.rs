//! Run with: `cargo run --release --example tokenize -- [--model FILE.gguf] < lines.jsonl`
//!
//! Reads one JSON string per line on stdin and prints, per line, the JSON array of its token ids
//! (special tokens such as `<|im_start|>` recognised, no BOS added), so that any other tokenizer
//! can be compared with ours id for id. Without `--model` it uses the embedded default model.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use deepconf_candle::{Tokenizer, default_model_path};

/// Token ids of JSON-string lines read from stdin.
#[derive(Debug, Parser)]
struct Cli {
    /// GGUF model whose tokenizer to use (default: the embedded SmolLM2 model in the cache).
    #[arg(long)]
    model: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let model = match cli.model {
        Some(path) => path,
        None => {
            let path = default_model_path();
            anyhow::ensure!(
                path.is_file(),
                "no model at {}: run `cargo xtask fetch-model` or pass --model",
                path.display()
            );
            path
        }
    };
    let tokenizer = Tokenizer::from_gguf_path(&model)?;

    let mut out = std::io::stdout().lock();
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
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
