//! Finding and loading ONNX Runtime (one library per process), and what it offers.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hwcov_core::{Error, Result, library};
use ort::environment::Environment;
use ort::ep::ExecutionProvider;

pub const SETUP_HINT: &str = "on an AMD GPU host with ROCm, install AMD's build of ONNX Runtime \
     (`pip install onnxruntime-migraphx`) and set ORT_DYLIB_PATH to its onnxruntime/capi folder; \
     `cargo xtask setup --platform rocm` installs the CPU build that the tests use";

/// Where the library is, or why none was found: `ORT_DYLIB_PATH` (the file or its folder), else the
/// project-local installs (`.hwcov/onnxruntime-migraphx`, then `.hwcov/onnxruntime`, looked for from
/// the working directory and the executable upwards).
pub fn find_library() -> std::result::Result<PathBuf, String> {
    const PREFIX: &str = "libonnxruntime.so";
    if let Some(named) = library::from_env("ORT_DYLIB_PATH", PREFIX) {
        return named;
    }
    let installs = [
        ".hwcov/onnxruntime-migraphx/onnxruntime/capi",
        ".hwcov/onnxruntime/onnxruntime/capi",
    ];
    library::local(&installs, PREFIX).ok_or_else(|| format!("ONNX Runtime is not installed: {SETUP_HINT}"))
}

struct Loaded {
    library: PathBuf,
    environment: Environment,
}

static LOADED: OnceLock<std::result::Result<Loaded, String>> = OnceLock::new();

fn loaded() -> std::result::Result<&'static Loaded, String> {
    LOADED
        .get_or_init(|| {
            let library = find_library()?;
            let environment = ort::init_from(&library)
                .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", library.display()))?
                .with_name("hwcov")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("ONNX Runtime at {} cannot start: {e}", library.display()))?;
            Ok(Loaded { library, environment })
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn unavailable(reason: String) -> Error {
    Error::Unavailable {
        platform: "rocm".to_string(),
        reason,
    }
}

/// The environment every session is made in (loading the library on first use).
pub fn environment() -> Result<&'static Environment> {
    loaded().map(|l| &l.environment).map_err(unavailable)
}

/// The library in use.
pub fn library() -> Result<&'static Path> {
    loaded().map(|l| l.library.as_path()).map_err(unavailable)
}

/// The library's file name, which carries its version ("libonnxruntime.so.1.27.1").
pub fn library_name() -> Result<String> {
    Ok(library()?
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default())
}

/// The execution providers hwcov knows of that this build of ONNX Runtime was compiled with.
pub fn providers() -> Result<Vec<&'static str>> {
    environment()?;
    let mut have = Vec::new();
    let check = |available: ort::Result<bool>, name: &'static str, have: &mut Vec<&'static str>| {
        if available.unwrap_or(false) {
            have.push(name);
        }
    };
    check(
        ort::ep::MIGraphX::is_available(),
        "MIGraphXExecutionProvider",
        &mut have,
    );
    check(ort::ep::CPU::is_available(), "CPUExecutionProvider", &mut have);
    Ok(have)
}
