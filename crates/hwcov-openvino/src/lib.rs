//! hwcov-openvino: the OpenVINO platform. Runs a model folder's ONNX graph (or OpenVINO IR) with the
//! OpenVINO runtime, loaded at run time from `libopenvino_c.so`.
//!
//! The runtime is found, in order: `OPENVINO_LIB` (the library file or its folder), the
//! project-local install of `cargo xtask setup --platform openvino` (`.hwcov/openvino`, looked for
//! from the working directory and the executable upwards), then the usual install locations
//! (openvino-finder: `INTEL_OPENVINO_DIR`, the library path, /opt/intel).

mod graph;
mod runtime;

use std::path::PathBuf;
use std::sync::Mutex;

use hwcov_core::{
    Availability, Error, Handler, LoadOptions, ModelClass, ModelFiles, Platform, PlatformId, Result, Support,
};
use hwcov_onnx::handler::GraphHandler;

pub use runtime::{find_library, runtime_version};

pub struct OpenVinoPlatform;

/// The library loaded into this process (the OpenVINO bindings load one per process).
static LOADED: Mutex<Option<std::result::Result<PathBuf, String>>> = Mutex::new(None);

/// Loads the runtime once; later calls return the first outcome.
pub fn ensure_loaded() -> Result<PathBuf> {
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if loaded.is_none() {
        *loaded = Some(runtime::load());
    }
    match loaded.as_ref() {
        Some(Ok(p)) => Ok(p.clone()),
        Some(Err(reason)) => Err(Error::Unavailable {
            platform: "openvino".to_string(),
            reason: reason.clone(),
        }),
        None => Err(Error::Unavailable {
            platform: "openvino".to_string(),
            reason: "not loaded".to_string(),
        }),
    }
}

impl Platform for OpenVinoPlatform {
    fn id(&self) -> PlatformId {
        PlatformId::Openvino
    }

    fn probe(&self) -> Availability {
        Availability::from_probe(ensure_loaded().and_then(|lib| runtime::describe(&lib, 0)))
    }

    /// OpenVINO runs whatever graph a model folder holds; a class whose export it cannot compile
    /// fails with the runtime's message.
    fn support(&self, _class: ModelClass) -> Support {
        Support::Implemented
    }

    fn load(&self, model: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Handler>> {
        ensure_loaded()?;
        Ok(Box::new(GraphHandler::load(model, |g| graph::Graph::compile(g, opts))?))
    }
}
