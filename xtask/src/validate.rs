//! `cargo xtask validate`: everything that must agree with models.toml, checked without running a
//! model: the generated files, the fixtures, and the measured matrix.

use std::path::Path;

use anyhow::{Result, bail};
use hwcov::spec::{Category, ModelSpec, load_models};
use hwcov::{IoFile, ModelFiles, PlatformId};

use crate::matrix::{COVERAGE_JSON, COVERAGE_MD, COVERAGE_SVG, Matrix, RUNS_DIR};
use crate::matrix_tests::{MATRIX_TESTS, expected_matrix_tests};
use crate::render;

/// The cells whose measured status contradicts their expectation.
pub fn contradictions(specs: &[ModelSpec], matrix: &Matrix) -> Vec<String> {
    let mut out = Vec::new();
    for spec in specs {
        for p in PlatformId::ALL {
            match matrix.cell(&spec.name, p) {
                None => out.push(format!(
                    "{} on {p}: not in the measured matrix (run `cargo xtask coverage`)",
                    spec.name
                )),
                Some(cell) => {
                    if let Err(why) = spec.platforms.get(p).judge(cell.status) {
                        out.push(format!("{} on {p} ({} on {}): {why}", spec.name, cell.host, cell.date));
                    }
                }
            }
        }
    }
    out
}

/// Problems with a model's fixture folder, or nothing.
fn fixture_problems(root: &Path, spec: &ModelSpec) -> Vec<String> {
    let dir = root.join(&spec.fixture);
    let mut out = Vec::new();
    let files = match ModelFiles::open(&dir) {
        Ok(f) => f,
        Err(e) => return vec![format!("{}: {e}", spec.name)],
    };
    if files.class != spec.model_type {
        out.push(format!(
            "{}: config.json says model_type {}, models.toml {}",
            spec.name, files.class, spec.model_type
        ));
    }
    if files.architecture.as_deref() != Some(spec.architecture.as_str()) {
        out.push(format!(
            "{}: config.json architectures[0] is {:?}, models.toml says {}",
            spec.name, files.architecture, spec.architecture
        ));
    }
    let mut need = vec!["model.safetensors", "io.safetensors", "meta.json"];
    let takes_text = !matches!(spec.category, Category::Vision | Category::Audio);
    if takes_text {
        need.push("tokenizer.json");
    }
    if spec.category != Category::Text {
        need.push("preprocessor_config.json");
    }
    for f in need {
        if !dir.join(f).is_file() {
            out.push(format!(
                "{}: {} is missing from {}",
                spec.name,
                f,
                spec.fixture.display()
            ));
        }
    }
    match IoFile::read(&dir.join("io.safetensors")) {
        Err(e) => out.push(format!("{}: {e}", spec.name)),
        Ok(io) => out.extend(reduced_precision_problems(&dir, &spec.name, &io)),
    }
    out
}

/// The references at f16 and bf16 (`io.f16.safetensors`, `io.bf16.safetensors`, where a fixture has
/// them) must hold the float32 file's inputs, unchanged, and outputs of the same names and shapes.
fn reduced_precision_problems(dir: &Path, name: &str, io: &IoFile) -> Vec<String> {
    let mut out = Vec::new();
    for p in ["f16", "bf16"] {
        let path = dir.join(format!("io.{p}.safetensors"));
        if !path.is_file() {
            continue;
        }
        let reduced = match IoFile::read(&path) {
            Ok(r) => r,
            Err(e) => {
                out.push(format!("{name}: {e}"));
                continue;
            }
        };
        if reduced.inputs != io.inputs {
            out.push(format!(
                "{name}: the inputs of {} differ from those of io.safetensors",
                path.display()
            ));
        }
        let shapes = |t: &hwcov::NamedTensors| -> Vec<(String, Vec<usize>)> {
            t.iter().map(|(k, v)| (k.clone(), v.shape().to_vec())).collect()
        };
        if shapes(&reduced.outputs) != shapes(&io.outputs) {
            out.push(format!(
                "{name}: the outputs of {} are not those of io.safetensors (names and shapes)",
                path.display()
            ));
        }
    }
    out
}

const MEASUREMENTS: &str = "docs/measurements";

/// Raw measurements that docs/measurements/README.md does not index: every file there needs a line
/// `` - `path`: what it is ``, and every such line a file.
fn measurement_index_problems(root: &Path) -> Vec<String> {
    let dir = root.join(MEASUREMENTS);
    let index = match std::fs::read_to_string(dir.join("README.md")) {
        Ok(s) => s,
        Err(e) => return vec![format!("{MEASUREMENTS}/README.md: {e}")],
    };
    let indexed: std::collections::BTreeSet<&str> = index
        .lines()
        .filter_map(|l| l.strip_prefix("- `")?.split_once("`:").map(|(p, _)| p))
        .collect();
    let mut files = std::collections::BTreeSet::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            return vec![format!("{}: cannot be listed", d.display())];
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(&dir) {
                let rel = rel.to_string_lossy().replace('\\', "/");
                if rel != "README.md" {
                    files.insert(rel);
                }
            }
        }
    }
    let mut out = Vec::new();
    for f in &files {
        if !indexed.contains(f.as_str()) {
            out.push(format!(
                "{MEASUREMENTS}/{f} has no index line in {MEASUREMENTS}/README.md"
            ));
        }
    }
    for i in &indexed {
        if !files.contains(*i) {
            out.push(format!("{MEASUREMENTS}/README.md indexes {i}, which is not there"));
        }
    }
    out
}

