//! Feature extraction: one embedding per text, with an encoder such as BERT.

use std::path::Path;

use hwcov_core::{Error, HostTensor, LoadOptions, ModelClass, ModelFiles, PlatformId, Result};
use hwcov_preprocess::text::{TextInput, TextTokenizer};

use crate::platforms;
use crate::tasks::{RunOutput, RunRequest};

/// How token states become one sentence embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// The mean over the attended tokens (sentence-transformers' default).
    #[default]
    Mean,
    /// The hidden state of the first token ([CLS]).
    Cls,
    /// The model's pooler output (dense + tanh over [CLS]).
    Pooler,
}

impl std::str::FromStr for Pooling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "pooler" => Ok(Pooling::Pooler),
            _ => Err(Error::Usage(format!("unknown pooling `{s}`; use mean, cls or pooler"))),
        }
    }
}

/// `hwcov run` on an encoder: the embeddings of `request.texts`.
pub fn run(files: &ModelFiles, request: &RunRequest, platform: PlatformId, opts: &LoadOptions) -> Result<RunOutput> {
    if request.image.is_some() || request.video.is_some() || request.audio.is_some() {
        return Err(Error::Usage(format!("{} models take text only", files.class.name())));
    }
    if request.texts.is_empty() {
        return Err(Error::Usage("give the text to embed with --text".to_string()));
    }
    let embeddings = embed(&files.dir, &request.texts, request.pooling, platform, opts)?;
    let mut text = String::new();
    for (t, e) in request.texts.iter().zip(&embeddings) {
        let head: Vec<String> = e.iter().take(6).map(|x| format!("{x:.4}")).collect();
        text.push_str(&format!("{t:?}: {} values [{}, ...]\n", e.len(), head.join(", ")));
    }
    let json = serde_json::json!({ "task": "feature-extraction", "embeddings": embeddings });
    Ok(RunOutput { text, json })
}

/// One embedding per text (feature extraction with an encoder such as BERT).
pub fn embed(
    model_dir: &Path,
    texts: &[String],
    pooling: Pooling,
    platform: PlatformId,
    opts: &LoadOptions,
) -> Result<Vec<Vec<f32>>> {
    let files = ModelFiles::open(model_dir)?;
    if files.class != ModelClass::Bert {
        return Err(Error::NotImplemented {
            platform: platform.to_string(),
            reason: format!(
                "`hwcov run --text` on {} models is not written yet (BERT is)",
                files.class.name()
            ),
        });
    }
    if texts.iter().any(|t| t.trim().is_empty()) {
        return Err(Error::Usage("an empty --text has nothing to embed".to_string()));
    }
    let tokenizer = TextTokenizer::from_dir(model_dir)?;
    let batch: Vec<TextInput> = texts.iter().map(|t| TextInput::Single(t)).collect();
    let inputs = tokenizer.encode(&batch)?;
    let mut handler = platforms::get(platform)?.load(&files, opts)?;
    let outputs = handler.forward(&inputs)?;
    let field = if pooling == Pooling::Pooler {
        "pooler_output"
    } else {
        "last_hidden_state"
    };
    let out = outputs
        .get(field)
        .ok_or_else(|| Error::tensor(field, "the model does not produce it (no pooler weights?)"))?;
    let mask = &inputs["attention_mask"];
    Ok(pool(out, mask, pooling))
}

fn pool(out: &HostTensor, mask: &HostTensor, pooling: Pooling) -> Vec<Vec<f32>> {
    let v: Vec<f32> = out.to_f64_vec().into_iter().map(|x| x as f32).collect();
    let m = mask.to_i64_vec().unwrap_or_default();
    match (pooling, out.shape()) {
        (Pooling::Pooler, [b, h]) => (0..*b).map(|i| v[i * h..(i + 1) * h].to_vec()).collect(),
        (Pooling::Cls, [b, l, h]) => (0..*b).map(|i| v[i * l * h..i * l * h + h].to_vec()).collect(),
        (_, [b, l, h]) => (0..*b)
            .map(|i| {
                let mut sum = vec![0f32; *h];
                let mut n = 0f32;
                for t in 0..*l {
                    if m[i * l + t] != 0 {
                        n += 1.0;
                        for (s, x) in sum.iter_mut().zip(&v[(i * l + t) * h..(i * l + t + 1) * h]) {
                            *s += x;
                        }
                    }
                }
                sum.iter().map(|s| s / n.max(1.0)).collect()
            })
            .collect(),
        _ => Vec::new(),
    }
}
