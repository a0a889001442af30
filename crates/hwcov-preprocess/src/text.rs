//! Text to `input_ids`, `attention_mask` and `token_type_ids`, with the model folder's tokenizer.json
//! and the padding side and pad token of its tokenizer_config.json, as transformers' tokenizers do.

use std::path::Path;

use hwcov_core::error::read_json;
use hwcov_core::{Error, HostTensor, NamedTensors, Result};
use tokenizers::{EncodeInput, PaddingDirection, PaddingParams, PaddingStrategy};

/// A text input: one sequence, or a pair (question and context, two sentences).
#[derive(Debug, Clone)]
pub enum TextInput<'a> {
    Single(&'a str),
    Pair(&'a str, &'a str),
}

pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    /// Whether the model takes `token_type_ids` (tokenizer_config.json's `model_input_names`).
    token_type_ids: bool,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` (and `tokenizer_config.json`, when present) from a model folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "the model folder has no tokenizer.json"),
            ));
        }
        let mut inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| Error::format(&path, e))?;
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            Some(read_json(&config_path)?)
        } else {
            None
        };
        let field = |name: &str| config.as_ref().and_then(|c| c.get(name)).cloned();

        let token_type_ids = match field("model_input_names") {
            Some(serde_json::Value::Array(names)) => names.iter().any(|n| n == "token_type_ids"),
            _ => false,
        };
        let direction = match field("padding_side").as_ref().and_then(|v| v.as_str()) {
            Some("left") => PaddingDirection::Left,
            Some("right") | None => PaddingDirection::Right,
            Some(other) => {
                return Err(Error::config(
                    &config_path,
                    "padding_side",
                    format!("`{other}` is neither left nor right"),
                ));
            }
        };
        if let Some(pad) = field("pad_token").as_ref().and_then(|v| v.as_str()) {
            let pad_id = inner.token_to_id(pad).ok_or_else(|| {
                Error::config(
                    &config_path,
                    "pad_token",
                    format!("`{pad}` is not in the vocabulary of tokenizer.json"),
                )
            })?;
            inner.with_padding(Some(PaddingParams {
                strategy: PaddingStrategy::BatchLongest,
                direction,
                pad_id,
                pad_type_id: 0,
                pad_token: pad.to_string(),
                pad_to_multiple_of: None,
            }));
        }
        Ok(TextTokenizer { inner, token_type_ids })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes a batch with the special tokens, padded to its longest sequence: (batch, seq) tensors
    /// named as the model's forward arguments.
    pub fn encode(&self, batch: &[TextInput]) -> Result<NamedTensors> {
        if batch.is_empty() {
            return Err(Error::Usage("no text to encode".to_string()));
        }
        if batch.len() > 1 && self.inner.get_padding().is_none() {
            return Err(Error::Usage(
                "several texts need padding, but tokenizer_config.json names no pad_token".to_string(),
            ));
        }
        let inputs: Vec<EncodeInput> = batch
            .iter()
            .map(|t| match *t {
                TextInput::Single(a) => EncodeInput::from(a),
                TextInput::Pair(a, b) => EncodeInput::from((a, b)),
            })
            .collect();
        let encodings = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| Error::runtime("tokenizer", e.to_string()))?;
        let rows = encodings.len();
        let len = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        if len == 0 {
            return Err(Error::Usage("the text encodes to no tokens".to_string()));
        }
        let gather = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<i64> {
            encodings.iter().flat_map(|e| f(e).iter().map(|&x| x as i64)).collect()
        };
        let mut out = NamedTensors::new();
        out.insert(
            "input_ids".into(),
            HostTensor::i64(vec![rows, len], gather(&|e| e.get_ids()))?,
        );
        out.insert(
            "attention_mask".into(),
            HostTensor::i64(vec![rows, len], gather(&|e| e.get_attention_mask()))?,
        );
        if self.token_type_ids {
            out.insert(
                "token_type_ids".into(),
                HostTensor::i64(vec![rows, len], gather(&|e| e.get_type_ids()))?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwcov_core::IoFile;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name)
    }

    /// The BERT fixture's inputs are what transformers' tokenizer made of the texts in its meta.json:
    /// a pair, and a single sentence padded to its length.
    #[test]
    fn bert_tokens_match_transformers() {
        let tok = TextTokenizer::from_dir(&fixture("bert")).unwrap();
        let meta = read_json(&fixture("bert").join("meta.json")).unwrap();
        let texts: Vec<Vec<String>> = serde_json::from_value(meta["texts"].clone()).unwrap();
        let batch: Vec<TextInput> = texts
            .iter()
            .map(|t| match t.as_slice() {
                [a] => TextInput::Single(a),
                [a, b] => TextInput::Pair(a, b),
                _ => panic!("meta.json texts hold one or two strings each"),
            })
            .collect();
        let got = tok.encode(&batch).unwrap();
        let io = IoFile::read(&fixture("bert").join("io.safetensors")).unwrap();
        for name in ["input_ids", "attention_mask", "token_type_ids"] {
            assert_eq!(got[name], io.inputs[name], "{name}");
        }
    }

    #[test]
    fn missing_tokenizer_names_the_file() {
        let err = TextTokenizer::from_dir(&fixture("vit")).err().unwrap().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
    }
}
