//! `cargo xtask`: the tasks that keep the matrix honest.
//!
//! - `gen` writes crates/hwcov/tests/matrix.rs (one test per model x platform) from models.toml.
//! - `validate` fails on stale generated files, fixtures that are missing or disagree with
//!   models.toml, and measured results that contradict models.toml.
//! - `coverage` runs every cell this machine can run, merges the runs other machines left in
//!   docs/coverage/runs/, and writes docs/coverage.{md,json,svg}.

mod coverage;
mod generate;
mod matrix;
mod render;
mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <gen | validate | coverage>

  gen        write crates/hwcov/tests/matrix.rs from models.toml
  validate   check generated files, fixtures and measured results against models.toml
  coverage   run the matrix here, merge docs/coverage/runs/*.json, write docs/coverage.{md,json,svg}";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    let result = match args.first().map(String::as_str) {
        Some("gen") => generate::run(&root),
        Some("validate") => validate::run(&root),
        Some("coverage") => coverage::run(&root),
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
    std::fs::write(&full, content).map_err(|e| anyhow::anyhow!("{}: {e}", full.display()))?;
    println!("wrote {path}");
    Ok(())
}
