//! The feature extractors of transformers, chosen by `feature_extractor_type` in
//! preprocessor_config.json as `AutoFeatureExtractor` chooses them:
//!
//! - `WhisperFeatureExtractor`: log-mel spectrogram of 30 s (`chunk_length`) of audio, padded or cut.
//! - `Wav2Vec2FeatureExtractor`: the raw samples, zero-mean unit-variance normalised.
//! - `ClapFeatureExtractor`: dB mel spectrogram of `max_length_s` of audio, with its padding
//!   (`repeatpad`, `repeat`, `pad`) and truncation (`fusion`, `rand_trunc`) modes.
//!
//! Each works on one mono waveform at the extractor's `sampling_rate`, as a batch of one.
//! Two paths of transformers draw random numbers and so cannot be reproduced: CLAP's `rand_trunc`
//! on audio longer than `max_length_s` (a random crop) and `fusion` on such audio (three random
//! crops). [`RandomCrop`] says what to do there: refuse (the default), or take the first of the
//! crops that transformers could have drawn. Whisper's `dither` (random noise) is refused too.

use std::path::{Path, PathBuf};

use hwcov_core::error::read_json;
use hwcov_core::{Error, HostTensor, NamedTensors, Result, TensorData};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::spectrogram::{MelScale, mel_filter_bank, mel_spectrogram, power_spectrogram};

/// What to do where transformers crops at random.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RandomCrop {
    /// Fail, naming the file and the mode: the result could not match transformers.
    #[default]
    Refuse,
    /// Take the first crop transformers could have drawn (a crop from the start of the audio;
    /// for `fusion`, the first start of each third), and say so in the notes.
    First,
}

/// Model inputs made from one waveform, plus notes on any conversion that was applied.
#[derive(Debug, Clone, Default)]
pub struct Features {
    pub tensors: NamedTensors,
    pub notes: Vec<String>,
}

/// `WhisperFeatureExtractor`'s configuration, with its defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct WhisperConfig {
    #[serde(default = "d80")]
    pub feature_size: usize,
    #[serde(default = "d16000")]
    pub sampling_rate: u32,
    #[serde(default = "d160")]
    pub hop_length: usize,
    #[serde(default = "d30")]
    pub chunk_length: usize,
    #[serde(default = "d400")]
    pub n_fft: usize,
    #[serde(default)]
    pub padding_value: f64,
    #[serde(default)]
    pub dither: f64,
    #[serde(default)]
    pub return_attention_mask: bool,
}

/// `Wav2Vec2FeatureExtractor`'s configuration, with its defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct Wav2Vec2Config {
    #[serde(default = "d1")]
    pub feature_size: usize,
    #[serde(default = "d16000")]
    pub sampling_rate: u32,
    #[serde(default)]
    pub padding_value: f64,
    #[serde(default)]
    pub return_attention_mask: bool,
    #[serde(default = "yes")]
    pub do_normalize: bool,
}

/// `ClapFeatureExtractor`'s configuration, with its defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct ClapConfig {
    #[serde(default = "d64")]
    pub feature_size: usize,
    #[serde(default = "d48000")]
    pub sampling_rate: u32,
    #[serde(default = "d480")]
    pub hop_length: usize,
    #[serde(default = "d10f")]
    pub max_length_s: f64,
    #[serde(default = "d1024")]
    pub fft_window_size: usize,
    #[serde(default)]
    pub padding_value: f64,
    #[serde(default)]
    pub frequency_min: f64,
    #[serde(default = "d14000f")]
    pub frequency_max: f64,
    #[serde(default = "fusion")]
    pub truncation: String,
    #[serde(default = "repeatpad")]
    pub padding: String,
}

fn d1() -> usize {
    1
}
fn d30() -> usize {
    30
}
fn d64() -> usize {
    64
}
fn d80() -> usize {
    80
}
fn d160() -> usize {
    160
}
fn d400() -> usize {
    400
}
fn d480() -> usize {
    480
}
fn d1024() -> usize {
    1024
}
fn d16000() -> u32 {
    16000
}
fn d48000() -> u32 {
    48000
}
fn d10f() -> f64 {
    10.0
}
fn d14000f() -> f64 {
    14000.0
}
fn yes() -> bool {
    true
}
fn fusion() -> String {
    "fusion".into()
}
fn repeatpad() -> String {
    "repeatpad".into()
}

