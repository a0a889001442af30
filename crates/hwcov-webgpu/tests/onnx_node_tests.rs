//! The ONNX backend node tests (the `onnx` package's own suite, written out by
//! `cargo xtask node-tests`) for every op hwcov-webgpu claims (`hwcov_webgpu::OPS`).
//!
//! Each case whose ops are all claimed runs on the adapter and ends one of three ways:
//! - passed: every output within the case's own tolerance (`|got - want| <= atol + rtol * |want|`,
//!   NaN where NaN is expected; integers and bools exact);
//! - refused: the platform said `unsupported` with a reason (a dtype the kernels do not compute in,
//!   such as double, or a shape decided by values computed during the run);
//! - failed: anything else, a wrong value or any other error. One failed case fails the test.
//!
//! HWCOV_NODE_TESTS names the folder (default `.hwcov/onnx-node-tests`); HWCOV_NODE_TESTS_REPORT,
//! if set, is where the per-case results go as JSON (what `cargo xtask node-tests` renders).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hwcov_core::{Error, HostTensor, NamedTensors};

#[derive(Debug, Clone, serde::Serialize)]
struct Outcome {
    name: String,
    ops: Vec<String>,
    result: &'static str,
    detail: String,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Within the case's tolerance, as numpy.testing.assert_allclose compares.
fn close(want: &HostTensor, got: &HostTensor, rtol: f64, atol: f64) -> Result<(), String> {
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

fn run_case(
    gpu: &std::sync::Arc<hwcov_webgpu::gpu::Gpu>,
    dir: &Path,
    case: &serde_json::Value,
) -> (&'static str, String) {
    let rtol = case["rtol"].as_f64().unwrap_or(1e-3);
    let atol = case["atol"].as_f64().unwrap_or(1e-7);
    let inputs: Vec<String> = case["inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let outputs: Vec<String> = case["outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let result = (|| -> Result<Result<(), String>, Error> {
        let mut session = hwcov_webgpu::Session::open(gpu.clone(), &dir.join("model.onnx"))?;
        let sets = case["data_sets"].as_u64().unwrap_or(0);
        for k in 0..sets {
            let set = dir.join(format!("test_data_set_{k}"));
            let mut feed = NamedTensors::new();
            for (i, name) in inputs.iter().enumerate() {
                let file = set.join(format!("input_{i}.pb"));
                if file.is_file() {
                    feed.insert(name.clone(), hwcov_onnx::model::read_tensor_file(&file)?);
                }
            }
            let got = session.run(&feed)?;
            for (i, name) in outputs.iter().enumerate() {
                let want = hwcov_onnx::model::read_tensor_file(&set.join(format!("output_{i}.pb")))?;
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

#[test]
fn onnx_backend_node_tests() {
    let dir = std::env::var_os("HWCOV_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".hwcov/onnx-node-tests"));
    let required = std::env::var("HWCOV_REQUIRE_PLATFORMS").unwrap_or_default();
    let required = required.split(',').any(|p| p == "webgpu");
    let manifest = match std::fs::read_to_string(dir.join("manifest.json")) {
        Ok(m) => m,
        Err(e) => {
            assert!(!required, "{}: {e} (run `cargo xtask node-tests` first)", dir.display());
            eprintln!(
                "skipped: no node tests at {} (cargo xtask node-tests writes them)",
                dir.display()
            );
            return;
        }
    };
    let gpu = match hwcov_webgpu::gpu::gpu() {
        Ok(g) => g,
        Err(e) => {
            assert!(!required, "{e}");
            eprintln!("skipped: {e}");
            return;
        }
    };
    let manifest: serde_json::Value = serde_json::from_str(&manifest).expect("manifest.json");
    let only = std::env::var("HWCOV_NODE_TESTS_ONLY").ok();
    let mut outcomes = Vec::new();
    for case in manifest["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().unwrap_or("?").to_string();
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let ops: Vec<String> = case["ops"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        if ops.is_empty() || !ops.iter().all(|o| hwcov_webgpu::OPS.contains(&o.as_str())) {
            continue;
        }
        let (result, detail) = if case["tensors_only"].as_bool() == Some(false) {
            (
                "refused",
                "sequence, optional or map values (hwcov feeds tensors only)".to_string(),
            )
        } else {
            run_case(&gpu, &dir.join(&name), case)
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
    if let Some(path) = std::env::var_os("HWCOV_NODE_TESTS_REPORT") {
        let report = serde_json::json!({
            "onnx": manifest["onnx"],
            "device": gpu.describe(),
            "cases": outcomes,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report).unwrap_or_default()).expect("write report");
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
    assert!(failed.is_empty(), "{} node test cases failed", failed.len());
}
