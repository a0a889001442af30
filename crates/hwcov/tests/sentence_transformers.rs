//! sentence-transformers folders (fixtures/sentence-transformers, written by
//! tools/fixtures/sentence_transformers_folders.py): `hwcov run --similarity --json` gives what
//! `SentenceTransformer.encode` and `model.similarity` gave, for every pooling mode, Dense,
//! Normalize, prompts and both similarity functions.

use std::path::{Path, PathBuf};
use std::process::Command;

fn folders() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/sentence-transformers");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("reference.json").is_file())
        .collect();
    out.sort();
    out
}

fn run(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hwcov"))
        .args(["run", "--model-dir", dir.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn matrix(v: &serde_json::Value) -> Vec<Vec<f64>> {
    serde_json::from_value(v.clone()).unwrap()
}

/// The largest difference, relative to 1 or the reference's size (the f32 tolerance's rule).
fn assert_close(ours: &[Vec<f64>], reference: &[Vec<f64>], what: &str) {
    assert_eq!(ours.len(), reference.len(), "{what}: rows");
    for (a, b) in ours.iter().zip(reference) {
        assert_eq!(a.len(), b.len(), "{what}: columns");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 + 1e-4 * y.abs(), "{what}: {x} vs {y}");
        }
    }
}

#[test]
fn folders_embed_and_compare_as_sentence_transformers_does() {
    let folders = folders();
    assert!(folders.len() >= 8, "the fixtures are missing: {folders:?}");
    for dir in folders {
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
        let texts: Vec<String> = serde_json::from_value(reference["texts"].clone()).unwrap();
        let mut args: Vec<&str> = texts.iter().flat_map(|t| ["--text", t.as_str()]).collect();
        args.extend(["--similarity", "--json"]);
        if let Some(p) = reference["prompt_name"].as_str() {
            args.extend(["--prompt-name", p]);
        }
        let (code, stdout, stderr) = run(&dir, &args);
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(code, 0, "{name}: {stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_close(
            &matrix(&v["embeddings"]),
            &matrix(&reference["embeddings"]),
            &format!("{name} embeddings"),
        );
        assert_close(
            &matrix(&v["similarity"]),
            &matrix(&reference["similarity"]),
            &format!("{name} similarity"),
        );
    }
}

#[test]
fn the_folder_decides_the_pooling_and_names_its_prompts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/sentence-transformers/prompt-excluded");
    let (code, _, stderr) = run(&dir, &["--text", "x", "--pooling", "cls"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("drop --pooling"), "{stderr}");
    let (code, _, stderr) = run(&dir, &["--text", "x", "--prompt-name", "nope"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("no prompt `nope`") && stderr.contains("query"),
        "{stderr}"
    );
    // Without the prompt the embedding differs from the one with it.
    let (_, with_prompt, _) = run(&dir, &["--text", "dog", "--prompt-name", "query", "--json"]);
    let (_, without, _) = run(&dir, &["--text", "dog", "--json"]);
    assert_ne!(with_prompt, without);
    // A plain transformers folder: mean pooling, cosine similarity (1 on the diagonal).
    let bert = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/bert");
    let (code, stdout, stderr) = run(&bert, &["--text", "a cat", "--text", "a dog", "--similarity", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let sim = matrix(&v["similarity"]);
    assert!(
        (sim[0][0] - 1.0).abs() < 1e-5 && (sim[0][1] - sim[1][0]).abs() < 1e-6,
        "{sim:?}"
    );
    let (code, _, stderr) = run(&bert, &["--text", "x", "--prompt-name", "query"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("needs a sentence-transformers folder"), "{stderr}");
}
