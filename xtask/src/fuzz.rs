//! `cargo xtask fuzz`: the cargo-fuzz targets of fuzz/ (one for each file format hwcov reads), on
//! nightly, each seeded from fixtures/ and from its committed corpus (fuzz/corpus/<target>).
//!
//! - `--smoke`: every target for 25 s (CI); a crash, hang or out-of-memory fails the task.
//! - `<target> [--seconds N]`: one target for N s (default 300) with new inputs kept in its corpus,
//!   the longer sessions that docs/reliability.md records.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Every target, with the fixture files that seed it (by file name, or by extension after `.`).
const TARGETS: [(&str, &[&str]); 11] = [
    ("safetensors", &[".safetensors"]),
    ("config", &["config.json", "model.safetensors.index.json"]),
    ("generation_config", &["generation_config.json"]),
    (
        "processor_config",
        &["preprocessor_config.json", "processor_config.json"],
    ),
    ("tokenizer", &["tokenizer.json"]),
    ("chat_template", &[".jinja"]),
    ("onnx", &[".onnx"]),
    ("matrix_files", &["models.toml", ".json"]),
    ("audio", &[".wav", ".flac", ".mp3"]),
    ("image", &[".png", ".jpg", ".gif"]),
    ("video", &[".gif"]),
];

/// Seeds larger than this stay out: libFuzzer mutates small inputs best, and big ones slow it.
const MAX_SEED_BYTES: u64 = 128 * 1024;

/// The smoke run's time per target: 11 targets take under 5 minutes, which with the build of the
/// targets keeps the CI step near 8 minutes.
const SMOKE_SECONDS: u64 = 25;

/// libFuzzer's limits for every run: an input taking over 20 s is a hang, a process over 3 GiB
/// (what the sanitizer adds included) is out of memory; both are failures, as crashes are.
const LIBFUZZER_LIMITS: [&str; 2] = ["-timeout=20", "-rss_limit_mb=3072"];

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let names: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
    match args.first().map(String::as_str) {
        Some("--smoke") => {
            build(root)?;
            let mut failed = Vec::new();
            for (target, _) in TARGETS {
                let corpus = root.join("fuzz/target/smoke-corpus").join(target);
                let _ = std::fs::remove_dir_all(&corpus);
                if let Err(e) = fuzz(root, target, SMOKE_SECONDS, &corpus) {
                    eprintln!("error: {e:#}");
                    failed.push(target);
                }
            }
            if !failed.is_empty() {
                bail!(
                    "fuzz targets failed: {} (fuzz/artifacts/<target>/ holds the inputs)",
                    failed.join(", ")
                );
            }
            println!("every fuzz target ran {SMOKE_SECONDS} s without a crash");
            Ok(())
        }
        Some(target) if names.contains(&target) => {
            let seconds = match args.get(1..) {
                Some([flag, n]) if flag == "--seconds" => n.parse().with_context(|| format!("--seconds {n}"))?,
                Some([]) => 300,
                _ => bail!("usage: cargo xtask fuzz {target} [--seconds N]"),
            };
            build(root)?;
            fuzz(root, target, seconds, &root.join("fuzz/corpus").join(target))
        }
        _ => bail!(
            "usage: cargo xtask fuzz --smoke | <target> [--seconds N]; targets: {}",
            names.join(", ")
        ),
    }
}

fn build(root: &Path) -> Result<()> {
    let status = Command::new("cargo")
        .current_dir(root)
        .args(["+nightly", "fuzz", "build", "--fuzz-dir", "fuzz"])
        .status()
        .context("cannot start `cargo +nightly fuzz` (install it: cargo install cargo-fuzz --locked)")?;
    if !status.success() {
        bail!("cargo +nightly fuzz build failed with {status}");
    }
    Ok(())
}

/// Runs one target for `seconds`, new inputs going to `corpus`, seeded from the committed corpus
/// and the fixtures; prints its executions and coverage.
fn fuzz(root: &Path, target: &str, seconds: u64, corpus: &Path) -> Result<()> {
    std::fs::create_dir_all(corpus)?;
    let seeds = seeds(root, target)?;
    let committed = root.join("fuzz/corpus").join(target);
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["+nightly", "fuzz", "run", "--fuzz-dir", "fuzz", target])
        .arg(corpus);
    if committed.is_dir() && committed != corpus {
        cmd.arg(&committed);
    }
    cmd.arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .args(LIBFUZZER_LIMITS)
        .arg("-print_final_stats=1");
    println!("fuzzing {target} for {seconds} s");
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let log_path = root.join("fuzz/target").join(format!("{target}.log"));
    std::fs::write(&log_path, log.as_bytes())?;
    let summary = summary(&log);
    if !out.status.success() {
        bail!("{target}: {} (log: {})", failure(&log), log_path.display());
    }
    println!("{target}: {summary}");
    Ok(())
}

/// "N executions, cov C, ft F, corpus K" of a libFuzzer log.
fn summary(log: &str) -> String {
    let stat = |name: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    let last = log.lines().rev().find(|l| l.contains(" cov: ")).unwrap_or("");
    let field = |name: &str| {
        last.split_whitespace()
            .skip_while(|w| *w != name)
            .nth(1)
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "{} executions ({} exec/s), cov {}, ft {}, corpus {}",
        stat("number_of_executed_units"),
        stat("average_exec_per_sec"),
        field("cov:"),
        field("ft:"),
        field("corp:")
    )
}

/// The line of a failing libFuzzer log that says what failed.
fn failure(log: &str) -> String {
    log.lines()
        .find(|l| l.contains("ERROR: libFuzzer") || l.contains("panicked at") || l.contains("ERROR: AddressSanitizer"))
        .unwrap_or("the fuzzer failed")
        .trim()
        .to_string()
}

/// fuzz/seeds/<target>: the fixture files that seed it, copied afresh.
fn seeds(root: &Path, target: &str) -> Result<PathBuf> {
    let patterns = TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, p)| *p)
        .unwrap_or(&[]);
    let dir = root.join("fuzz/seeds").join(target);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut files = Vec::new();
    walk(&root.join("fixtures"), &mut files)?;
    if target == "matrix_files" {
        files.push(root.join("models.toml"));
        walk(&root.join("docs/coverage/runs"), &mut files)?;
    }
    for (k, f) in files.iter().enumerate() {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let wanted = patterns.iter().any(|p| {
            if p.starts_with('.') {
                name.ends_with(p)
            } else {
                name == *p
            }
        });
        // matrix_files takes .json only from the coverage runs, not every fixture's JSON.
        let wanted = wanted && (target != "matrix_files" || !f.starts_with(root.join("fixtures")));
        if wanted && std::fs::metadata(f)?.len() <= MAX_SEED_BYTES {
            std::fs::copy(f, dir.join(format!("{k}-{name}")))?;
        }
        // Most folders keep their chat template inside tokenizer_config.json or chat_template.json.
        if target == "chat_template" && matches!(name, "tokenizer_config.json" | "chat_template.json") {
            let json: serde_json::Value = serde_json::from_slice(&std::fs::read(f)?)?;
            if let Some(template) = json.get("chat_template").and_then(|t| t.as_str()) {
                std::fs::write(dir.join(format!("{k}-{name}.jinja")), template)?;
            }
        }
    }
    Ok(dir)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, files)?;
        } else {
            files.push(p);
        }
    }
    Ok(())
}
