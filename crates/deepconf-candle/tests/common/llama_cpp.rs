//! llama.cpp as the reference: the llama-cpp-python 0.3.36 sdist (its vendored llama.cpp holds
//! the tokenizer test vocabularies and `gguf-py`, llama.cpp's GGUF writer), the `llama-quantize`
//! built from it by `cargo xtask llama-cpp`, and llama-cpp-python itself for forward passes.
//! Whatever is missing fails the test with the command that provides it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

const VERSION: &str = "0.3.36";
const SDIST_SHA256: &str = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e";

/// `<cache>/llama.cpp/0.3.36`, shared with `cargo xtask llama-cpp`.
fn llama_cpp_dir() -> PathBuf {
    deepconf_core::cache_dir().join("llama.cpp").join(VERSION)
}

fn sha256_of(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("could not start {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed with {status}");
}

/// llama.cpp's sources as vendored by llama-cpp-python 0.3.36 (`.../vendor/llama.cpp`),
/// downloaded with pip and checksummed into the cache when they are not there.
pub fn sources() -> PathBuf {
    static FETCH: Mutex<()> = Mutex::new(());
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    let dir = llama_cpp_dir();
    let name = format!("llama_cpp_python-{VERSION}");
    let vendored = dir.join(&name).join("vendor").join("llama.cpp");
    if vendored.join("CMakeLists.txt").is_file() {
        return vendored;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let archive = dir.join(format!("{name}.tar.gz"));
    if !archive.is_file() || sha256_of(&archive) != SDIST_SHA256 {
        run(Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--quiet"])
            .args(["--no-binary", "llama-cpp-python", "--dest"])
            .arg(&dir)
            .arg(format!("llama-cpp-python=={VERSION}")));
        assert_eq!(
            sha256_of(&archive),
            SDIST_SHA256,
            "checksum of {}",
            archive.display()
        );
    }
    let partial = dir.join(format!("{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).unwrap();
    run(Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&partial));
    // Another process may have finished first; either copy is the same archive.
    let _ = std::fs::rename(partial.join(&name), dir.join(&name));
    let _ = std::fs::remove_dir_all(&partial);
    assert!(vendored.join("CMakeLists.txt").is_file());
    vendored
}

/// The directory of llama.cpp's `llama-quantize` (`$DEEPCONF_LLAMA_CPP_BIN`, else where
/// `cargo xtask llama-cpp` builds it).
pub fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("DEEPCONF_LLAMA_CPP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| llama_cpp_dir().join("build").join("bin"));
    assert!(
        dir.join("llama-quantize").is_file(),
        "llama.cpp's llama-quantize is not in {}: run `cargo xtask llama-cpp` (or `cargo xtask test`)",
        dir.display()
    );
    dir
}

/// Runs `fixtures/llama_cpp_reference.py` with `args` and llama.cpp's `gguf-py` on the path,
/// returning its standard output. A missing llama-cpp-python or numpy fails with how to
/// install it.
pub fn reference_script(args: &[&std::ffi::OsStr]) -> String {
    static CHECKED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CHECKED.get_or_init(|| {
        let probe = Command::new("python3")
            .args(["-c", "import numpy, llama_cpp"])
            .output()
            .expect("python3 runs");
        assert!(
            probe.status.success(),
            "llama-cpp-python is not importable ({}): run `cargo xtask llama-cpp` (or `cargo xtask test`), which builds llama.cpp from llama-cpp-python {VERSION}'s sources for this CPU and installs llama-cpp-python on that build",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join("llama_cpp_reference.py");
    let output = Command::new("python3")
        .arg(&script)
        .args(args)
        .env("PYTHONPATH", sources().join("gguf-py"))
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// `llama-quantize --pure` of `source` into `target` with ggml type `kind` (e.g. `Q4_K`).
pub fn quantize(source: &Path, target: &Path, kind: &str) {
    let output = Command::new(bin_dir().join("llama-quantize"))
        .arg("--pure")
        .arg(source)
        .arg(target)
        .arg(kind)
        .output()
        .expect("llama-quantize runs");
    assert!(
        output.status.success(),
        "llama-quantize {kind} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
