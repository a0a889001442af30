//! CTC greedy decoding to text with a model folder's `vocab.json` and `tokenizer_config.json`, as
//! transformers' `Wav2Vec2CTCTokenizer.decode` does it in the speech-recognition pipeline
//! (`skip_special_tokens=False`): repeats collapsed, the pad token (the CTC blank) dropped, the word
//! delimiter (`|`) replaced by `replace_word_delimiter_char` (a space), the result stripped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hwcov_core::error::read_json;
use hwcov_core::{Error, Result};

pub struct CtcTokenizer {
    id_to_token: HashMap<usize, String>,
    pad_token: String,
    word_delimiter_token: String,
    replace_word_delimiter_char: String,
    do_lower_case: bool,
    clean_up_tokenization_spaces: bool,
    vocab_path: PathBuf,
}

impl CtcTokenizer {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let vocab_path = dir.join("vocab.json");
        if !vocab_path.is_file() {
            return Err(Error::io(
                &vocab_path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the model folder has no vocab.json (a CTC model needs its Wav2Vec2CTCTokenizer files)",
                ),
            ));
        }
        let vocab = read_json(&vocab_path)?;
        let vocab = vocab
            .as_object()
            .ok_or_else(|| Error::format(&vocab_path, "must hold a JSON object of token -> id"))?;
        let mut id_to_token = HashMap::new();
        for (token, id) in vocab {
            let id = id
                .as_u64()
                .ok_or_else(|| Error::config(&vocab_path, token.clone(), format!("id {id} is not an integer")))?;
            id_to_token.insert(id as usize, token.clone());
        }
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            read_json(&config_path)?
        } else {
            serde_json::Value::Null
        };
        let string = |key: &str, default: &str| -> Result<String> {
            match config.get(key) {
                None | Some(serde_json::Value::Null) => Ok(default.to_string()),
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                // Special tokens may be saved as {"content": ...}.
                Some(serde_json::Value::Object(o)) if o.get("content").is_some_and(|c| c.is_string()) => {
                    Ok(o["content"].as_str().unwrap_or_default().to_string())
                }
                Some(other) => Err(Error::config(
                    &config_path,
                    key,
                    format!("expected a string, got {other}"),
                )),
            }
        };
        let boolean = |key: &str| config.get(key).and_then(|v| v.as_bool()).unwrap_or(false);
        // Tokens added after the vocabulary (tokenizer_config.json's added_tokens_decoder).
        if let Some(added) = config.get("added_tokens_decoder").and_then(|v| v.as_object()) {
            for (id, t) in added {
                if let (Ok(id), Some(content)) = (id.parse::<usize>(), t.get("content").and_then(|c| c.as_str())) {
                    id_to_token.entry(id).or_insert_with(|| content.to_string());
                }
            }
        }
        Ok(CtcTokenizer {
            id_to_token,
            pad_token: string("pad_token", "<pad>")?,
            word_delimiter_token: string("word_delimiter_token", "|")?,
            replace_word_delimiter_char: string("replace_word_delimiter_char", " ")?,
            do_lower_case: boolean("do_lower_case"),
            clean_up_tokenization_spaces: boolean("clean_up_tokenization_spaces"),
            vocab_path,
        })
    }

    /// Decodes the ids of one utterance (one argmax per frame).
    pub fn decode(&self, ids: &[usize]) -> Result<String> {
        let mut chars: Vec<&str> = Vec::new();
        let mut last: Option<usize> = None;
        for &id in ids {
            if last == Some(id) {
                continue;
            }
            last = Some(id);
            let token = self.id_to_token.get(&id).ok_or_else(|| {
                Error::format(
                    &self.vocab_path,
                    format!("has no token for id {id}, which the model predicted"),
                )
            })?;
            if *token == self.pad_token {
                continue;
            }
            chars.push(if *token == self.word_delimiter_token {
                &self.replace_word_delimiter_char
            } else {
                token
            });
        }
        let mut text = chars.concat().trim().to_string();
        if self.do_lower_case {
            text = text.to_lowercase();
        }
        if self.clean_up_tokenization_spaces {
            for (from, to) in [
                (" .", "."),
                (" ?", "?"),
                (" !", "!"),
                (" ,", ","),
                (" ' ", "'"),
                (" n't", "n't"),
                (" 'm", "'m"),
                (" 's", "'s"),
                (" 've", "'ve"),
                (" 're", "'re"),
            ] {
                text = text.replace(from, to);
            }
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/wav2vec2")
    }

    /// The argmax ids of the fixture's logits and what `Wav2Vec2CTCTokenizer.batch_decode` (transformers
    /// 5.17) makes of them.
    #[test]
    fn decodes_as_transformers() {
        let tok = CtcTokenizer::from_dir(&fixture()).unwrap();
        let rows: [(&[usize], &str); 2] = [
            (
                &[5, 2, 10, 4, 10, 9, 23, 2, 9, 30, 2, 5, 3, 9],
                "A</s>F FES</s>EZ</s>A<unk>E",
            ),
            (
                &[2, 17, 4, 2, 5, 2, 2, 9, 2, 5, 5, 2, 31, 9],
                "</s>M </s>A</s>E</s>A</s>'E",
            ),
        ];
        for (ids, want) in rows {
            assert_eq!(tok.decode(ids).unwrap(), want);
        }
        // The blank separates repeats; word delimiters become spaces, and the ends are stripped.
        assert_eq!(tok.decode(&[4, 16, 16, 0, 16, 19, 4, 4, 24, 4]).unwrap(), "LLO T");
    }

    #[test]
    fn unknown_id_names_the_vocab() {
        let tok = CtcTokenizer::from_dir(&fixture()).unwrap();
        let err = tok.decode(&[99]).unwrap_err().to_string();
        assert!(err.contains("vocab.json") && err.contains("99"), "{err}");
    }
}
