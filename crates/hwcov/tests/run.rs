//! `hwcov run` end to end: text through the folder's tokenizer and the model, pooled, against what
//! transformers computed for the same text in the fixture.

use std::path::Path;

use hwcov::tasks::embed::{Pooling, embed};
use hwcov::{IoFile, LoadOptions, PlatformId};

#[test]
fn bert_embedding_matches_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/bert");
    let io = IoFile::read(&dir.join("io.safetensors")).unwrap();
    // Row 1 of the fixture is "a dog" alone (see its meta.json), padded to the batch's length.
    let got = embed(
        &dir,
        &["a dog".to_string()],
        Pooling::Mean,
        PlatformId::Cpu,
        &LoadOptions::default(),
    )
    .unwrap();
    let h = &io.outputs["last_hidden_state"];
    let mask = io.inputs["attention_mask"].to_i64_vec().unwrap();
    let (l, d) = (h.shape()[1], h.shape()[2]);
    let v = h.to_f64_vec();
    let kept: Vec<usize> = (0..l).filter(|&t| mask[l + t] == 1).collect();
    let want: Vec<f64> = (0..d)
        .map(|k| kept.iter().map(|&t| v[(l + t) * d + k]).sum::<f64>() / kept.len() as f64)
        .collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].len(), d);
    for (g, w) in got[0].iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-4, "{g} vs {w}");
    }
    let pooled = embed(
        &dir,
        &["a dog".to_string()],
        Pooling::Pooler,
        PlatformId::Cpu,
        &LoadOptions::default(),
    )
    .unwrap();
    let p = io.outputs["pooler_output"].to_f64_vec();
    for (g, w) in pooled[0].iter().zip(&p[d..2 * d]) {
        assert!((*g as f64 - w).abs() < 1e-4, "{g} vs {w}");
    }
}

fn audio_reference() -> (std::path::PathBuf, serde_json::Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/preprocess/audio");
    let meta = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    (dir, serde_json::from_str(&meta).unwrap())
}

/// Speech recognition against transformers' `automatic-speech-recognition` pipeline on the same file
/// (tools/fixtures/audio_reference.py).
#[test]
fn wav2vec2_transcription_matches_the_pipeline() {
    let (dir, meta) = audio_reference();
    let asr = &meta["pipelines"]["asr"];
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(asr["model"].as_str().unwrap());
    let t = hwcov::tasks::speech_recognition::transcribe(
        &model,
        &dir.join(asr["file"].as_str().unwrap()),
        PlatformId::Cpu,
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(t.text, asr["text"].as_str().unwrap());
    assert!(t.notes.is_empty(), "{:?}", t.notes);
}

/// Zero-shot audio classification against transformers' `zero-shot-audio-classification` pipeline.
#[test]
fn clap_zero_shot_matches_the_pipeline() {
    let (dir, meta) = audio_reference();
    let zs = &meta["pipelines"]["zero_shot"];
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(zs["model"].as_str().unwrap());
    let labels: Vec<String> = serde_json::from_value(zs["labels"].clone()).unwrap();
    let (scores, notes) = hwcov::tasks::zero_shot_audio::classify(
        &model,
        &dir.join(zs["file"].as_str().unwrap()),
        &labels,
        PlatformId::Cpu,
        &LoadOptions::default(),
    )
    .unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    let want = zs["scores"].as_array().unwrap();
    assert_eq!(scores.len(), want.len());
    for (got, w) in scores.iter().zip(want) {
        assert_eq!(got.label, w["label"].as_str().unwrap());
        let ws = w["score"].as_f64().unwrap();
        assert!((got.score - ws).abs() < 1e-4, "{}: {} vs {ws}", got.label, got.score);
    }
}
