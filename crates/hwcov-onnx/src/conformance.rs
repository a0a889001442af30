//! The ONNX backend node tests (the `onnx` package's own suite, written out by
//! `cargo xtask node-tests`) run on a graph platform, for every op the platform claims.
//!
//! Each case whose ops are all claimed ends one of three ways:
//! - passed: every output within the case's own tolerance (`|got - want| <= atol + rtol * |want|`,
//!   NaN where NaN is expected; integers and bools exact);
//! - refused: the platform said `unsupported` with a reason (a dtype it does not compute in, such as
//!   double, or a shape decided by values computed during the run);
//! - failed: anything else, a wrong value or any other error. One failed case fails the suite.
//!
//! HWCOV_NODE_TESTS names the folder (default `.hwcov/onnx-node-tests` under the project root);
//! HWCOV_NODE_TESTS_REPORT, if set, is where the per-case results go as JSON (what
//! `cargo xtask node-tests` renders); HWCOV_NODE_TESTS_ONLY runs the cases whose name holds it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hwcov_core::{Error, HostTensor, NamedTensors, Result};

use crate::model::read_tensor_file;

/// How one case ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub ops: Vec<String>,
    pub result: &'static str,
    pub detail: String,
}

/// Runs a graph file on each of its input sets; the outputs of each.
pub type RunGraph<'a> = dyn FnMut(&Path, &[NamedTensors]) -> Result<Vec<NamedTensors>> + 'a;

