//! Audio files to samples, in pure Rust (symphonia): WAV (PCM 8/16/24/32-bit integer, 32/64-bit
//! float), FLAC and MP3. Integer samples are scaled to [-1, 1) as libsndfile (soundfile) and
//! librosa scale them: divided by 2^(bits-1).

use std::path::Path;

use hwcov_core::{Error, Result};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// The longest audio hwcov decodes, in seconds (10 minutes). The feature extractors take 30 s
/// (Whisper) or 10 s (CLAP) windows, or the whole clip (Wav2Vec2); ten minutes covers each with room
/// and bounds what one file can make hwcov hold (10 minutes of 48 kHz stereo: 440 MiB of f64).
pub const MAX_AUDIO_SECONDS: u64 = 600;

/// The most samples (all channels together) hwcov decodes of one file, whatever its sample rate or
/// channel count claims: 2^26 f64, 512 MiB.
pub const MAX_AUDIO_SAMPLES: usize = 1 << 26;

/// Refuses audio of `frames` frames at `rate` Hz longer than [`MAX_AUDIO_SECONDS`]; `what` says
/// whether the header declares it or the decoded samples reached it.
fn check_duration(path: &Path, what: &str, frames: u64, rate: u32) -> Result<()> {
    if rate > 0 && frames > MAX_AUDIO_SECONDS * u64::from(rate) {
        return Err(Error::format(
            path,
            format!(
                "{what} {frames} frames at {rate} Hz ({} s), longer than the {MAX_AUDIO_SECONDS} s hwcov decodes",
                frames / u64::from(rate)
            ),
        ));
    }
    Ok(())
}

/// symphonia 0.5 allocates a FLAC Vorbis comment, or a picture's media type, description or data,
/// at the length the file declares before reading it: up to 4 GiB each, from a file of a few bytes.
/// Every FLAC stream marker of the file is followed (symphonia's probe finds one anywhere near the
/// start) and its metadata blocks checked: a length declared inside a block must fit in that block.
fn check_flac_metadata(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut from = 0;
    while let Some(i) = bytes[from..].windows(4).position(|w| w == b"fLaC") {
        from += i + 4;
        check_flac_blocks(path, &bytes[from..])?;
    }
    Ok(())
}

fn check_flac_blocks(path: &Path, mut rest: &[u8]) -> Result<()> {
    let be = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]) as usize)
    };
    let le = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]) as usize)
    };
    for k in 0.. {
        let Some(&[flags, a, b, c]) = rest.get(..4) else {
            return Ok(());
        };
        let len = u32::from_be_bytes([0, a, b, c]) as usize;
        let block = &rest[4..];
        // A length at `at` (read by `read`) must fit in what the block's length leaves after it.
        let fits = |at: usize, read: &dyn Fn(&[u8], usize) -> Option<usize>, what: &str| -> Result<Option<usize>> {
            let Some(n) = read(block, at) else { return Ok(None) };
            let left = len.saturating_sub(at + 4);
            if n > left {
                return Err(Error::format(
                    path,
                    format!("FLAC metadata block {k}: {what} of {n} bytes where the block holds {left}"),
                ));
            }
            Ok(Some(at + 4 + n))
        };
        match flags & 0x7f {
            // Vorbis comment: vendor string (skipped), then counted comments.
            4 => {
                if let Some(at) = le(block, 0).map(|v| 4 + v)
                    && let Some(count) = le(block, at)
                {
                    let mut at = at + 4;
                    for _ in 0..count {
                        match fits(at, &le, "a Vorbis comment")? {
                            Some(next) => at = next,
                            None => break,
                        }
                    }
                }
            }
            // Picture: type, media type, description, four numbers, data.
            6 => {
                if let Some(at) = fits(4, &be, "a picture's media type")?
                    && let Some(at) = fits(at, &be, "a picture's description")?
                {
                    fits(at + 16, &be, "a picture's data")?;
                }
            }
            _ => {}
        }
        if flags & 0x80 != 0 || block.len() < len {
            return Ok(());
        }
        rest = &block[len..];
    }
    Ok(())
}

/// A decoded file: interleaved samples as f64.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub sample_rate: u32,
    pub channels: usize,
    /// Interleaved: frame 0 channel 0, frame 0 channel 1, ...
    pub interleaved: Vec<f64>,
}

impl Decoded {
    pub fn frames(&self) -> usize {
        self.interleaved.len() / self.channels.max(1)
    }

    /// The mean over the channels (librosa's `to_mono`).
    pub fn to_mono(&self) -> Vec<f64> {
        let c = self.channels.max(1);
        self.interleaved
            .chunks_exact(c)
            .map(|f| f.iter().sum::<f64>() / c as f64)
            .collect()
    }
}

fn format_error(path: &Path, what: &str, e: SymphoniaError) -> Error {
    match e {
        SymphoniaError::Unsupported(msg) => Error::format(
            path,
            format!("{what}: unsupported audio format or codec ({msg}); hwcov reads WAV (PCM or float), FLAC and MP3"),
        ),
        SymphoniaError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::format(path, format!("{what}: the file ends early (truncated?)"))
        }
        SymphoniaError::IoError(io) => Error::io(path, io),
        other => Error::format(path, format!("{what}: {other}")),
    }
}

