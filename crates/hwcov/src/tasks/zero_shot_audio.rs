//! Zero-shot audio classification with CLAP: an audio file and candidate labels to probabilities, as
//! transformers' `zero-shot-audio-classification` pipeline does it: each label goes through the
//! hypothesis template "This is a sound of {}.", the probabilities are the softmax of
//! `logits_per_audio`.

use std::path::Path;

use hwcov_core::{Error, LoadOptions, ModelFiles, PlatformId, Result};
use hwcov_preprocess::audio::{RandomCrop, file_features};
use hwcov_preprocess::text::{TextInput, TextTokenizer};

use crate::platforms;
use crate::tasks::{RunOutput, RunRequest};

/// The pipeline's default `hypothesis_template`.
pub const HYPOTHESIS_TEMPLATE: &str = "This is a sound of {}.";

/// One candidate label and its probability.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Score {
    pub label: String,
    pub score: f64,
}

pub fn run(files: &ModelFiles, request: &RunRequest, platform: PlatformId, opts: &LoadOptions) -> Result<RunOutput> {
    if request.image.is_some() || request.video.is_some() {
        return Err(Error::Usage(format!(
            "{} models take --audio and --text",
            files.class.name()
        )));
    }
    let audio = request
        .audio
        .as_deref()
        .ok_or_else(|| Error::Usage("give the audio file to classify with --audio".to_string()))?;
    if request.texts.is_empty() {
        return Err(Error::Usage(
            "give the candidate labels with --text (repeat it for each label)".to_string(),
        ));
    }
    let (scores, notes) = classify(&files.dir, audio, &request.texts, platform, opts)?;
    let mut text = String::new();
    for s in &scores {
        text.push_str(&format!("{:.4}  {}\n", s.score, s.label));
    }
    for n in &notes {
        text.push_str(&format!("note: {n}\n"));
    }
    let json = serde_json::json!({
        "task": "zero-shot-audio-classification",
        "hypothesis_template": HYPOTHESIS_TEMPLATE,
        "scores": scores,
        "notes": notes,
    });
    Ok(RunOutput { text, json })
}

/// The probability of each label for the audio, highest first, and notes on the audio's conversion.
pub fn classify(
    model_dir: &Path,
    audio: &Path,
    labels: &[String],
    platform: PlatformId,
    opts: &LoadOptions,
) -> Result<(Vec<Score>, Vec<String>)> {
    let files = ModelFiles::open(model_dir)?;
    if labels.iter().any(|l| l.trim().is_empty()) {
        return Err(Error::Usage("an empty --text is not a label".to_string()));
    }
    // Where transformers crops long audio at random, take the first crop it could draw (noted).
    let (features, _) = file_features(model_dir, audio, RandomCrop::First)?;
    let sequences: Vec<String> = labels.iter().map(|l| HYPOTHESIS_TEMPLATE.replace("{}", l)).collect();
    let tokenizer = TextTokenizer::from_dir(model_dir)?;
    let batch: Vec<TextInput> = sequences.iter().map(|s| TextInput::Single(s)).collect();
    let mut inputs = tokenizer.encode(&batch)?;
    inputs.extend(features.tensors);
    let mut handler = platforms::get(platform)?.load(&files, opts)?;
    let outputs = handler.forward(&inputs)?;
    let logits = outputs
        .get("logits_per_audio")
        .ok_or_else(|| Error::tensor("logits_per_audio", "the model does not produce it"))?;
    if logits.shape() != [1, labels.len()] {
        return Err(Error::tensor(
            "logits_per_audio",
            format!("has shape {:?}; (1, {}) expected", logits.shape(), labels.len()),
        ));
    }
    let v = logits.to_f64_vec();
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = v.iter().map(|x| (x - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    let mut scores: Vec<Score> = labels
        .iter()
        .zip(&exp)
        .map(|(l, e)| Score {
            label: l.clone(),
            score: e / sum,
        })
        .collect();
    // Highest first; the sort is stable, so ties keep the order of the labels (as the pipeline does).
    scores.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok((scores, features.notes))
}
