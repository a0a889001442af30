//! Whisper end to end: generation against the `generate()` tokens transformers wrote into the
//! fixtures (the language detected, given by code and by name, the other task), transcription of
//! audio files against transformers' pipeline and feature extractor + generate() per window
//! (tools/fixtures/audio_reference.py), `hwcov run --audio` on a WAV written here, and bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use hwcov::generate::GenerationConfig;
use hwcov::generate::whisper::{self, WhisperGenerationConfig, WhisperOptions};
use hwcov::tasks::speech_recognition_whisper::transcribe;
use hwcov::tensor::{read_safetensors, write_safetensors};
use hwcov::{HostTensor, IoFile, LoadOptions, ModelFiles, PlatformId};

mod common;
use common::{copy_fixture, fixture};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v = json(path);
    f(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn hwcov(args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_hwcov")).args(args).output().unwrap();
    let o = Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!o.stderr.contains("panicked"), "hwcov panicked:\n{}", o.stderr);
    o
}

fn run(dir: &Path, audio: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec![
        "run",
        "--model-dir",
        dir.to_str().unwrap(),
        "--audio",
        audio.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    hwcov(&args)
}

fn verify(dir: &Path, io: &Path) -> Outcome {
    hwcov(&[
        "verify",
        "--model-dir",
        dir.to_str().unwrap(),
        "--io",
        io.to_str().unwrap(),
    ])
}

fn assert_error(o: &Outcome, needles: &[&str]) {
    assert_eq!(o.code, 2, "expected exit 2\nstdout: {}\nstderr: {}", o.stdout, o.stderr);
    for n in needles {
        assert!(o.stderr.contains(n), "error message lacks `{n}`:\n{}", o.stderr);
    }
}

/// A mono 16-bit PCM WAV of `seconds` of a 440 Hz tone with a 3 Hz tremolo.
fn write_wav(path: &Path, rate: u32, seconds: f64) {
    let n = (rate as f64 * seconds) as usize;
    let samples: Vec<i16> = (0..n)
        .map(|i| {
            let t = i as f64 / rate as f64;
            let x = (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                * (0.5 + 0.3 * (2.0 * std::f64::consts::PI * 3.0 * t).sin());
            (x * 20000.0) as i16
        })
        .collect();
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(&data);
    std::fs::write(path, b).unwrap();
}

/// The variant fixture (not a models.toml entry): English-only, 128 mel bins, other head counts,
/// gelu_new, scale_embedding, untied proj_out.
#[test]
fn variant_fixture_verifies() {
    let o = verify(&fixture("whisper-en"), &fixture("whisper-en").join("io.safetensors"));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("ok   generated"), "{}", o.stdout);
}

/// The fixture's meta.json holds what generate() returned for other languages and tasks; the
/// languages detected per row are those of transformers' detect_language.
#[test]
fn languages_and_tasks_match_transformers() {
    let dir = fixture("whisper");
    let meta = json(&dir.join("meta.json"));
    let files = ModelFiles::open(&dir).unwrap();
    let io = IoFile::read(&dir.join("io.safetensors")).unwrap();
    let mut config = GenerationConfig::from_model(&files).unwrap();
    let wcfg = WhisperGenerationConfig::from_model(&files, &mut config).unwrap();
    let platform = hwcov::platforms::get(PlatformId::Cpu).unwrap();
    let mut handler = platform.load(&files, &LoadOptions::default()).unwrap();
    let decoder = handler.decoder().unwrap();
    let inputs = &io.inputs;
    let new_tokens = meta["new_tokens"].as_u64().unwrap() as usize;

    let prompts = whisper::decoder_prompts(decoder, inputs, &wcfg, &WhisperOptions::default()).unwrap();
    let detected: Vec<String> = serde_json::from_value(meta["detected_languages"].clone()).unwrap();
    for (p, lang) in prompts.iter().zip(&detected) {
        assert_eq!(
            p[1],
            wcfg.lang_to_id.as_ref().unwrap()[lang],
            "{prompts:?} vs {detected:?}"
        );
    }
    assert_ne!(
        prompts[0][1], prompts[1][1],
        "the fixture's rows detect different languages"
    );

    for case in meta["other_generations"].as_array().unwrap() {
        let opts = WhisperOptions {
            language: case["language"].as_str().map(String::from),
            task: case["task"].as_str().map(String::from),
        };
        let prompts = whisper::decoder_prompts(decoder, inputs, &wcfg, &opts).unwrap();
        let g = whisper::generate(decoder, inputs, &config, &wcfg, &prompts, Some(new_tokens), true).unwrap();
        let want: Vec<Vec<i64>> = serde_json::from_value(case["generated"].clone()).unwrap();
        let t = g.to_tensor().unwrap();
        assert_eq!(t.shape(), [want.len(), want[0].len()], "{case}");
        assert_eq!(t.to_i64_vec().unwrap(), want.concat(), "{case}");
    }
}

fn audio_reference() -> (PathBuf, serde_json::Value) {
    let dir = fixture("preprocess/audio");
    let meta = json(&dir.join("reference.json"));
    (dir, meta)
}

/// One window of audio: the text of transformers' automatic-speech-recognition pipeline (greedy),
/// the language detected, and translated from German.
#[test]
fn transcription_matches_the_pipeline() {
    let (dir, meta) = audio_reference();
    let asr = &meta["pipelines"]["asr_whisper"];
    let files = ModelFiles::open(&fixture("whisper")).unwrap();
    let audio = dir.join(asr["file"].as_str().unwrap());
    let t = transcribe(
        &files,
        &audio,
        &WhisperOptions::default(),
        None,
        PlatformId::Cpu,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(t.text, asr["text"].as_str().unwrap());
    assert_eq!(t.windows.len(), 1);
    assert!(t.language_detected);
    let opts = WhisperOptions {
        language: Some("de".into()),
        task: Some("translate".into()),
    };
    let t = transcribe(&files, &audio, &opts, None, PlatformId::Cpu, &LoadOptions::default()).unwrap();
    assert_eq!(t.text, asr["translate_de"].as_str().unwrap());
    assert_eq!(
        (t.language.as_deref(), t.task.as_deref()),
        (Some("<|de|>"), Some("translate"))
    );
    assert!(!t.language_detected);
}

/// Audio of several windows: each window through transformers' feature extractor and generate(),
/// the language detected on the first.
#[test]
fn long_audio_is_transcribed_window_after_window() {
    let (dir, meta) = audio_reference();
    let r = &meta["pipelines"]["whisper_windows"];
    let files = ModelFiles::open(&fixture("whisper")).unwrap();
    let t = transcribe(
        &files,
        &dir.join(r["file"].as_str().unwrap()),
        &WhisperOptions::default(),
        None,
        PlatformId::Cpu,
        &LoadOptions::default(),
    )
    .unwrap();
    let want = r["windows"].as_array().unwrap();
    assert_eq!(t.windows.len(), want.len());
    for (w, r) in t.windows.iter().zip(want) {
        let ids: Vec<u32> = serde_json::from_value(r["token_ids"].clone()).unwrap();
        assert_eq!(w.token_ids, ids);
        assert_eq!(w.text, r["text"].as_str().unwrap());
    }
    assert_eq!(t.language.as_deref(), r["language"].as_str());
    assert_eq!(t.text, r["text"].as_str().unwrap());
    assert!(t.notes.iter().any(|n| n.contains("3 windows of 1 s")), "{:?}", t.notes);
}

#[test]
fn run_audio_prints_the_transcription() {
    let tmp = tempfile::tempdir().unwrap();
    let wav = tmp.path().join("tone.wav");
    // 1.3 s at 22.05 kHz: resampled, and two windows of the fixture's 1 s extractor.
    write_wav(&wav, 22050, 1.3);
    let dir = fixture("whisper");
    let gcfg = json(&dir.join("generation_config.json"));
    let id = |k: &str| gcfg[k].as_u64().unwrap();
    let o = run(&dir, &wav, &["--json"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["task"], "automatic-speech-recognition");
    assert_eq!(v["transcription_task"], "transcribe");
    assert_eq!(v["language_detected"], true);
    let lang = v["language"].as_str().unwrap();
    assert!(gcfg["lang_to_id"].get(lang).is_some(), "{v}");
    let prompt: Vec<u64> = serde_json::from_value(v["prompt"].clone()).unwrap();
    assert_eq!(
        prompt,
        [
            id("decoder_start_token_id"),
            gcfg["lang_to_id"][lang].as_u64().unwrap(),
            gcfg["task_to_id"]["transcribe"].as_u64().unwrap(),
            id("no_timestamps_token_id")
        ]
    );
    let windows = v["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2);
    assert_eq!(
        (windows[0]["start_s"].as_f64(), windows[0]["end_s"].as_f64()),
        (Some(0.0), Some(1.0))
    );
    assert_eq!(windows[1]["start_s"].as_f64(), Some(1.0));
    assert!((windows[1]["end_s"].as_f64().unwrap() - 1.3).abs() < 1e-3, "{v}");
    let eos = id("eos_token_id");
    for w in windows {
        let ids = w["token_ids"].as_array().unwrap();
        assert!(ids.len() <= 36 && ids.iter().all(|t| t.as_u64().unwrap() != eos), "{w}");
    }
    let notes: Vec<String> = serde_json::from_value(v["notes"].clone()).unwrap();
    assert!(
        notes.iter().any(|n| n.contains("resampled from 22050 Hz to 16000 Hz")),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.contains("2 windows")), "{notes:?}");

    // A language and the task given.
    let o = run(&dir, &wav, &["--json", "--language", "french", "--task", "translate"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["language"], "<|fr|>");
    assert_eq!(v["language_detected"], false);
    assert_eq!(v["prompt"][2], gcfg["task_to_id"]["translate"]);
    // The plain output: the text, then the notes.
    let o = run(&dir, &wav, &["--max-new-tokens", "2"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("note: window 1 stopped after 2 new tokens"),
        "{}",
        o.stdout
    );
}

#[test]
fn features_of_the_wrong_shape() {
    let d = copy_fixture("whisper");
    let edit_io = |f: &dyn Fn(&mut hwcov::NamedTensors)| {
        let mut t = read_safetensors(&d.path().join("io.safetensors")).unwrap();
        f(&mut t);
        let out = d.path().join("edited-io.safetensors");
        write_safetensors(&out, &t).unwrap();
        out
    };
    // 60 frames: the encoder takes exactly 2 * max_source_positions = 100.
    let io = edit_io(&|t| {
        t.insert(
            "in_input_features".into(),
            HostTensor::f32(vec![2, 80, 60], vec![0.0; 9600]).unwrap(),
        );
    });
    assert_error(
        &verify(d.path(), &io),
        &["in_input_features", "[2, 80, 60]", "2 * max_source_positions = 100"],
    );
    let io = edit_io(&|t| {
        t.insert(
            "in_input_features".into(),
            HostTensor::f32(vec![2, 64, 100], vec![0.0; 12800]).unwrap(),
        );
    });
    assert_error(&verify(d.path(), &io), &["in_input_features", "num_mel_bins"]);
    let io = edit_io(&|t| {
        t.insert(
            "in_input_features".into(),
            HostTensor::f32(vec![80, 100], vec![0.0; 8000]).unwrap(),
        );
    });
    assert_error(&verify(d.path(), &io), &["in_input_features", "rank-3"]);
    let io = edit_io(&|t| {
        t.insert(
            "in_decoder_input_ids".into(),
            HostTensor::i64(vec![2, 41], vec![5; 82]).unwrap(),
        );
    });
    assert_error(
        &verify(d.path(), &io),
        &["in_decoder_input_ids", "max_target_positions = 40"],
    );
    let io = edit_io(&|t| {
        t.insert(
            "in_decoder_input_ids".into(),
            HostTensor::i64(vec![1, 3], vec![5; 3]).unwrap(),
        );
    });
    assert_error(&verify(d.path(), &io), &["in_decoder_input_ids", "batch size"]);
    // An extractor whose window does not give the encoder its frames.
    edit_json(&d.path().join("preprocessor_config.json"), |c| {
        c["chunk_length"] = 2.into()
    });
    let tmp = tempfile::tempdir().unwrap();
    let wav = tmp.path().join("a.wav");
    write_wav(&wav, 16000, 0.5);
    assert_error(
        &run(d.path(), &wav, &[]),
        &[
            "preprocessor_config.json",
            "chunk_length",
            "200 mel frames",
            "max_source_positions = 100",
        ],
    );
}

#[test]
fn languages_and_tasks_the_model_does_not_take() {
    let tmp = tempfile::tempdir().unwrap();
    let wav = tmp.path().join("a.wav");
    write_wav(&wav, 16000, 0.5);
    let dir = fixture("whisper");
    assert_error(
        &run(&dir, &wav, &["--language", "es"]),
        &["generation_config.json", "lang_to_id", "<|es|>", "`es`"],
    );
    assert_error(
        &run(&dir, &wav, &["--language", "klingon"]),
        &["unsupported language `klingon`"],
    );
    assert_error(
        &run(&dir, &wav, &["--task", "summarize"]),
        &["unknown task `summarize`"],
    );
    assert_error(
        &run(&fixture("whisper-en"), &wav, &["--language", "en"]),
        &["generation_config.json", "is_multilingual", "English-only"],
    );
    assert_error(
        &run(&fixture("wav2vec2"), &wav, &["--language", "en"]),
        &["--language and --task are for Whisper"],
    );
    assert_error(
        &run(&dir, &wav, &["--temperature", "0.7"]),
        &["greedily", "--temperature"],
    );
    assert_error(
        &run(&dir, &wav, &["--max-new-tokens", "37"]),
        &["max_target_positions = 40", "at most 36"],
    );
}

#[test]
fn generation_configs_that_change_the_prompt_or_are_not_supported() {
    // Marked as made from the model config, generation_config.json keeps none of Whisper's fields
    // on load in transformers: the prompt is <|startoftranscript|> alone, and the reference (made
    // with the fields) no longer matches.
    let d = copy_fixture("whisper");
    edit_json(&d.path().join("generation_config.json"), |g| {
        g["_from_model_config"] = true.into()
    });
    let files = ModelFiles::open(d.path()).unwrap();
    let mut config = GenerationConfig::from_model(&files).unwrap();
    let wcfg = WhisperGenerationConfig::from_model(&files, &mut config).unwrap();
    assert!(wcfg.lang_to_id.is_none() && wcfg.forced_decoder_ids.is_none());
    let p = wcfg
        .init_tokens(&WhisperOptions::default(), 1, || panic!("no language to detect"))
        .unwrap();
    assert_eq!(p, [[301]]);
    let o = verify(d.path(), &d.path().join("io.safetensors"));
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("FAIL generated"), "{}", o.stdout);
    // Timestamps are not implemented: verify fails on them, `run` says it left them out.
    let d = copy_fixture("whisper");
    edit_json(&d.path().join("generation_config.json"), |g| {
        g["return_timestamps"] = true.into()
    });
    let o = verify(d.path(), &d.path().join("io.safetensors"));
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("return_timestamps"), "{}", o.stdout);
    let tmp = tempfile::tempdir().unwrap();
    let wav = tmp.path().join("a.wav");
    write_wav(&wav, 16000, 0.5);
    let o = run(d.path(), &wav, &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout
            .contains("sets return_timestamps = true, which hwcov does not apply"),
        "{}",
        o.stdout
    );
}

#[test]
fn weights_and_config_that_disagree() {
    // Untied in config.json, but the checkpoint has no proj_out.weight.
    let d = copy_fixture("whisper");
    edit_json(&d.path().join("config.json"), |c| {
        c["tie_word_embeddings"] = false.into()
    });
    assert_error(
        &verify(d.path(), &d.path().join("io.safetensors")),
        &["model.safetensors", "proj_out.weight"],
    );
    let d = copy_fixture("whisper");
    edit_json(&d.path().join("config.json"), |c| {
        c["decoder_attention_heads"] = 3.into()
    });
    assert_error(
        &verify(d.path(), &d.path().join("io.safetensors")),
        &["config.json", "decoder_attention_heads", "d_model 16"],
    );
    let d = copy_fixture("whisper");
    edit_json(&d.path().join("config.json"), |c| c["max_source_positions"] = 40.into());
    assert_error(
        &verify(d.path(), &d.path().join("io.safetensors")),
        &["model.safetensors", "embed_positions"],
    );
}