/// A feature extractor, as `AutoFeatureExtractor.from_pretrained(dir)` would build it.
#[derive(Debug, Clone)]
pub enum AudioFeatureExtractor {
    Whisper(WhisperConfig),
    Wav2Vec2(Wav2Vec2Config),
    Clap(ClapConfig),
}

fn parse<T: DeserializeOwned>(path: &Path, json: &serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(json).map_err(|e| {
        let field = e.path().to_string();
        Error::config(path, field, e.into_inner())
    })
}

impl AudioFeatureExtractor {
    /// Reads `preprocessor_config.json` of a model folder. The class comes from its
    /// `feature_extractor_type`, else from `model_type` of the folder's config.json.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        if !path.is_file() {
            return Err(Error::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the model folder has no preprocessor_config.json (audio models need one)",
                ),
            ));
        }
        let json = read_json(&path)?;
        let model_type = || -> Option<String> {
            let c = read_json(&dir.join("config.json")).ok()?;
            c.get("model_type")?.as_str().map(str::to_string)
        };
        let kind = match json.get("feature_extractor_type") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(Error::config(
                    &path,
                    "feature_extractor_type",
                    format!("expected a string, got {other}"),
                ));
            }
            None => match model_type().as_deref() {
                Some("whisper") => "WhisperFeatureExtractor".into(),
                Some("wav2vec2") => "Wav2Vec2FeatureExtractor".into(),
                Some("clap") => "ClapFeatureExtractor".into(),
                _ => {
                    return Err(Error::config(
                        &path,
                        "feature_extractor_type",
                        "missing, and no config.json model_type names an audio feature extractor",
                    ));
                }
            },
        };
        let fx = match kind.as_str() {
            "WhisperFeatureExtractor" => AudioFeatureExtractor::Whisper(parse(&path, &json)?),
            "Wav2Vec2FeatureExtractor" => AudioFeatureExtractor::Wav2Vec2(parse(&path, &json)?),
            "ClapFeatureExtractor" => AudioFeatureExtractor::Clap(parse(&path, &json)?),
            other => {
                return Err(Error::config(
                    &path,
                    "feature_extractor_type",
                    format!(
                        "`{other}` is not an audio feature extractor hwcov has (WhisperFeatureExtractor, \
                         Wav2Vec2FeatureExtractor, ClapFeatureExtractor)"
                    ),
                ));
            }
        };
        fx.check(&path)?;
        Ok(fx)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let positive = |ok: bool, field: &str| {
            if ok {
                Ok(())
            } else {
                Err(Error::config(path, field, "must be positive"))
            }
        };
        positive(self.sampling_rate() > 0, "sampling_rate")?;
        match self {
            AudioFeatureExtractor::Whisper(c) => {
                positive(c.feature_size > 0, "feature_size")?;
                positive(c.hop_length > 0, "hop_length")?;
                positive(c.chunk_length > 0, "chunk_length")?;
                positive(c.n_fft >= 2, "n_fft")?;
                if c.dither != 0.0 {
                    return Err(Error::config(
                        path,
                        "dither",
                        "adds random noise in transformers, which hwcov cannot reproduce; set it to 0.0",
                    ));
                }
            }
            AudioFeatureExtractor::Wav2Vec2(c) => {
                if c.feature_size != 1 {
                    return Err(Error::config(path, "feature_size", "must be 1 (raw mono samples)"));
                }
            }
            AudioFeatureExtractor::Clap(c) => {
                positive(c.feature_size > 0, "feature_size")?;
                positive(c.hop_length > 0, "hop_length")?;
                positive(c.fft_window_size >= 2, "fft_window_size")?;
                positive(c.max_length_s > 0.0, "max_length_s")?;
                if !matches!(c.truncation.as_str(), "fusion" | "rand_trunc") {
                    return Err(Error::config(
                        path,
                        "truncation",
                        format!("`{}` is neither \"fusion\" nor \"rand_trunc\"", c.truncation),
                    ));
                }
                if !matches!(c.padding.as_str(), "repeatpad" | "repeat" | "pad") {
                    return Err(Error::config(
                        path,
                        "padding",
                        format!("`{}` is none of \"repeatpad\", \"repeat\", \"pad\"", c.padding),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn name(&self) -> &'static str {
        match self {
            AudioFeatureExtractor::Whisper(_) => "WhisperFeatureExtractor",
            AudioFeatureExtractor::Wav2Vec2(_) => "Wav2Vec2FeatureExtractor",
            AudioFeatureExtractor::Clap(_) => "ClapFeatureExtractor",
        }
    }

    /// The rate the audio must have.
    pub fn sampling_rate(&self) -> u32 {
        match self {
            AudioFeatureExtractor::Whisper(c) => c.sampling_rate,
            AudioFeatureExtractor::Wav2Vec2(c) => c.sampling_rate,
            AudioFeatureExtractor::Clap(c) => c.sampling_rate,
        }
    }

    /// Features of one mono waveform at `sampling_rate()`; `origin` names the audio in errors.
    pub fn extract(&self, waveform: &[f64], origin: &Path, crop: RandomCrop) -> Result<Features> {
        if waveform.is_empty() {
            return Err(Error::format(origin, "holds no audio samples"));
        }
        if waveform.iter().any(|x| !x.is_finite()) {
            return Err(Error::format(origin, "holds samples that are NaN or infinite"));
        }
        match self {
            AudioFeatureExtractor::Whisper(c) => Ok(whisper(c, waveform)),
            AudioFeatureExtractor::Wav2Vec2(c) => Ok(wav2vec2(c, waveform)),
            AudioFeatureExtractor::Clap(c) => clap(c, waveform, origin, crop),
        }
    }
}

fn f32_tensor(shape: Vec<usize>, values: impl IntoIterator<Item = f64>) -> HostTensor {
    let v: Vec<f32> = values.into_iter().map(|x| x as f32).collect();
    HostTensor::new(shape, TensorData::F32(v)).expect("shape and values are built together")
}

/// `WhisperFeatureExtractor.__call__` on one waveform (the torch path transformers takes when torch is
/// installed: float32 samples, `torch.stft`).
fn whisper(c: &WhisperConfig, waveform: &[f64]) -> Features {
    let n_samples = c.chunk_length * c.sampling_rate as usize;
    // Cast to float32 as transformers does, then pad (with padding_value) or cut to n_samples.
    let mut x: Vec<f64> = waveform.iter().take(n_samples).map(|&v| v as f32 as f64).collect();
    x.resize(n_samples, c.padding_value as f32 as f64);
    let filters = mel_filter_bank(
        1 + c.n_fft / 2,
        c.feature_size,
        0.0,
        8000.0,
        c.sampling_rate,
        true,
        MelScale::Slaney,
    );
    let (frames, power) = power_spectrogram(&x, c.n_fft, c.hop_length);
    // The last frame is dropped (stft[..., :-1]).
    let frames = frames - 1;
    let mel = mel_spectrogram(
        &power[..frames * (1 + c.n_fft / 2)],
        frames,
        &filters,
        c.feature_size,
        1e-10,
    );
    let log: Vec<f64> = mel.iter().map(|v| v.log10()).collect();
    let max = log.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    // (frames, n_mels) -> (1, n_mels, frames)
    let mut out = vec![0.0; frames * c.feature_size];
    for t in 0..frames {
        for m in 0..c.feature_size {
            out[m * frames + t] = (log[t * c.feature_size + m].max(max - 8.0) + 4.0) / 4.0;
        }
    }
    let mut f = Features::default();
    f.tensors.insert(
        "input_features".into(),
        f32_tensor(vec![1, c.feature_size, frames], out),
    );
    if c.return_attention_mask {
        // pad() returns the sample-level mask, which __call__ leaves as it is unless the caller asks
        // for return_attention_mask itself.
        let n = waveform.len().min(n_samples);
        let mask: Vec<i32> = (0..n_samples).map(|i| (i < n) as i32).collect();
        f.tensors.insert(
            "attention_mask".into(),
            HostTensor::new(vec![1, n_samples], TensorData::I32(mask)).expect("sizes match"),
        );
    }
    if waveform.len() > n_samples {
        f.notes.push(format!(
            "cut to the first {} s (chunk_length), as WhisperFeatureExtractor does",
            c.chunk_length
        ));
    }
    f
}

/// `Wav2Vec2FeatureExtractor.__call__` on one waveform, no padding.
fn wav2vec2(c: &Wav2Vec2Config, waveform: &[f64]) -> Features {
    let x: Vec<f64> = waveform.iter().map(|&v| v as f32 as f64).collect();
    let values = if c.do_normalize {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let std = (var + 1e-7).sqrt();
        x.iter().map(|v| (v - mean) / std).collect()
    } else {
        x
    };
    let n = values.len();
    let mut f = Features::default();
    f.tensors.insert("input_values".into(), f32_tensor(vec![1, n], values));
    if c.return_attention_mask {
        f.tensors.insert(
            "attention_mask".into(),
            HostTensor::new(vec![1, n], TensorData::I32(vec![1; n])).expect("sizes match"),
        );
    }
    f
}

/// `ClapFeatureExtractor._np_extract_fbank_features`: dB mel spectrogram, (frames, n_mels).
fn clap_fbank(c: &ClapConfig, waveform: &[f64], htk: bool) -> (usize, Vec<f64>) {
    let filters = if htk {
        mel_filter_bank(
            (c.fft_window_size >> 1) + 1,
            c.feature_size,
            c.frequency_min,
            c.frequency_max,
            c.sampling_rate,
            false,
            MelScale::Htk,
        )
    } else {
        mel_filter_bank(
            (c.fft_window_size >> 1) + 1,
            c.feature_size,
            c.frequency_min,
            c.frequency_max,
            c.sampling_rate,
            true,
            MelScale::Slaney,
        )
    };
    let (frames, power) = power_spectrogram(waveform, c.fft_window_size, c.hop_length);
    let mel = mel_spectrogram(&power, frames, &filters, c.feature_size, 1e-10);
    // power_to_db with reference 1.0 and min_value 1e-10 (top_db is not passed on by transformers).
    (frames, mel.iter().map(|v| 10.0 * v.max(1e-10).log10()).collect())
}

/// PyTorch's bilinear interpolation with align_corners=False along one axis: (out, in) weights.
fn bilinear_weights(n_in: usize, n_out: usize) -> Vec<(usize, usize, f64)> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n_in - 1);
            let i1 = (i0 + 1).min(n_in - 1);
            (i0, i1, src - i0 as f64)
        })
        .collect()
}

