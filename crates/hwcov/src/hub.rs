//! Models by Hub id: `--model org/name[@revision]` becomes a model folder in the Hugging Face
//! cache holding the files the platform reads (hwcov-hub fetches and checks them).

use std::path::PathBuf;

use hwcov_core::{PlatformId, Result};
pub use hwcov_hub::{ModelId, Need, Settings};

/// What `platform` reads of a model: safetensors on the eager platforms, graphs on the others.
pub fn need_of(platform: PlatformId) -> Need {
    match platform {
        PlatformId::Cpu | PlatformId::Cuda | PlatformId::Mps => Need::Safetensors,
        PlatformId::Openvino | PlatformId::Rocm | PlatformId::Webnn | PlatformId::Webgpu => Need::Graph,
    }
}

/// The cache folder of `id` with what `need` asks for, fetched where missing (the environment's
/// HF_ENDPOINT, HF_HOME / HF_HUB_CACHE, HF_TOKEN and HF_HUB_OFFLINE apply).
pub fn model_folder(id: &ModelId, need: Need) -> Result<PathBuf> {
    hwcov_hub::model_folder(id, need, &Settings::from_env())
}
