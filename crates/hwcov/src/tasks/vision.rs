//! Helpers shared by the vision tasks: the inputs a task accepts, and softmax over host tensors.

use hwcov_core::{Error, HostTensor, ModelFiles, Result};

use crate::tasks::RunRequest;

/// Rejects the inputs a task cannot use, naming them.
pub fn reject(files: &ModelFiles, request: &RunRequest, text: bool, image: bool, video: bool) -> Result<()> {
    let class = files.class.name();
    let mut extra = Vec::new();
    if !text && !request.texts.is_empty() {
        extra.push("--text");
    }
    if !image && request.image.is_some() {
        extra.push("--image");
    }
    if !video && request.video.is_some() {
        extra.push("--video");
    }
    if request.audio.is_some() {
        extra.push("--audio");
    }
    if extra.is_empty() {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{class} models do not take {}",
            extra.join(" or ")
        )))
    }
}

/// The values of an output, with its shape, or an error naming it.
pub fn output<'a>(outputs: &'a hwcov_core::NamedTensors, name: &str) -> Result<(&'a [usize], Vec<f64>)> {
    let t: &HostTensor = outputs
        .get(name)
        .ok_or_else(|| Error::tensor(name, "the model does not produce it"))?;
    Ok((t.shape(), t.to_f64_vec()))
}

/// Softmax of each row of `rows` values of length `n`.
pub fn softmax_rows(values: &[f64], n: usize) -> Vec<Vec<f64>> {
    values
        .chunks(n)
        .map(|row| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row.iter().map(|x| (x - max).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(|x| x / s).collect()
        })
        .collect()
}

/// `id2label` of config.json: the label of each class index ("LABEL_i" where it is missing, as
/// transformers names them).
pub fn labels(files: &ModelFiles, n: usize) -> Vec<String> {
    let map = files.config.get("id2label").and_then(|v| v.as_object());
    (0..n)
        .map(|i| {
            map.and_then(|m| m.get(&i.to_string()))
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| format!("LABEL_{i}"))
        })
        .collect()
}