/// `_random_mel_fusion` with the first start of each third instead of a random one.
fn mel_fusion_first(mel: &[f64], total_frames: usize, chunk_frames: usize, n_mels: usize) -> Vec<f64> {
    // np.array_split(range(0, total - chunk + 1), 3): the first element of each part (0 when empty).
    let n = total_frames - chunk_frames + 1;
    let (q, r) = (n / 3, n % 3);
    let sizes = [q + (r > 0) as usize, q + (r > 1) as usize, q];
    let starts = [0, sizes[0], sizes[0] + sizes[1]];
    let idx: Vec<usize> = (0..3).map(|i| if sizes[i] > 0 { starts[i] } else { 0 }).collect();
    // The whole mel shrunk to (chunk_frames, 64) by bilinear interpolation (in float32, as torch runs it).
    let tw = bilinear_weights(total_frames, chunk_frames);
    let fw = bilinear_weights(n_mels, 64);
    let at = |t: usize, m: usize| mel[t * n_mels + m] as f32;
    let mut out = Vec::with_capacity(4 * chunk_frames * n_mels);
    for &(t0, t1, lt) in &tw {
        for &(m0, m1, lm) in &fw {
            let (lt, lm) = (lt as f32, lm as f32);
            let v = (1.0 - lt) * ((1.0 - lm) * at(t0, m0) + lm * at(t0, m1))
                + lt * ((1.0 - lm) * at(t1, m0) + lm * at(t1, m1));
            out.push(v as f64);
        }
    }
    for &start in &idx {
        out.extend_from_slice(&mel[start * n_mels..(start + chunk_frames) * n_mels]);
    }
    out
}

