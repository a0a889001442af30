//! Automatic speech recognition with Whisper (WhisperForConditionalGeneration): an audio file to
//! text. The audio is decoded, down-mixed and resampled as for every audio model, then cut into
//! consecutive windows of the feature extractor's `chunk_length` (30 s for the released
//! checkpoints). Each window goes through WhisperFeatureExtractor and the generation of
//! `generate::whisper` (the prompt from the generation config and `--language` / `--task`, the
//! suppress tokens, greedy decoding, timestamps off); the tokens of all windows are decoded together
//! with the folder's tokenizer, special tokens skipped.
//!
//! Audio up to one window is transcribed as transformers' `model.generate(input_features)` and
//! pipeline do it. Longer audio is transcribed window after window, which is not transformers'
//! long-form algorithm: that one predicts timestamps and moves the next window to the last
//! complete segment (with temperature fallback and the previous text as prompt), while here the
//! windows are fixed and a word cut at a window's edge is cut in the text too. The language is
//! detected (where it must be) on the first window and kept for the others, as transformers does.

use std::path::Path;

use hwcov_core::{Error, LoadOptions, ModelFiles, PlatformId, Result};
use hwcov_preprocess::audio::{AudioFeatureExtractor, RandomCrop, prepare_audio};
use hwcov_preprocess::text::TextTokenizer;

use crate::generate::GenerationConfig;
use crate::generate::StopReason;
use crate::generate::whisper::{self, WhisperGenerationConfig, WhisperOptions};
use crate::platforms;
use crate::tasks::speech_recognition::{audio_request, output};
use crate::tasks::{RunOutput, RunRequest};

/// One window of the audio and what was heard in it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Window {
    pub start_s: f64,
    pub end_s: f64,
    pub text: String,
    /// The new tokens, without the prompt and the final `<|endoftext|>`.
    pub token_ids: Vec<u32>,
    pub stopped: StopReason,
}

/// A transcription with the prompt it was made with.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WhisperTranscription {
    pub text: String,
    /// The language token of the prompt (`<|en|>`), where the model is multilingual.
    pub language: Option<String>,
    /// Whether the model detected the language (none was given, and the config names none).
    pub language_detected: bool,
    /// transcribe or translate, where the prompt has a task token.
    pub task: Option<String>,
    pub prompt: Vec<u32>,
    pub windows: Vec<Window>,
    pub notes: Vec<String>,
}

pub fn run(files: &ModelFiles, request: &RunRequest, platform: PlatformId, opts: &LoadOptions) -> Result<RunOutput> {
    let audio = audio_request(files, request)?;
    let g = &request.generation;
    if g.do_sample || g.temperature.is_some() || g.top_k.is_some() || g.top_p.is_some() {
        return Err(Error::Usage(
            "Whisper transcribes greedily (as transformers' generate() without a temperature); \
             --do-sample, --temperature, --top-k and --top-p are for text generation"
                .to_string(),
        ));
    }
    let options = WhisperOptions {
        language: request.language.clone(),
        task: request.task.clone(),
    };
    let t = transcribe(files, audio, &options, request.max_new_tokens, platform, opts)?;
    let mut json = serde_json::to_value(&t).map_err(|e| Error::Usage(e.to_string()))?;
    json["task"] = "automatic-speech-recognition".into();
    json["transcription_task"] = t.task.clone().into();
    Ok(output(&t.text, &t.notes, json))
}

