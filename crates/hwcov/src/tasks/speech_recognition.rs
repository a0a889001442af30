//! Automatic speech recognition with a CTC model (Wav2Vec2ForCTC; Whisper is in
//! `speech_recognition_whisper`): an audio file to text, as
//! transformers' `automatic-speech-recognition` pipeline does it (feature extractor, logits, greedy
//! CTC decoding with the folder's vocab.json).

use std::path::Path;

use hwcov_core::{Error, LoadOptions, ModelFiles, PlatformId, Result};
use hwcov_preprocess::audio::{RandomCrop, file_features};
use hwcov_preprocess::ctc::CtcTokenizer;

use crate::platforms;
use crate::tasks::{RunOutput, RunRequest};

/// The transcription of one audio file, with the conversions applied to the audio.
#[derive(Debug, Clone)]
pub struct Transcription {
    pub text: String,
    pub notes: Vec<String>,
}

pub fn run(files: &ModelFiles, request: &RunRequest, platform: PlatformId, opts: &LoadOptions) -> Result<RunOutput> {
    let audio = audio_request(files, request)?;
    let t = transcribe(&files.dir, audio, platform, opts)?;
    let json = serde_json::json!({
        "task": "automatic-speech-recognition",
        "text": t.text,
        "notes": t.notes,
    });
    Ok(output(&t.text, &t.notes, json))
}

/// The audio file of a speech recognition request, which takes nothing else.
pub(crate) fn audio_request<'a>(files: &ModelFiles, request: &'a RunRequest) -> Result<&'a Path> {
    if !request.texts.is_empty() || request.image.is_some() || request.video.is_some() {
        return Err(Error::Usage(format!(
            "{} speech recognition takes --audio only",
            files.class.name()
        )));
    }
    request
        .audio
        .as_deref()
        .ok_or_else(|| Error::Usage("give the audio file to transcribe with --audio".to_string()))
}

/// The transcription as the user reads it: the text, then the notes.
pub(crate) fn output(transcription: &str, notes: &[String], json: serde_json::Value) -> RunOutput {
    let mut text = format!("{transcription}\n");
    for n in notes {
        text.push_str(&format!("note: {n}\n"));
    }
    RunOutput { text, json }
}

/// Transcribes an audio file with a Wav2Vec2ForCTC folder.
pub fn transcribe(model_dir: &Path, audio: &Path, platform: PlatformId, opts: &LoadOptions) -> Result<Transcription> {
    let files = ModelFiles::open(model_dir)?;
    let tokenizer = CtcTokenizer::from_dir(model_dir)?;
    let (features, prepared) = file_features(model_dir, audio, RandomCrop::Refuse)?;
    let mut handler = platforms::get(platform)?.load(&files, opts)?;
    let outputs = handler.forward(&features.tensors).map_err(|e| match e {
        // Say which file was too short, not only which tensor.
        Error::Tensor { name, message, .. } if name == "input_values" => Error::format(
            audio,
            format!(
                "{:.3} s of audio ({} samples at {} Hz): {message}",
                prepared.seconds(),
                prepared.samples.len(),
                prepared.sample_rate
            ),
        ),
        other => other,
    })?;
    let logits = outputs.get("logits").ok_or_else(|| {
        Error::tensor(
            "logits",
            "the model does not produce it: speech recognition needs a CTC head (Wav2Vec2ForCTC)",
        )
    })?;
    let (frames, vocab) = match logits.shape() {
        [1, f, v] => (*f, *v),
        other => {
            return Err(Error::tensor(
                "logits",
                format!("has shape {other:?}; (1, frames, vocab) expected"),
            ));
        }
    };
    let v = logits.to_f64_vec();
    let ids: Vec<usize> = (0..frames)
        .map(|t| {
            let row = &v[t * vocab..(t + 1) * vocab];
            // torch.argmax: the first of equal maxima.
            let mut best = 0;
            for (i, x) in row.iter().enumerate() {
                if *x > row[best] {
                    best = i;
                }
            }
            best
        })
        .collect();
    Ok(Transcription {
        text: tokenizer.decode(&ids)?,
        notes: features.notes,
    })
}
