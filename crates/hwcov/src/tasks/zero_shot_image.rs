//! Zero-shot image classification (CLIPModel): the probability of each candidate label for an image,
//! as transformers' zero-shot-image-classification pipeline computes it: each label put into the
//! hypothesis template, softmax over `logits_per_image`, sorted by score.

use hwcov_core::{Error, LoadOptions, ModelFiles, NamedTensors, PlatformId, Result};
use hwcov_preprocess::text::{TextInput, TextTokenizer};

use crate::tasks::vision::{output, reject, softmax_rows};
use crate::tasks::{RunOutput, RunRequest};
use crate::{features, platforms};

/// The pipeline's default template.
pub const DEFAULT_TEMPLATE: &str = "This is a photo of {}.";

/// Candidate labels, each as the template puts it.
pub fn hypotheses(labels: &[String], template: &str) -> Result<Vec<String>> {
    if !template.contains("{}") {
        return Err(Error::Usage(format!(
            "--hypothesis-template `{template}` has no {{}} for the label"
        )));
    }
    if labels.iter().any(|l| l.trim().is_empty()) {
        return Err(Error::Usage("an empty --text label".to_string()));
    }
    Ok(labels.iter().map(|l| template.replacen("{}", l, 1)).collect())
}

/// Ranks `labels` by probability from `logits_per_image` (1, labels).
fn ranked(outputs: &NamedTensors, labels: &[String]) -> Result<Vec<(f64, String)>> {
    let (shape, logits) = output(outputs, "logits_per_image")?;
    let n = *shape.last().unwrap_or(&0);
    let probs = softmax_rows(&logits[..n], n).remove(0);
    let mut r: Vec<(f64, String)> = probs.into_iter().zip(labels.iter().cloned()).collect();
    r.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(r)
}

pub fn run(files: &ModelFiles, request: &RunRequest, platform: PlatformId, opts: &LoadOptions) -> Result<RunOutput> {
    reject(files, request, true, true, false)?;
    let image = request
        .image
        .as_deref()
        .ok_or_else(|| Error::Usage("give the image with --image and candidate labels with --text".to_string()))?;
    if request.texts.is_empty() {
        return Err(Error::Usage(
            "give candidate labels with --text (repeat it for each)".to_string(),
        ));
    }
    let template = request.hypothesis_template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
    let sequences = hypotheses(&request.texts, template)?;
    let tokenizer = TextTokenizer::from_dir(&files.dir)?;
    let batch: Vec<TextInput> = sequences.iter().map(|s| TextInput::Single(s)).collect();
    let mut inputs = tokenizer.encode(&batch)?;
    inputs.extend(features::image(&files.dir, &[image], request.image_backend)?);
    let mut handler = platforms::get(platform)?.load(files, opts)?;
    let outputs = handler.forward(&inputs)?;
    let ranked = ranked(&outputs, &request.texts)?;
    let mut text = String::new();
    for (p, l) in &ranked {
        text.push_str(&format!("{p:.4}  {l}\n"));
    }
    let json = serde_json::json!({
        "task": "zero-shot-image-classification",
        "image": image,
        "hypothesis_template": template,
        "predictions": ranked.iter().map(|(s, l)| serde_json::json!({"label": l, "score": s})).collect::<Vec<_>>(),
    });
    Ok(RunOutput { text, json })
}
