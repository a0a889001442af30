//! Runs the cells of the matrix (models.toml x platforms) that this build and machine can run.

use std::path::Path;

use hwcov_core::report::{host_name, utc_now};
use hwcov_core::{
    Availability, CellResult, CoverageRun, Error, ModelSpec, PlatformId, Status, Support, spec::load_models,
};

use crate::platforms::{self, Build};
use crate::verify::{VerifyOptions, verify};

/// Runs one cell: the fixture of `spec` on `platform`, at f32 with the model's tolerance.
pub fn run_cell(root: &Path, spec: &ModelSpec, platform: PlatformId) -> CellResult {
    let mut cell = CellResult {
        model: spec.name.clone(),
        platform,
        status: Status::NotImplemented,
        reason: None,
        device: None,
        host: host_name(),
        date: utc_now(),
        report: None,
    };
    let p = match platforms::build(platform) {
        Build::Compiled(p) => p,
        Build::NotCompiled { feature } => {
            cell.status = Status::NotVerifiedHere;
            cell.reason = Some(format!("not compiled into this build (feature `{feature}`)"));
            return cell;
        }
        Build::NoCrate => {
            cell.status = Status::NotImplemented;
            cell.reason = Some(format!("no {platform} platform in hwcov yet"));
            return cell;
        }
    };
    match p.probe() {
        Availability::Available { device } => cell.device = Some(device),
        Availability::Unavailable { reason } => {
            cell.status = Status::NotVerifiedHere;
            cell.reason = Some(reason);
            return cell;
        }
    }
    match p.support(spec.model_type) {
        Support::Implemented => {}
        Support::NotImplemented { reason } => {
            cell.status = Status::NotImplemented;
            cell.reason = Some(reason);
            return cell;
        }
        Support::Unsupported { reason } => {
            cell.status = Status::Unsupported;
            cell.reason = Some(reason);
            return cell;
        }
    }
    let dir = root.join(&spec.fixture);
    let opts = VerifyOptions {
        tolerance: Some(spec.tolerance.tolerance()),
        ..Default::default()
    };
    match verify(&dir, &dir.join("io.safetensors"), platform, &opts) {
        Ok(mut report) => {
            cell.status = if report.passed {
                Status::Verified
            } else {
                Status::Failed
            };
            if !report.passed {
                cell.reason = Some(report.failures());
            }
            // Paths relative to the project, so that a run reads the same on every machine.
            let relative = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
            report.model_dir = relative(&dir);
            report.io = relative(&dir.join("io.safetensors"));
            cell.report = Some(report);
        }
        Err(e) => {
            cell.status = match e {
                Error::Unavailable { .. } => Status::NotVerifiedHere,
                Error::NotImplemented { .. } => Status::NotImplemented,
                Error::Unsupported { .. } => Status::Unsupported,
                _ => Status::Failed,
            };
            cell.reason = Some(e.to_string());
        }
    }
    cell
}

/// Runs every cell of `specs` on every platform, in models.toml order.
pub fn run_all(root: &Path, specs: &[ModelSpec]) -> CoverageRun {
    run_platforms(root, specs, &PlatformId::ALL)
}

/// Runs the cells of `specs` on `platforms` only (a GPU host measures its GPU column).
pub fn run_platforms(root: &Path, specs: &[ModelSpec], platforms: &[PlatformId]) -> CoverageRun {
    let total = specs.len() * platforms.len();
    let mut cells = Vec::with_capacity(total);
    for spec in specs {
        for &platform in platforms {
            // A long matrix says where it is: the cell it runs, then what it found.
            eprint!("[{}/{total}] {} on {platform} ... ", cells.len() + 1, spec.name);
            let started = std::time::Instant::now();
            let cell = run_cell(root, spec, platform);
            eprintln!("{} ({:.1} s)", cell.status, started.elapsed().as_secs_f64());
            cells.push(cell);
        }
    }
    CoverageRun {
        host: host_name(),
        date: utc_now(),
        hwcov_version: env!("CARGO_PKG_VERSION").to_string(),
        platforms_compiled: platforms::compiled().iter().map(|p| p.id()).collect(),
        cells,
    }
}

/// Runs one cell and checks it against its expectation in models.toml: what the generated matrix
/// tests call. `Err` says how the measurement contradicts models.toml.
pub fn check_cell(root: &Path, model: &str, platform: PlatformId) -> Result<CellResult, String> {
    let specs = load_models(&root.join("models.toml")).map_err(|e| e.to_string())?;
    let spec = specs
        .iter()
        .find(|s| s.name == model)
        .ok_or_else(|| format!("models.toml has no model `{model}`"))?;
    let cell = run_cell(root, spec, platform);
    spec.platforms.get(platform).judge(cell.status).map_err(|why| {
        format!(
            "{model} on {platform}: {why}{}",
            cell.reason
                .as_deref()
                .map(|r| format!("\n  reason: {r}"))
                .unwrap_or_default()
        )
    })?;
    Ok(cell)
}
