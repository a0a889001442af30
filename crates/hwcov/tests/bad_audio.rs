//! Audio input through the `hwcov` binary (`features --audio`, `run --audio`): bad files fail with an
//! error that names the file; other rates and stereo are converted, and say so; silence and very short
//! audio go through as transformers would take them.

use std::path::{Path, PathBuf};
use std::process::Command;

use hwcov::tensor::read_safetensors;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn extractor(name: &str) -> PathBuf {
    root().join("fixtures/preprocess/audio").join(name)
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn hwcov(args: &[&str], paths: &[(&str, &Path)]) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hwcov"));
    cmd.args(args);
    for (flag, p) in paths {
        cmd.arg(flag).arg(p);
    }
    let out = cmd.output().unwrap();
    let o = Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!o.stderr.contains("panicked"), "hwcov panicked:\n{}", o.stderr);
    o
}

/// `hwcov features --model-dir DIR --audio FILE --out OUT`.
fn features(model_dir: &Path, audio: &Path, out: &Path) -> Outcome {
    hwcov(
        &["features"],
        &[("--model-dir", model_dir), ("--audio", audio), ("--out", out)],
    )
}

fn assert_error(o: &Outcome, needles: &[&str]) {
    assert_eq!(o.code, 2, "expected exit 2\nstdout: {}\nstderr: {}", o.stdout, o.stderr);
    for n in needles {
        assert!(o.stderr.contains(n), "error lacks `{n}`:\n{}", o.stderr);
    }
}

fn assert_ok(o: &Outcome) {
    assert_eq!(o.code, 0, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
}

/// A PCM 16-bit WAV of `channels` interleaved channels.
fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[f64]) {
    let data: Vec<u8> = samples
        .iter()
        .flat_map(|&x| ((x.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes())
        .collect();
    let mut fmt = Vec::new();
    fmt.extend(1u16.to_le_bytes());
    fmt.extend(channels.to_le_bytes());
    fmt.extend(rate.to_le_bytes());
    fmt.extend((rate * 2 * channels as u32).to_le_bytes());
    fmt.extend((2 * channels).to_le_bytes());
    fmt.extend(16u16.to_le_bytes());
    let mut body = b"WAVEfmt ".to_vec();
    body.extend((fmt.len() as u32).to_le_bytes());
    body.extend(fmt);
    body.extend(b"data");
    body.extend((data.len() as u32).to_le_bytes());
    body.extend(data);
    let mut file = b"RIFF".to_vec();
    file.extend((body.len() as u32).to_le_bytes());
    file.extend(body);
    std::fs::write(path, file).unwrap();
}

fn tone(rate: u32, secs: f64) -> Vec<f64> {
    let n = (rate as f64 * secs) as usize;
    (0..n)
        .map(|i| 0.3 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / rate as f64).sin())
        .collect()
}

fn tensor(out: &Path, name: &str) -> (Vec<usize>, Vec<f64>) {
    let t = read_safetensors(out).unwrap();
    let t = &t[name];
    (t.shape().to_vec(), t.to_f64_vec())
}

#[test]
fn corrupt_and_foreign_files_are_named() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out.safetensors");
    let junk = d.path().join("noise.wav");
    std::fs::write(&junk, (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>()).unwrap();
    assert_error(
        &features(&extractor("whisper80"), &junk, &out),
        &["noise.wav", "not a supported audio file"],
    );
    // A text file.
    assert_error(
        &features(&extractor("whisper80"), &root().join("Cargo.toml"), &out),
        &["Cargo.toml", "not a supported audio file"],
    );
    // A file that does not exist.
    assert_error(
        &features(&extractor("whisper80"), &d.path().join("missing.wav"), &out),
        &["missing.wav"],
    );
    assert!(!out.exists());
}

#[test]
fn truncated_files_are_named() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out.safetensors");
    for name in ["speech16k.wav", "speech16k.flac"] {
        let bytes = std::fs::read(extractor(name)).unwrap();
        let cut = d.path().join(format!("cut-{name}"));
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        assert_error(
            &features(&extractor("whisper80"), &cut, &out),
            &[&format!("cut-{name}"), "truncated"],
        );
    }
}