/// Transcribes (or translates) an audio file with a Whisper folder.
pub fn transcribe(
    files: &ModelFiles,
    audio: &Path,
    options: &WhisperOptions,
    max_new_tokens: Option<usize>,
    platform: PlatformId,
    opts: &LoadOptions,
) -> Result<WhisperTranscription> {
    let fx = AudioFeatureExtractor::from_dir(&files.dir)?;
    let fx_path = files.dir.join("preprocessor_config.json");
    let AudioFeatureExtractor::Whisper(fx_cfg) = &fx else {
        return Err(Error::config(
            &fx_path,
            "feature_extractor_type",
            format!("is {}; Whisper takes WhisperFeatureExtractor features", fx.name()),
        ));
    };
    let tokenizer = TextTokenizer::from_dir(&files.dir)?;
    let mut config = GenerationConfig::from_model(files)?;
    let wcfg = WhisperGenerationConfig::from_model(files, &mut config)?;
    // The extractor's window must give the encoder its 2 * max_source_positions frames.
    let frames = fx_cfg.chunk_length * fx_cfg.sampling_rate as usize / fx_cfg.hop_length;
    if let Some(sources) = files.config.get("max_source_positions").and_then(|v| v.as_u64())
        && frames as u64 != 2 * sources
    {
        return Err(Error::config(
            &fx_path,
            "chunk_length",
            format!(
                "{} s give {frames} mel frames, but the encoder takes 2 * max_source_positions = {} ({})",
                fx_cfg.chunk_length,
                2 * sources,
                files.config_path.display()
            ),
        ));
    }

    let prepared = prepare_audio(audio, fx.sampling_rate())?;
    let window = fx_cfg.chunk_length * fx_cfg.sampling_rate as usize;
    let mut handler = platforms::get(platform)?.load(files, opts)?;
    let decoder = handler.decoder().ok_or_else(|| Error::NotImplemented {
        platform: platform.to_string(),
        reason: "the Whisper handler cannot decode token by token".to_string(),
    })?;

    let mut notes = prepared.conversions();
    let mut prompt: Option<Vec<u32>> = None;
    let mut detected = false;
    let mut windows = Vec::new();
    let mut ignored = Vec::new();
    for (k, samples) in prepared.samples.chunks(window).enumerate() {
        let features = fx.extract(samples, audio, RandomCrop::Refuse)?;
        notes.extend(features.notes);
        let inputs = features.tensors;
        // The prompt (and the language detected) of the first window serves all of them.
        let p = match &prompt {
            Some(p) => p.clone(),
            None => {
                let p = wcfg
                    .init_tokens(options, 1, || {
                        detected = true;
                        whisper::detect_language(decoder, &inputs, &wcfg, 1)
                    })?
                    .remove(0);
                prompt = Some(p.clone());
                p
            }
        };
        let g = whisper::generate(decoder, &inputs, &config, &wcfg, &[p], max_new_tokens, false)?;
        ignored = g.ignored.clone();
        let token_ids = g.tokens[0].clone();
        if g.stop[0] != StopReason::Eos {
            notes.push(format!(
                "window {} stopped after {} new tokens ({}): raise --max-new-tokens for more",
                k + 1,
                g.max_new_tokens,
                if g.stop[0] == StopReason::MaxPositions {
                    "the decoder's max_target_positions"
                } else {
                    "the most new tokens"
                }
            ));
        }
        let start_s = (k * window) as f64 / fx_cfg.sampling_rate as f64;
        windows.push(Window {
            start_s,
            end_s: start_s + samples.len() as f64 / fx_cfg.sampling_rate as f64,
            text: decode(&tokenizer, &token_ids)?,
            token_ids,
            stopped: g.stop[0],
        });
    }
    let prompt = prompt.unwrap_or_default();
    if windows.len() > 1 {
        notes.push(format!(
            "{:.2} s of audio transcribed in {} windows of {} s, one after the other (not transformers' \
             timestamp-based long-form algorithm)",
            prepared.seconds(),
            windows.len(),
            fx_cfg.chunk_length
        ));
    }
    for (field, value) in &ignored {
        notes.push(format!(
            "{} sets {field} = {value}, which hwcov does not apply",
            config.path.display()
        ));
    }
    let all: Vec<u32> = windows.iter().flat_map(|w| w.token_ids.iter().copied()).collect();
    let name_of = |map: &Option<std::collections::BTreeMap<String, u32>>| {
        map.as_ref().and_then(|m| {
            m.iter()
                .find(|(_, id)| prompt.contains(id))
                .map(|(name, _)| name.clone())
        })
    };
    Ok(WhisperTranscription {
        text: decode(&tokenizer, &all)?,
        language: name_of(&wcfg.lang_to_id),
        language_detected: detected,
        task: name_of(&wcfg.task_to_id),
        prompt,
        windows,
        notes,
    })
}

/// Token ids to text as WhisperTokenizer.decode(skip_special_tokens=True) does it: special tokens
/// skipped, then timestamp tokens (`<|1.08|>`, added tokens that are not special) removed from the
/// text.
fn decode(tokenizer: &TextTokenizer, ids: &[u32]) -> Result<String> {
    Ok(filter_timestamps(&tokenizer.decode(ids, true)?))
}

/// Removes every `<|digits.digits|>` from a text (`_filter_timestamp_ids`).
fn filter_timestamps(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("<|") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let int = after.bytes().take_while(u8::is_ascii_digit).count();
        let frac = after[int..]
            .strip_prefix('.')
            .map(|f| f.bytes().take_while(u8::is_ascii_digit).count());
        match frac {
            Some(f) if int > 0 && f > 0 && after[int + 1 + f..].starts_with("|>") => {
                rest = &after[int + 1 + f + 2..];
            }
            _ => {
                out.push_str("<|");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::filter_timestamps;

    #[test]
    fn timestamps_are_filtered_like_the_regex() {
        assert_eq!(filter_timestamps("<|0.00|> Hello<|1.08|> world<|2.5|>"), " Hello world");
        assert_eq!(
            filter_timestamps("a <|en|> <|.5|> <|3.|> <|12.34"),
            "a <|en|> <|.5|> <|3.|> <|12.34"
        );
    }
}
