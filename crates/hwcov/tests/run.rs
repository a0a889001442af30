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