#[test]
fn unsupported_codec_is_named() {
    // A WAV whose format tag is IMA ADPCM (0x11).
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("adpcm.wav");
    let mut fmt = Vec::new();
    for v in [0x11u16, 1] {
        fmt.extend(v.to_le_bytes());
    }
    fmt.extend(8000u32.to_le_bytes());
    fmt.extend(4055u32.to_le_bytes());
    for v in [256u16, 4, 2, 505] {
        fmt.extend(v.to_le_bytes());
    }
    let mut body = b"WAVEfmt ".to_vec();
    body.extend((fmt.len() as u32).to_le_bytes());
    body.extend(fmt);
    body.extend(b"data");
    body.extend(256u32.to_le_bytes());
    body.extend([0u8; 256]);
    let mut file = b"RIFF".to_vec();
    file.extend((body.len() as u32).to_le_bytes());
    file.extend(body);
    std::fs::write(&path, file).unwrap();
    assert_error(
        &features(&extractor("whisper80"), &path, &d.path().join("o.safetensors")),
        &["adpcm.wav", "unsupported audio format or codec"],
    );
}

#[test]
fn empty_file_is_named() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("empty.wav");
    write_wav(&path, 16000, 1, &[]);
    assert_error(
        &features(&extractor("wav2vec2"), &path, &d.path().join("o.safetensors")),
        &["empty.wav", "holds no audio samples"],
    );
}

#[test]
fn other_rates_are_resampled_and_said_so() {
    let d = tempfile::tempdir().unwrap();
    for rate in [8000u32, 44100] {
        let path = d.path().join(format!("tone{rate}.wav"));
        let x = tone(rate, 0.5);
        write_wav(&path, rate, 1, &x);
        let out = d.path().join("o.safetensors");
        let o = features(&extractor("wav2vec2"), &path, &out);
        assert_ok(&o);
        assert!(
            o.stderr.contains(&format!("resampled from {rate} Hz to 16000 Hz")),
            "{}",
            o.stderr
        );
        let (shape, _) = tensor(&out, "input_values");
        assert_eq!(shape, vec![1, (x.len() * 16000).div_ceil(rate as usize)]);
    }
}

#[test]
fn stereo_is_averaged_to_mono() {
    let d = tempfile::tempdir().unwrap();
    let x = tone(16000, 0.5);
    let mono = d.path().join("mono.wav");
    write_wav(&mono, 16000, 1, &x);
    let stereo = d.path().join("stereo.wav");
    let both: Vec<f64> = x.iter().flat_map(|&v| [v, v]).collect();
    write_wav(&stereo, 16000, 2, &both);
    let (a, b) = (d.path().join("a.safetensors"), d.path().join("b.safetensors"));
    assert_ok(&features(&extractor("whisper80"), &mono, &a));
    let o = features(&extractor("whisper80"), &stereo, &b);
    assert_ok(&o);
    assert!(o.stderr.contains("2 channels averaged to mono"), "{}", o.stderr);
    assert_eq!(tensor(&a, "input_features"), tensor(&b, "input_features"));
}

/// Silence is valid audio: Whisper's log-mel of zeros is log10(1e-10) everywhere, scaled to
/// (-10 + 4) / 4; Wav2Vec2's normalisation of zeros is zeros; CLAP's dB of the floor is -100.
#[test]
fn silence_gives_the_floor_features() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("silence.wav");
    write_wav(&path, 16000, 1, &vec![0.0; 8000]);
    let out = d.path().join("o.safetensors");
    for (fx, name, want) in [
        ("whisper80", "input_features", -1.5),
        ("wav2vec2", "input_values", 0.0),
        ("clap-repeat", "input_features", -100.0),
    ] {
        assert_ok(&features(&extractor(fx), &path, &out));
        let (_, v) = tensor(&out, name);
        assert!(v.iter().all(|&x| x == want), "{fx}: {:?}", &v[..4]);
    }
}

#[test]
fn audio_shorter_than_a_window() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("click.wav");
    write_wav(&path, 16000, 1, &tone(16000, 0.00625)); // 100 samples, a quarter of Whisper's n_fft
    let out = d.path().join("o.safetensors");
    // Whisper pads to 30 s: a full set of frames.
    assert_ok(&features(&extractor("whisper80"), &path, &out));
    assert_eq!(tensor(&out, "input_features").0, vec![1, 80, 3000]);
    // CLAP repeats it to max_length_s.
    assert_ok(&features(&extractor("clap-fusion"), &path, &out));
    assert_eq!(tensor(&out, "input_features").0, vec![1, 4, 101, 16]);
    // Wav2Vec2's conv feature encoder needs more samples than that: the error names the file.
    let o = hwcov(
        &["run"],
        &[("--model-dir", &root().join("fixtures/wav2vec2")), ("--audio", &path)],
    );
    assert_error(&o, &["click.wav", "receptive field"]);
}