/// Decodes the first audio track of a file.
pub fn decode_file(path: &Path) -> Result<Decoded> {
    let bytes = hwcov_core::error::read_file(path)?;
    check_flac_metadata(path, &bytes)?;
    let mss = MediaSourceStream::new(Box::new(std::io::Cursor::new(bytes)), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let format_opts = FormatOptions {
        // Trims the encoder delay and padding of MP3 (LAME/Xing header), as libsndfile and ffmpeg do.
        enable_gapless: true,
        ..Default::default()
    };
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &format_opts, &MetadataOptions::default())
        .map_err(|e| match e {
            SymphoniaError::Unsupported(_) => Error::format(
                path,
                "not a supported audio file (hwcov reads WAV, FLAC and MP3; the content matched none of them)",
            ),
            other => format_error(path, "cannot read the audio container", other),
        })?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| Error::format(path, "holds no audio track"))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let expected_frames = params.n_frames;
    // A header that declares too long a stream is refused before anything is decoded.
    if let (Some(n), Some(rate)) = (expected_frames, params.sample_rate) {
        check_duration(path, "the header declares", n, rate)?;
    }
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| format_error(path, "cannot decode the audio track", e))?;

    let mut sample_rate = params.sample_rate;
    let mut channels = params.channels.map(|c| c.count());
    let mut interleaved: Vec<f64> = Vec::new();
    let mut buf: Option<SampleBuffer<f64>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            // The normal end of the stream.
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format_error(path, "cannot read an audio packet", e)),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = decoder.decode(&packet).map_err(|e| {
            let at = sample_rate
                .map(|sr| {
                    format!(
                        " at {:.3} s",
                        interleaved.len() as f64 / channels.unwrap_or(1).max(1) as f64 / sr as f64
                    )
                })
                .unwrap_or_default();
            format_error(path, &format!("corrupt audio data{at}"), e)
        })?;
        let spec = *decoded.spec();
        match (sample_rate, channels) {
            (Some(sr), Some(c)) if (sr, c) != (spec.rate, spec.channels.count()) && !interleaved.is_empty() => {
                return Err(Error::format(
                    path,
                    format!(
                        "the stream changes from {sr} Hz x {c} channels to {} Hz x {} channels",
                        spec.rate,
                        spec.channels.count()
                    ),
                ));
            }
            _ => {
                sample_rate = Some(spec.rate);
                channels = Some(spec.channels.count());
            }
        }
        if decoded.frames() == 0 {
            continue;
        }
        let b = match &mut buf {
            Some(b) if b.capacity() >= decoded.capacity() * spec.channels.count() => b,
            _ => buf.insert(SampleBuffer::<f64>::new(decoded.capacity() as u64, spec)),
        };
        b.copy_interleaved_ref(decoded);
        if interleaved.len().saturating_add(b.samples().len()) > MAX_AUDIO_SAMPLES {
            return Err(Error::format(
                path,
                format!(
                    "holds more than {MAX_AUDIO_SAMPLES} samples ({} channels at {} Hz), more than hwcov decodes of one file",
                    spec.channels.count(),
                    spec.rate
                ),
            ));
        }
        interleaved.extend_from_slice(b.samples());
        let frames = interleaved.len() / spec.channels.count().max(1);
        check_duration(path, "decodes to at least", frames as u64, spec.rate)?;
    }
    let sample_rate = sample_rate.ok_or_else(|| Error::format(path, "the audio track names no sample rate"))?;
    let channels = channels.ok_or_else(|| Error::format(path, "the audio track names no channel layout"))?;
    if sample_rate == 0 || channels == 0 {
        return Err(Error::format(
            path,
            "the audio track has a sample rate or channel count of 0",
        ));
    }
    let decoded = Decoded {
        sample_rate,
        channels,
        interleaved,
    };
    // MP3 frame counts come from a Xing/Info/VBRI header or are estimated from the file size: allow
    // two MPEG frames of slack there. (An MP3 cut without such a header decodes to the frames it
    // holds: its frames carry no total length.)
    let slack = if is_mp3(&params) { 2 * 1152 } else { 0 };
    if let Some(n) = expected_frames
        && (decoded.frames() as u64) + slack < n
    {
        return Err(Error::format(
            path,
            format!(
                "truncated: the header promises {n} frames, the file holds {}",
                decoded.frames()
            ),
        ));
    }
    Ok(decoded)
}

fn is_mp3(params: &symphonia::core::codecs::CodecParameters) -> bool {
    params.codec == symphonia::core::codecs::CODEC_TYPE_MP3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_duration_limit_is_exact_and_names_the_file() {
        let p = Path::new("talk.flac");
        assert!(check_duration(p, "decodes to at least", MAX_AUDIO_SECONDS * 48_000, 48_000).is_ok());
        let err = check_duration(p, "decodes to at least", MAX_AUDIO_SECONDS * 48_000 + 1, 48_000)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("talk.flac") && err.contains("longer than the 600 s"),
            "{err}"
        );
        // Frame counts near u64::MAX do not overflow.
        assert!(check_duration(p, "the header declares", u64::MAX, u32::MAX).is_err());
        assert!(check_duration(p, "the header declares", u64::MAX, 0).is_ok());
    }
}