/// What in a committed coverage file would tie it to one machine or one moment: an absolute path of
/// the machine that ran it, or a device string with the memory free at the time.
fn machine_specific(text: &str) -> Option<&'static str> {
    const ABSOLUTE: [&str; 5] = ["\"/home/", "\"/root/", "\"/tmp/", "\"/work/", "\"/Users/"];
    if ABSOLUTE.iter().any(|p| text.contains(p)) {
        return Some("an absolute path of the machine that ran it");
    }
    if text.contains("GiB free") {
        return Some("the memory free at the time of the run (a device string)");
    }
    None
}

/// The generated coverage files and the runs merged into them, checked by [`machine_specific`].
fn machine_specific_problems(root: &Path) -> Vec<String> {
    let mut files: Vec<String> = [COVERAGE_MD, COVERAGE_JSON].iter().map(|f| f.to_string()).collect();
    if let Ok(entries) = std::fs::read_dir(root.join(RUNS_DIR)) {
        let mut runs: Vec<String> = entries
            .flatten()
            .map(|e| format!("{RUNS_DIR}/{}", e.file_name().to_string_lossy()))
            .collect();
        runs.sort();
        files.extend(runs);
    }
    files
        .into_iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(root.join(&f)).ok()?;
            machine_specific(&text).map(|what| format!("{f} holds {what}"))
        })
        .collect()
}

pub fn run(root: &Path) -> Result<()> {
    let specs = load_models(&root.join("models.toml"))?;
    let mut problems = Vec::new();

    let want = expected_matrix_tests(root)?;
    if std::fs::read_to_string(root.join(MATRIX_TESTS)).ok().as_deref() != Some(want.as_str()) {
        problems.push(format!("{MATRIX_TESTS} is stale: run `cargo xtask gen`"));
    }
    for spec in &specs {
        problems.extend(fixture_problems(root, spec));
    }
    match Matrix::read(root) {
        Err(e) => problems.push(format!("{e:#}")),
        Ok(matrix) => {
            problems.extend(contradictions(&specs, &matrix));
            for (path, want) in [
                (COVERAGE_MD, render::markdown(&specs, &matrix)),
                (COVERAGE_SVG, render::svg(&specs, &matrix)),
            ] {
                if std::fs::read_to_string(root.join(path)).ok().as_deref() != Some(want.as_str()) {
                    problems.push(format!(
                        "{path} does not match docs/coverage.json: run `cargo xtask coverage`"
                    ));
                }
            }
        }
    }
    // Each node-test page renders its JSON, and claims exactly the ops its platform claims.
    for suite in crate::node_tests::SUITES {
        let (json_path, md_path) = (suite.json(), suite.md());
        match std::fs::read_to_string(root.join(&json_path)) {
            Err(e) => problems.push(format!("{json_path}: {e}: run `cargo xtask node-tests`")),
            Ok(json) => {
                let report: serde_json::Value = serde_json::from_str(&json)?;
                let want = crate::node_tests::markdown(suite, &report);
                if std::fs::read_to_string(root.join(&md_path)).ok().as_deref() != Some(want.as_str()) {
                    problems.push(format!(
                        "{md_path} does not match {json_path} and the claimed ops: run `cargo xtask node-tests`"
                    ));
                }
                if report["cases"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["result"] == "failed")
                {
                    problems.push(format!("{json_path} records failed cases"));
                }
            }
        }
    }
    problems.extend(measurement_index_problems(root));
    problems.extend(machine_specific_problems(root));
    for p in &problems {
        eprintln!("- {p}");
    }
    if !problems.is_empty() {
        bail!("validate found {} problems", problems.len());
    }
    println!(
        "validate: {} models, generated files current, fixtures complete, no contradictions",
        specs.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_paths_and_free_memory_are_found() {
        assert_eq!(machine_specific(r#"{"model_dir": "./fixtures/bert"}"#), None);
        assert!(machine_specific(r#"{"model_dir": "/work/main/fixtures/bert"}"#).is_some());
        assert!(machine_specific(r#"{"io": "/tmp/x/io.safetensors"}"#).is_some());
        let device = r#""device": "NVIDIA H100 80GB HBM3 (cuda:0, sm_90, cuDNN 9.19.0, 78.6 of 79.2 GiB free)""#;
        assert!(machine_specific(device).is_some());
        assert_eq!(
            machine_specific(r#""device": "NVIDIA H100 (cuda:0, sm_90, 79.2 GiB)""#),
            None
        );
    }
}