#[test]
fn long_audio_where_transformers_crops_at_random() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("long.wav");
    write_wav(&path, 16000, 1, &tone(16000, 1.5)); // the CLAP extractors here take 1 s
    let out = d.path().join("o.safetensors");
    for fx in ["clap-repeat", "clap-fusion"] {
        assert_error(&features(&extractor(fx), &path, &out), &["long.wav", "at random"]);
    }
    // `hwcov run` takes the first crop transformers could draw, and says so.
    let o = hwcov(
        &["run", "--text", "a tone", "--text", "rain"],
        &[("--model-dir", &root().join("fixtures/clap")), ("--audio", &path)],
    );
    assert_ok(&o);
    assert!(
        o.stdout.contains("note: longer than 1 s: the first 1 s taken"),
        "{}",
        o.stdout
    );
}

#[test]
fn whisper_cuts_at_chunk_length() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("long.wav");
    write_wav(&path, 16000, 1, &tone(16000, 30.5));
    let out = d.path().join("o.safetensors");
    let o = features(&extractor("whisper80"), &path, &out);
    assert_ok(&o);
    assert!(o.stderr.contains("cut to the first 30 s"), "{}", o.stderr);
    assert_eq!(tensor(&out, "input_features").0, vec![1, 80, 3000]);
}

#[test]
fn extractor_config_errors_name_the_file() {
    let d = tempfile::tempdir().unwrap();
    let audio = extractor("speech16k.wav");
    let out = d.path().join("o.safetensors");
    // No preprocessor_config.json.
    assert_error(&features(d.path(), &audio, &out), &["preprocessor_config.json"]);
    // An extractor type hwcov does not have.
    std::fs::write(
        d.path().join("preprocessor_config.json"),
        r#"{"feature_extractor_type": "SeamlessM4TFeatureExtractor"}"#,
    )
    .unwrap();
    assert_error(
        &features(d.path(), &audio, &out),
        &[
            "preprocessor_config.json",
            "feature_extractor_type",
            "SeamlessM4TFeatureExtractor",
        ],
    );
    // A field of the wrong type.
    std::fs::write(
        d.path().join("preprocessor_config.json"),
        r#"{"feature_extractor_type": "WhisperFeatureExtractor", "hop_length": "fast"}"#,
    )
    .unwrap();
    assert_error(
        &features(d.path(), &audio, &out),
        &["preprocessor_config.json", "hop_length"],
    );
    // Random dither cannot be reproduced.
    std::fs::write(
        d.path().join("preprocessor_config.json"),
        r#"{"feature_extractor_type": "WhisperFeatureExtractor", "dither": 0.0001}"#,
    )
    .unwrap();
    assert_error(
        &features(d.path(), &audio, &out),
        &["preprocessor_config.json", "dither"],
    );
}

#[test]
fn features_takes_one_input() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("o.safetensors");
    let audio = extractor("speech16k.wav");
    let o = hwcov(
        &["features"],
        &[
            ("--model-dir", &extractor("whisper80")),
            ("--audio", &audio),
            ("--image", &audio),
            ("--out", &out),
        ],
    );
    assert_error(&o, &["cannot be used with"]);
}

/// Model inputs of the audio models that do not fit the config: errors name the tensor and field.
#[test]
fn audio_model_inputs_are_checked() {
    use hwcov::tensor::write_safetensors;
    use hwcov::{HostTensor, NamedTensors};
    let d = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, HostTensor, &[&str]); 4] = [
        (
            "clap",
            "in_input_features",
            HostTensor::f32(vec![2, 1, 250, 15], vec![0.0; 2 * 250 * 15]).unwrap(),
            &["input_features", "num_mel_bins"],
        ),
        (
            "clap",
            "in_input_features",
            HostTensor::f32(vec![2, 1, 300, 16], vec![0.0; 2 * 300 * 16]).unwrap(),
            &["input_features", "spec_size * freq_ratio"],
        ),
        (
            "wav2vec2",
            "in_input_values",
            HostTensor::f32(vec![2, 1, 1024], vec![0.0; 2048]).unwrap(),
            &["input_values", "rank-2"],
        ),
        (
            "wav2vec2",
            "in_input_values",
            HostTensor::f32(vec![2, 7], vec![0.0; 14]).unwrap(),
            &["input_values", "receptive field"],
        ),
    ];
    for (model, name, t, needles) in cases {
        let dir = root().join("fixtures").join(model);
        let mut io: NamedTensors = read_safetensors(&dir.join("io.safetensors")).unwrap();
        io.insert(name.to_string(), t);
        let path = d.path().join(format!("{model}-io.safetensors"));
        write_safetensors(&path, &io).unwrap();
        let o = hwcov(
            &["verify", "--platform", "cpu"],
            &[("--model-dir", &dir), ("--io", &path)],
        );
        assert_error(&o, needles);
    }
}
