//! Image classification (ViTForImageClassification): the top-k labels of `id2label` with their
//! scores, as transformers' image-classification pipeline gives them (softmax over the logits for
//! single-label models, sigmoid for multi-label or one-label models).

use hwcov_core::{Error, LoadOptions, ModelFiles, PlatformId, Result};

use crate::tasks::vision::{labels, output, reject, softmax_rows};
use crate::tasks::{RunOutput, RunRequest};
use crate::{features, platforms};

/// The pipeline's default number of labels.
pub const DEFAULT_TOP_K: usize = 5;

pub fn run(files: &ModelFiles, request: &RunRequest, platform: PlatformId, opts: &LoadOptions) -> Result<RunOutput> {
    reject(files, request, false, true, false)?;
    let image = request
        .image
        .as_deref()
        .ok_or_else(|| Error::Usage("give the image to classify with --image".to_string()))?;
    let inputs = features::image(&files.dir, &[image], request.image_backend)?;
    let mut handler = platforms::get(platform)?.load(files, opts)?;
    let outputs = handler.forward(&inputs)?;
    let (shape, logits) = output(&outputs, "logits").map_err(|_| {
        Error::Usage(format!(
            "{} has no classification head (architectures: {}); image classification needs ViTForImageClassification",
            files.dir.display(),
            files.architecture.as_deref().unwrap_or("none")
        ))
    })?;
    let n = *shape.last().unwrap_or(&0);
    let multi_label = files.config.get("problem_type").and_then(|v| v.as_str()) == Some("multi_label_classification");
    let scores: Vec<f64> = if multi_label || n == 1 {
        logits.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect()
    } else {
        softmax_rows(&logits[..n], n).remove(0)
    };
    let names = labels(files, n);
    let mut ranked: Vec<(f64, &String)> = scores.iter().copied().zip(&names).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked.truncate(request.top_k.unwrap_or(DEFAULT_TOP_K).min(n));
    let mut text = String::new();
    for (s, l) in &ranked {
        text.push_str(&format!("{s:.4}  {l}\n"));
    }
    let json = serde_json::json!({
        "task": "image-classification",
        "image": image,
        "predictions": ranked.iter().map(|(s, l)| serde_json::json!({"label": l, "score": s})).collect::<Vec<_>>(),
    });
    Ok(RunOutput { text, json })
}