/// `ClapFeatureExtractor.__call__` on one waveform (float64 in transformers).
fn clap(c: &ClapConfig, waveform: &[f64], origin: &Path, crop: RandomCrop) -> Result<Features> {
    let max_length = (c.max_length_s * c.sampling_rate as f64) as usize;
    let fusion = c.truncation == "fusion";
    let mut notes = Vec::new();
    let refuse = |what: &str| -> Error {
        Error::format(
            origin,
            format!(
                "is {:.2} s long, more than max_length_s = {} s, and ClapFeatureExtractor's truncation \
                 `{}` then {what}, at random: the features could not match transformers. Cut the audio \
                 to {} s or less",
                waveform.len() as f64 / c.sampling_rate as f64,
                c.max_length_s,
                c.truncation,
                c.max_length_s
            ),
        )
    };
    let (channels, frames, mel, longer) = if waveform.len() > max_length {
        if fusion {
            let (total_frames, mel) = clap_fbank(c, waveform, true);
            let chunk_frames = max_length / c.hop_length + 1;
            if chunk_frames == total_frames {
                // Longer than max_length by less than a hop: the whole mel, four times.
                (4, total_frames, mel.repeat(4), false)
            } else {
                if crop == RandomCrop::Refuse {
                    return Err(refuse("stacks three crops of the mel spectrogram taken"));
                }
                if c.feature_size != 64 {
                    return Err(Error::format(
                        origin,
                        format!(
                            "is longer than max_length_s, and `fusion` shrinks the mel to 64 bins, which fails \
                             in transformers for feature_size {}",
                            c.feature_size
                        ),
                    ));
                }
                notes.push(format!(
                    "longer than {} s: `fusion` crops taken at the first start of each third of the audio \
                     (transformers draws them at random)",
                    c.max_length_s
                ));
                (
                    4,
                    chunk_frames,
                    mel_fusion_first(&mel, total_frames, chunk_frames, c.feature_size),
                    true,
                )
            }
        } else {
            if crop == RandomCrop::Refuse {
                return Err(refuse("takes a crop of max_length_s"));
            }
            notes.push(format!(
                "longer than {} s: the first {} s taken (`rand_trunc` crops at random in transformers)",
                c.max_length_s, c.max_length_s
            ));
            let (frames, mel) = clap_fbank(c, &waveform[..max_length], false);
            (1, frames, mel, true)
        }
    } else {
        let mut x = waveform.to_vec();
        if x.len() < max_length {
            let n_repeat = max_length / x.len();
            match c.padding.as_str() {
                "repeat" => x = x.repeat(n_repeat + 1)[..max_length].to_vec(),
                "repeatpad" => x = x.repeat(n_repeat),
                _ => {}
            }
            // np.pad with constant 0, whatever padding_value says.
            x.resize(max_length, 0.0);
        }
        let (frames, mel) = clap_fbank(c, &x, fusion);
        if fusion {
            (4, frames, mel.repeat(4), false)
        } else {
            (1, frames, mel, false)
        }
    };
    // With `fusion`, a batch in which no audio is longer gets one row marked longer at random; in a
    // batch of one that is always this row.
    let is_longer = longer || fusion;
    let mut f = Features {
        tensors: NamedTensors::new(),
        notes,
    };
    f.tensors.insert(
        "input_features".into(),
        f32_tensor(vec![1, channels, frames, c.feature_size], mel),
    );
    f.tensors.insert(
        "is_longer".into(),
        HostTensor::new(vec![1, 1], TensorData::Bool(vec![is_longer])).expect("sizes match"),
    );
    Ok(f)
}