/// Within the case's tolerance, as numpy.testing.assert_allclose compares.
pub fn close(want: &HostTensor, got: &HostTensor, rtol: f64, atol: f64) -> std::result::Result<(), String> {
    if want.shape() != got.shape() {
        return Err(format!("shape {:?}, expected {:?}", got.shape(), want.shape()));
    }
    if want.dtype() != got.dtype() {
        return Err(format!("dtype {}, expected {}", got.dtype(), want.dtype()));
    }
    let (w, g) = (want.to_f64_vec(), got.to_f64_vec());
    let exact = !want.dtype().is_float();
    for (i, (&x, &y)) in w.iter().zip(&g).enumerate() {
        let ok = if exact {
            x == y
        } else if x.is_nan() || y.is_nan() {
            x.is_nan() && y.is_nan()
        } else if x.is_infinite() || y.is_infinite() {
            x == y
        } else {
            (x - y).abs() <= atol + rtol * x.abs()
        };
        if !ok {
            return Err(format!("element {i}: {y}, expected {x}"));
        }
    }
    Ok(())
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

/// One case: its input sets fed to `run`, each output compared.
pub fn run_case(dir: &Path, case: &serde_json::Value, run: &mut RunGraph) -> (&'static str, String) {
    let rtol = case["rtol"].as_f64().unwrap_or(1e-3);
    let atol = case["atol"].as_f64().unwrap_or(1e-7);
    let (inputs, outputs) = (names(&case["inputs"]), names(&case["outputs"]));
    let result = (|| -> Result<std::result::Result<(), String>> {
        let sets = case["data_sets"].as_u64().unwrap_or(0);
        let mut feeds = Vec::new();
        for k in 0..sets {
            let set = dir.join(format!("test_data_set_{k}"));
            let mut feed = NamedTensors::new();
            for (i, name) in inputs.iter().enumerate() {
                let file = set.join(format!("input_{i}.pb"));
                if file.is_file() {
                    feed.insert(name.clone(), read_tensor_file(&file)?);
                }
            }
            feeds.push(feed);
        }
        let got = run(&dir.join("model.onnx"), &feeds)?;
        for (k, got) in got.iter().enumerate() {
            let set = dir.join(format!("test_data_set_{k}"));
            for (i, name) in outputs.iter().enumerate() {
                let want = read_tensor_file(&set.join(format!("output_{i}.pb")))?;
                let Some(g) = got.get(name) else {
                    return Ok(Err(format!("output `{name}` missing")));
                };
                if let Err(e) = close(&want, g, rtol, atol) {
                    return Ok(Err(format!("output `{name}`: {e}")));
                }
            }
        }
        Ok(Ok(()))
    })();
    match result {
        Ok(Ok(())) => ("passed", String::new()),
        Ok(Err(e)) => ("failed", e),
        Err(Error::Unsupported { what, reason, .. }) => ("refused", format!("{what}: {reason}")),
        Err(e) => ("failed", e.to_string()),
    }
}

/// Where the cases are: HWCOV_NODE_TESTS, else `.hwcov/onnx-node-tests` under `root`.
pub fn suite_dir(root: &Path) -> PathBuf {
    std::env::var_os("HWCOV_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".hwcov/onnx-node-tests"))
}

/// Whether `platform` must run here (`HWCOV_REQUIRE_PLATFORMS` names it).
pub fn required(platform: &str) -> bool {
    std::env::var("HWCOV_REQUIRE_PLATFORMS").is_ok_and(|r| r.split(',').any(|p| p == platform))
}

/// The suite's folder and manifest, or `None` (skipped, said on stderr) where it was never
/// written and `platform` is not required here; panics where it is.
pub fn suite(root: &Path, platform: &str) -> Option<(PathBuf, String)> {
    let dir = suite_dir(root);
    match std::fs::read_to_string(dir.join("manifest.json")) {
        Ok(m) => Some((dir, m)),
        Err(e) => {
            assert!(
                !required(platform),
                "{}: {e} (run `cargo xtask node-tests` first)",
                dir.display()
            );
            eprintln!(
                "skipped: no node tests at {} (cargo xtask node-tests writes them)",
                dir.display()
            );
            None
        }
    }
}

/// Every case of the suite in `dir` whose ops are all in `claimed`, run with `run`; the report
/// (HWCOV_NODE_TESTS_REPORT) names `device`. Panics (a test failure) if any case failed.
pub fn run_suite(dir: &Path, manifest: &str, claimed: &[&str], device: &str, run: &mut RunGraph) -> Vec<Outcome> {
    let manifest: serde_json::Value = serde_json::from_str(manifest).expect("manifest.json");
    let only = std::env::var("HWCOV_NODE_TESTS_ONLY").ok();
    let mut outcomes = Vec::new();
    for case in manifest["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().unwrap_or("?").to_string();
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let ops = names(&case["ops"]);
        if ops.is_empty() || !ops.iter().all(|o| claimed.contains(&o.as_str())) {
            continue;
        }
        let (result, detail) = if case["tensors_only"].as_bool() == Some(false) {
            (
                "refused",
                "sequence, optional or map values (hwcov feeds tensors only)".to_string(),
            )
        } else {
            run_case(&dir.join(&name), case, run)
        };
        // Paths in messages are relative to the suite's folder: the report is committed.
        let detail = detail.replace(&format!("{}/", dir.display()), "");
        outcomes.push(Outcome {
            name,
            ops,
            result,
            detail,
        });
    }
    if let Some(path) = std::env::var_os("HWCOV_NODE_TESTS_REPORT") {
        let cases: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|o| serde_json::json!({ "name": o.name, "ops": o.ops, "result": o.result, "detail": o.detail }))
            .collect();
        let report = serde_json::json!({ "onnx": manifest["onnx"], "device": device, "cases": cases });
        std::fs::write(path, serde_json::to_string_pretty(&report).unwrap_or_default()).expect("write report");
    }
    let mut by_op: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    for o in &outcomes {
        for op in &o.ops {
            let k = match o.result {
                "passed" => 0,
                "refused" => 1,
                _ => 2,
            };
            by_op.entry(op.as_str()).or_default()[k] += 1;
        }
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result == "failed").collect();
    let passed = outcomes.iter().filter(|o| o.result == "passed").count();
    let refused = outcomes.iter().filter(|o| o.result == "refused").count();
    eprintln!(
        "{} cases of claimed ops: {passed} passed, {refused} refused, {} failed",
        outcomes.len(),
        failed.len()
    );
    for o in outcomes.iter().filter(|o| o.result == "refused") {
        eprintln!("refused {}: {}", o.name, o.detail);
    }
    for o in &failed {
        eprintln!("FAILED {}: {}", o.name, o.detail);
    }
    for (op, [p, r, f]) in by_op.iter().filter(|(_, c)| c[2] > 0) {
        eprintln!("op {op}: {p} passed, {r} refused, {f} failed");
    }
    assert!(failed.is_empty(), "{} node test cases failed", failed.len());
    outcomes
}
