//! The weights of a model folder: `model.safetensors`, or the shards named by
//! `model.safetensors.index.json`, memory-mapped. Pickled weights are never read.

use std::path::PathBuf;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use hwcov_core::{Error, ModelFiles, Result};

/// The safetensors files of a model folder.
pub fn weight_files(files: &ModelFiles) -> Result<Vec<PathBuf>> {
    let single = files.file("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = files.file("model.safetensors.index.json");
    if index.is_file() {
        let mut shards: Vec<PathBuf> = Vec::new();
        for name in hwcov_core::tensor::shard_names(&index)? {
            let p = files.file(&name);
            if !shards.contains(&p) {
                if !p.is_file() {
                    return Err(Error::config(
                        &index,
                        "weight_map",
                        format!("names {name}, which is not in the folder"),
                    ));
                }
                shards.push(p);
            }
        }
        return Ok(shards);
    }
    let pickled = files.file("pytorch_model.bin").is_file();
    Err(Error::io(
        &single,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            if pickled {
                "no safetensors weights (the folder has only pytorch_model.bin; hwcov does not read pickles: convert it with save_pretrained(safe_serialization=True))"
            } else {
                "no weights in the model folder (model.safetensors or model.safetensors.index.json)"
            },
        ),
    ))
}

/// A VarBuilder over the folder's weights, converting them to `dtype` on `device` as they are read.
pub fn var_builder(files: &ModelFiles, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
    let paths = weight_files(files)?;
    // SAFETY: the files are mapped read-only; as with every mmap, they must not be truncated or
    // rewritten while the model is loaded. The safetensors header is validated against the file size
    // before any tensor is read.
    unsafe { VarBuilder::from_mmaped_safetensors(&paths, dtype, device) }.map_err(|e| {
        let shown = paths.first().cloned().unwrap_or_default();
        Error::format(shown, format!("cannot read the weights: {e}"))
    })
}

/// Turns a candle error raised while building a model from its weights into one that says the
/// weights and config.json disagree (shape mismatch, missing tensor), naming both files.
pub fn load_error(files: &ModelFiles, err: candle_core::Error) -> Error {
    if let Some(oom) = crate::io::out_of_memory(&format!("loading {}", files.dir.display()), &err) {
        return oom;
    }
    let weights = weight_files(files)
        .ok()
        .and_then(|p| p.first().cloned())
        .unwrap_or_else(|| files.file("model.safetensors"));
    let msg = err.to_string();
    let msg = msg.lines().next().unwrap_or_default();
    Error::format(
        weights,
        format!("does not match {}: {msg}", files.config_path.display()),
    )
}
