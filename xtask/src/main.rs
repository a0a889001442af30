//! `cargo xtask`: the tasks that keep the matrix honest.
//!
//! - `test` installs the runtimes of the local platforms and runs the test suite, requiring them.
//! - `gen` writes crates/hwcov/tests/matrix.rs (one test per model x platform) from models.toml.
//! - `validate` fails on stale generated files, fixtures that are missing or disagree with
//!   models.toml, and measured results that contradict models.toml.
//! - `coverage` runs every cell this machine can run, merges the runs other machines left in
//!   docs/coverage/runs/, and writes docs/coverage.{md,json,svg}.
//! - `node-tests` runs the ONNX backend node tests of the ops WebGPU and WebNN claim and writes their counts.
//! - `fuzz` runs the cargo-fuzz targets of fuzz/ on nightly (`--smoke`: each for 25 s, as CI does).
//! - `setup` / `build` install a platform's toolchain or runtime into `.hwcov/` and build for it.

mod coverage;
mod fuzz;
mod matrix;
mod matrix_tests;
mod node_tests;
mod render;
mod setup;
mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str =
    "usage: cargo xtask <test | gen | validate | coverage | node-tests | fuzz --smoke | setup --platform P | build --platform P>

  test       install the local platforms' runtimes (OpenVINO), run `cargo test --workspace` requiring them
  gen        write crates/hwcov/tests/matrix.rs from models.toml
  validate   check generated files, fixtures and measured results against models.toml
  coverage   run the matrix here, merge docs/coverage/runs/*.json, write docs/coverage.{md,json,svg}
  node-tests run the ONNX backend node tests of the ops WebGPU and WebNN claim, write docs/platforms/{webgpu,webnn}-node-tests.{md,json}
  fuzz       run the cargo-fuzz targets of fuzz/ on nightly: --smoke (each for 25 s, fails on a crash), or one
             target for longer (`fuzz <target> [--seconds N]`, new inputs kept in fuzz/corpus/<target>)
  setup      install what platform P needs (cuda: the CUDA 13.0 toolchain wheels into .hwcov/; openvino: its
             runtime wheel into .hwcov/; webgpu: a Vulkan driver and loader, from apt where there is none;
             webnn: a Chromium with WebNN, from npm)
  build      build the hwcov binary for platform P (cuda: target/cuda/release/hwcov)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    let result = match args.first().map(String::as_str) {
        Some("gen") => matrix_tests::run(&root),
        Some("validate") => validate::run(&root),
        Some("coverage") => coverage::run(&root),
        Some("setup") => setup::setup(&root, &args[1..]),
        Some("test") => setup::test(&root, &args[1..]),
        Some("build") => setup::build(&root, &args[1..]),
        Some("node-tests") => node_tests::run(&root),
        Some("fuzz") => fuzz::run(&root, &args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's folder.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Writes `content` to `path` (relative to `root`) and says so.
fn write(root: &Path, path: &str, content: &str) -> anyhow::Result<()> {
    let full = root.join(path);
    if let Some(dir) = full.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Through a rename: a run killed mid-way leaves the previous file, never a truncated one.
    hwcov::file::write_atomic(&full, content.as_bytes())?;
    println!("wrote {path}");
    Ok(())
}