/// The decoded, mono, resampled audio of a file, as the extractor needs it.
#[derive(Debug, Clone)]
pub struct PreparedAudio {
    pub path: PathBuf,
    pub samples: Vec<f64>,
    pub sample_rate: u32,
    pub source_rate: u32,
    pub source_channels: usize,
}

impl PreparedAudio {
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }

    /// What was converted, in words (empty when nothing was).
    pub fn conversions(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.source_channels > 1 {
            v.push(format!("{} channels averaged to mono", self.source_channels));
        }
        if self.source_rate != self.sample_rate {
            v.push(format!(
                "resampled from {} Hz to {} Hz",
                self.source_rate, self.sample_rate
            ));
        }
        v
    }
}

/// Decodes an audio file, averages its channels and resamples it to `rate`.
pub fn prepare_audio(path: &Path, rate: u32) -> Result<PreparedAudio> {
    let decoded = super::decode::decode_file(path)?;
    if decoded.frames() == 0 {
        return Err(Error::format(path, "holds no audio samples"));
    }
    let mono = decoded.to_mono();
    let samples = super::resample::resample(&mono, decoded.sample_rate, rate);
    Ok(PreparedAudio {
        path: path.to_path_buf(),
        samples,
        sample_rate: rate,
        source_rate: decoded.sample_rate,
        source_channels: decoded.channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_starts_follow_array_split() {
        // np.array_split(range(10), 3) -> [0..4), [4..7), [7..10): starts 0, 4, 7.
        let mel: Vec<f64> = (0..(12 * 64)).map(|i| i as f64).collect();
        let out = mel_fusion_first(&mel, 12, 3, 64);
        let crop_start = |k: usize| out[(1 + k) * 3 * 64] as usize / 64;
        assert_eq!([crop_start(0), crop_start(1), crop_start(2)], [0, 4, 7]);
    }
}
