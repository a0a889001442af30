//! Finding and loading the OpenVINO runtime, and running a graph with it.

use std::path::{Path, PathBuf};

use hwcov_core::{Error, Result, library};
use openvino::{Core, DeviceType, PropertyKey};

const SETUP_HINT: &str = "run `cargo xtask setup --platform openvino` (installs the pip wheel openvino==2026.4.1 \
     into .hwcov/openvino), or set OPENVINO_LIB to libopenvino_c.so";

/// Where the runtime library is, or why none was found.
pub fn find_library() -> std::result::Result<PathBuf, String> {
    const PREFIX: &str = "libopenvino_c.so";
    if let Some(named) = library::from_env("OPENVINO_LIB", PREFIX) {
        return named;
    }
    if let Some(p) = library::local(&[".hwcov/openvino/openvino/libs"], PREFIX) {
        return Ok(p);
    }
    openvino_sys::library::find().ok_or_else(|| format!("the OpenVINO runtime is not installed: {SETUP_HINT}"))
}

/// Loads the runtime library into the process.
pub fn load() -> std::result::Result<PathBuf, String> {
    let lib = find_library()?;
    openvino_sys::library::load_from(&lib).map_err(|e| format!("cannot load {}: {e}", lib.display()))?;
    Ok(lib)
}

/// The runtime's version, as it reports it ("2026.4.1-...").
pub fn runtime_version() -> Option<String> {
    let core = Core::new().ok()?;
    let versions = core.versions("CPU").ok()?;
    versions.first().map(|(_, v)| v.build_number.clone())
}

pub(crate) fn ov_error(context: &str) -> impl Fn(openvino::InferenceError) -> Error + '_ {
    move |e| Error::runtime(context, format!("OpenVINO: {e}"))
}

/// The devices OpenVINO reports, CPU first.
pub(crate) fn devices(core: &Core) -> Result<Vec<String>> {
    let mut names: Vec<String> = core
        .available_devices()
        .map_err(ov_error("listing OpenVINO devices"))?
        .iter()
        .map(|d| d.as_ref().to_string())
        .collect();
    names.sort_by_key(|n| n != "CPU");
    Ok(names)
}

/// "OpenVINO 2026.4.1 CPU: Intel Xeon ... (libopenvino_c.so.2641)"
pub fn describe(lib: &Path, index: usize) -> Result<String> {
    let core = Core::new().map_err(|e| Error::runtime("starting OpenVINO", e))?;
    let names = devices(&core)?;
    let name = names.get(index).ok_or_else(|| Error::Unavailable {
        platform: "openvino".to_string(),
        reason: format!("no OpenVINO device {index} (it reports {})", names.join(", ")),
    })?;
    let device = DeviceType::from(name.as_str());
    let full = core
        .get_property(&device, &PropertyKey::DeviceFullName)
        .unwrap_or_default();
    let version = runtime_version().unwrap_or_else(|| "?".to_string());
    let file = lib
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(format!("OpenVINO {version} {name}: {full} ({file})"))
}
