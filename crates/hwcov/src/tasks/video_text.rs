//! Video-text matching (XCLIPModel): the probability of each text for a video, softmax over
//! `logits_per_video` as X-CLIP's model card computes it, sorted by score.

use hwcov_core::{Error, LoadOptions, ModelFiles, PlatformId, Result};
use hwcov_preprocess::text::{TextInput, TextTokenizer};

use crate::tasks::vision::{output, reject, softmax_rows};
use crate::tasks::{RunOutput, RunRequest};
use crate::{features, platforms};

pub fn run(files: &ModelFiles, request: &RunRequest, platform: PlatformId, opts: &LoadOptions) -> Result<RunOutput> {
    reject(files, request, true, false, true)?;
    let video = request
        .video
        .as_deref()
        .ok_or_else(|| Error::Usage("give the video with --video and the texts to match with --text".to_string()))?;
    if request.texts.is_empty() {
        return Err(Error::Usage(
            "give the texts to match with --text (repeat it for each)".to_string(),
        ));
    }
    if request.texts.iter().any(|t| t.trim().is_empty()) {
        return Err(Error::Usage("an empty --text".to_string()));
    }
    let tokenizer = TextTokenizer::from_dir(&files.dir)?;
    let batch: Vec<TextInput> = request.texts.iter().map(|s| TextInput::Single(s)).collect();
    let mut inputs = tokenizer.encode(&batch)?;
    inputs.extend(features::video(&files.dir, video, None, request.image_backend)?);
    let mut handler = platforms::get(platform)?.load(files, opts)?;
    let outputs = handler.forward(&inputs)?;
    let (shape, logits) = output(&outputs, "logits_per_video")?;
    let n = *shape.last().unwrap_or(&0);
    let probs = softmax_rows(&logits[..n], n).remove(0);
    let mut ranked: Vec<(f64, &String)> = probs.into_iter().zip(&request.texts).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut text = String::new();
    for (p, t) in &ranked {
        text.push_str(&format!("{p:.4}  {t}\n"));
    }
    let json = serde_json::json!({
        "task": "video-text-matching",
        "video": video,
        "predictions": ranked.iter().map(|(s, t)| serde_json::json!({"text": t, "score": s})).collect::<Vec<_>>(),
    });
    Ok(RunOutput { text, json })
}
