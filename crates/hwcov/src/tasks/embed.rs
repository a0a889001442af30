//! Feature extraction: one embedding per text, with an encoder such as BERT.

use std::path::Path;

use hwcov_core::{Error, HostTensor, LoadOptions, ModelClass, ModelFiles, PlatformId, Result};
use hwcov_preprocess::text::{TextInput, TextTokenizer};

use crate::platforms;
use crate::tasks::sentence_transformers::{SentenceTransformer, Similarity};
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

/// `hwcov run` on an encoder: the embeddings of `request.texts` (and their similarities when
/// asked), as `SentenceTransformer.encode` gives them for a sentence-transformers folder.
pub fn run(files: &ModelFiles, request: &RunRequest, platform: PlatformId, opts: &LoadOptions) -> Result<RunOutput> {
    if request.image.is_some() || request.video.is_some() || request.audio.is_some() {
        return Err(Error::Usage(format!("{} models take text only", files.class.name())));
    }
    if request.texts.is_empty() {
        return Err(Error::Usage("give the text to embed with --text".to_string()));
    }
    let st = SentenceTransformer::from_dir(&files.dir)?;
    let (embeddings, similarity) = match &st {
        Some(st) => {
            if request.pooling.is_some() {
                return Err(Error::Usage(
                    "this is a sentence-transformers folder: its Pooling module (modules.json) decides the pooling; drop --pooling"
                        .to_string(),
                ));
            }
            let e = encode(st, &request.texts, request.prompt_name.as_deref(), platform, opts)?;
            let s = request.similarity.then(|| st.similarity(&e));
            (e, s)
        }
        None => {
            if request.prompt_name.is_some() {
                return Err(Error::Usage(
                    "--prompt-name needs a sentence-transformers folder (config_sentence_transformers.json)"
                        .to_string(),
                ));
            }
            let e = embed(
                &files.dir,
                &request.texts,
                request.pooling.unwrap_or_default(),
                platform,
                opts,
            )?;
            let s = request.similarity.then(|| Similarity::Cosine.matrix(&e));
            (e, s)
        }
    };
    let mut text = String::new();
    for (t, e) in request.texts.iter().zip(&embeddings) {
        let head: Vec<String> = e.iter().take(6).map(|x| format!("{x:.4}")).collect();
        text.push_str(&format!("{t:?}: {} values [{}, ...]\n", e.len(), head.join(", ")));
    }
    let mut json = serde_json::json!({ "task": "feature-extraction", "embeddings": embeddings });
    if let Some(sim) = &similarity {
        text.push_str("similarity:\n");
        for row in sim {
            let cells: Vec<String> = row.iter().map(|x| format!("{x:8.4}")).collect();
            text.push_str(&format!("{}\n", cells.join(" ")));
        }
        json["similarity"] = serde_json::json!(sim);
    }
    Ok(RunOutput { text, json })
}

/// `SentenceTransformer.encode(texts, prompt_name=...)` of a sentence-transformers folder: each text
/// with the prompt before it, lowercased where the folder says, cut to `max_seq_length` tokens,
/// through the Transformer on the platform, then the folder's Pooling, Dense and Normalize.
pub fn encode(
    st: &SentenceTransformer,
    texts: &[String],
    prompt_name: Option<&str>,
    platform: PlatformId,
    opts: &LoadOptions,
) -> Result<Vec<Vec<f32>>> {
    let (files, tokenizer) = encoder(&st.transformer, texts, platform)?;
    let prompt = st.prompt(prompt_name)?.unwrap_or_default();
    let case = |t: String| if st.do_lower_case { t.to_lowercase() } else { t };
    let prompted: Vec<String> = texts.iter().map(|t| case(format!("{prompt}{t}"))).collect();
    let batch: Vec<TextInput> = prompted.iter().map(|t| TextInput::Single(t)).collect();
    // Without max_seq_length, sentence-transformers takes the smaller of the model's positions and
    // the tokenizer's limit.
    let positions = files
        .config
        .get("max_position_embeddings")
        .and_then(|v| v.as_u64())
        .map(|v| v as usize);
    let max_len = st
        .max_seq_length
        .or_else(|| match (positions, tokenizer.model_max_length()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        });
    let inputs = match max_len {
        Some(n) => tokenizer.encode_truncated(&batch, n)?,
        None => tokenizer.encode(&batch)?,
    };
    // The prompt's tokens: its encoding with the special tokens, less a closing special token
    // ([SEP], EOS) where the tokenizer adds one.
    let prompt_length = if prompt.is_empty() {
        None
    } else {
        let prompt = case(prompt.to_string());
        let (with, plain) = (
            tokenizer.encode_ids(&prompt, true)?,
            tokenizer.encode_ids(&prompt, false)?,
        );
        let closing = with.len() > plain.len() && with.last() != plain.last();
        Some(with.len() - usize::from(closing))
    };
    let mut handler = platforms::get(platform)?.load(&files, opts)?;
    let outputs = handler.forward(&inputs)?;
    let out = outputs
        .get("last_hidden_state")
        .ok_or_else(|| Error::tensor("last_hidden_state", "the model does not produce it"))?;
    let shape: [usize; 3] = out.shape().try_into().map_err(|_| {
        Error::tensor(
            "last_hidden_state",
            format!("shape {:?}, expected (batch, seq, hidden)", out.shape()),
        )
    })?;
    let tokens: Vec<f32> = out.to_f64_vec().into_iter().map(|x| x as f32).collect();
    let mask = inputs["attention_mask"].to_i64_vec().unwrap_or_default();
    st.embed(&tokens, shape, &mask, prompt_length)
}

/// The encoder of `dir` and its tokenizer, for `texts` (none empty).
fn encoder(dir: &Path, texts: &[String], platform: PlatformId) -> Result<(ModelFiles, TextTokenizer)> {
    let files = ModelFiles::open(dir)?;
    if files.class != ModelClass::Bert {
        return Err(Error::NotImplemented {
            platform: platform.to_string(),
            reason: format!(
                "embeddings of {} models are not written yet (BERT's are)",
                files.class.name()
            ),
        });
    }
    if texts.iter().any(|t| t.trim().is_empty()) {
        return Err(Error::Usage("an empty --text has nothing to embed".to_string()));
    }
    let tokenizer = TextTokenizer::from_dir(dir)?;
    Ok((files, tokenizer))
}

/// One embedding per text (feature extraction with an encoder such as BERT).
pub fn embed(
    model_dir: &Path,
    texts: &[String],
    pooling: Pooling,
    platform: PlatformId,
    opts: &LoadOptions,
) -> Result<Vec<Vec<f32>>> {
    let (files, tokenizer) = encoder(model_dir, texts, platform)?;
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
