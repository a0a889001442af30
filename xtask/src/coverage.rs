//! `cargo xtask coverage`: run the matrix on this machine, merge other machines' runs, write the docs.

use std::path::Path;

use anyhow::{Result, bail};
use hwcov::spec::load_models;

use crate::matrix::{COVERAGE_JSON, COVERAGE_MD, COVERAGE_SVG, imported_runs, merge};
use crate::render;

pub fn run(root: &Path) -> Result<()> {
    let specs = load_models(&root.join("models.toml"))?;
    // Every platform this machine can set up; one that cannot be says why in its cells.
    if let Err(e) = crate::setup::setup_openvino(root) {
        eprintln!("warning: OpenVINO could not be set up ({e:#}); its cells will say why");
    }
    // The rocm platform cannot run here (no AMD GPU); ONNX Runtime's CPU build lets it say exactly why.
    if let Err(e) = crate::setup::setup_rocm(root) {
        eprintln!("warning: ONNX Runtime could not be set up ({e:#}); the rocm cells will say why");
    }
    if let Err(e) = crate::setup::setup_webgpu(root) {
        eprintln!("warning: WebGPU could not be set up ({e:#}); its cells will say why");
    }
    if let Err(e) = crate::setup::setup_webnn(root) {
        eprintln!("warning: WebNN could not be set up ({e:#}); its cells will say why");
    }
    let here = hwcov::coverage::run_all(root, &specs);
    for c in here.cells.iter().filter(|c| c.status != hwcov::Status::NotImplemented) {
        println!(
            "{:<11} {:<9} {:<18} {}",
            c.model,
            c.platform.as_str(),
            c.status.as_str(),
            c.max_abs_err()
                .map(|e| format!("max abs err {e:.2e}"))
                .unwrap_or_else(|| c.reason.clone().unwrap_or_default())
        );
    }
    let mut runs = vec![("this run".to_string(), here)];
    runs.extend(imported_runs(root)?);
    let matrix = merge(&specs, &runs);
    crate::write(root, COVERAGE_JSON, &matrix.to_json()?)?;
    crate::write(root, COVERAGE_MD, &render::markdown(&specs, &matrix))?;
    crate::write(root, COVERAGE_SVG, &render::svg(&specs, &matrix))?;

    let contradictions = crate::validate::contradictions(&specs, &matrix);
    for c in &contradictions {
        eprintln!("contradiction: {c}");
    }
    if !contradictions.is_empty() {
        bail!("{} cells contradict models.toml", contradictions.len());
    }
    let verified = matrix
        .cells
        .iter()
        .filter(|c| c.status == hwcov::Status::Verified)
        .count();
    println!(
        "{verified} of {} cells verified; every cell agrees with models.toml",
        matrix.cells.len()
    );
    Ok(())
}
