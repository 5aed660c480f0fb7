//! Run with: `cargo run --release --example generate -- --prompt "Name three colours." --traces 4`
//!
//! Samples traces from a local model (default: the embedded SmolLM2-135M-Instruct Q4_1; `--model`
//! takes a GGUF file, a safetensors checkpoint directory or `guarded`, the embedded model with the
//! project's refusal-trained LoRA adapter; `--adapter DIR` applies a PEFT LoRA adapter) and prints each trace's text and DeepConf
//! confidence summary, or with `--json` one JSON line per trace.
use anyhow::Result;
use clap::Parser;
use deepconf_candle::{CandleModel, LoraAdapter, ModelSource};
use deepconf_core::confidence::ConfidenceConfig;
use deepconf_core::{GenerationRequest, LogprobModel, NoObserver, SamplingParams, TraceSpec};

#[derive(Parser, Debug)]
#[command(about = "Sample traces with per-token top-k logprobs from a local model")]
struct Args {
    /// GGUF file, safetensors directory, or `guarded` (default: the embedded model in the
    /// deepconf cache).
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// A LoRA adapter directory (PEFT format) merged into the weights at load.
    #[arg(long)]
    adapter: Option<std::path::PathBuf>,
    /// The user message.
    #[arg(long, default_value = "Name three colours.")]
    prompt: String,
    /// Number of traces, decoded together.
    #[arg(long, default_value_t = 4)]
    traces: usize,
    /// Maximum generated tokens per trace.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Base seed; trace i uses a seed derived from it.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON line per trace instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let guarded = args.model.as_deref() == Some(std::path::Path::new("guarded"));
    let source = match args.model {
        Some(path) if !guarded => ModelSource::from_path(path),
        _ => ModelSource::Default,
    };
    let adapter_dir = args
        .adapter
        .or_else(|| guarded.then(deepconf_candle::lora::guarded_adapter_dir));
    let mut builder = CandleModel::builder().source(source);
    if let Some(dir) = adapter_dir {
        let adapter = LoraAdapter::load(&dir).map_err(|e| {
            anyhow::anyhow!("{e} (for `--model guarded`, run `cargo xtask fetch-model guarded`)")
        })?;
        builder = builder.adapter(adapter);
    }
    let mut model = builder.build()?;
    let sampling = SamplingParams::default()
        .with_temperature(args.temperature)
        .with_max_tokens(args.max_tokens)
        .with_seed(args.seed);
    let request = GenerationRequest::user(args.prompt, sampling);
    let specs: Vec<TraceSpec> = (0..args.traces)
        .map(|i| TraceSpec::derive(args.seed, i))
        .collect();
    let traces = model.generate_batch(&request, &specs, &mut NoObserver)?;
    let config = ConfidenceConfig::default();
    for trace in &traces {
        if args.json {
            let line = serde_json::json!({
                "trace": trace.spec.index,
                "text": trace.text,
                "token_ids": trace.token_ids(),
                "token_logprobs": trace.steps.iter().map(|s| s.logprob).collect::<Vec<_>>(),
                "top_logprobs": trace.steps.iter().map(|s| &s.top_logprobs).collect::<Vec<_>>(),
                "stop_reason": trace.stop_reason,
            });
            println!("{line}");
        } else {
            println!(
                "--- trace {} ({} tokens, {})",
                trace.spec.index,
                trace.n_tokens(),
                trace.stop_reason.as_str()
            );
            println!("{}", trace.text);
            if let Some(s) = trace.confidence_summary(&config)? {
                println!(
                    "confidence: mean {:.3}, lowest group {:.3}, bottom 10% {:.3}, tail {:.3}",
                    s.mean, s.lowest_group, s.bottom_group, s.tail
                );
            }
        }
    }
    Ok(())
}
