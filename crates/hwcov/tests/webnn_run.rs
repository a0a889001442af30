//! `hwcov run --platform webnn` end to end, as a user runs it: an embedding, an image label, a
//! transcription, generated text and zero-shot labels, each run in the browser's WebNN and on the
//! CPU platform; the two answers agree (the same text and tokens, scores within 1e-4).

use std::path::Path;
use std::process::Command;

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether WebNN is here; required where `HWCOV_REQUIRE_PLATFORMS` names it.
fn webnn_here() -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_hwcov"))
        .arg("platforms")
        .current_dir(root())
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    let here = listing
        .lines()
        .any(|l| l.split_whitespace().next() == Some("webnn") && l.contains("WebNN"));
    let required = std::env::var("HWCOV_REQUIRE_PLATFORMS").unwrap_or_default();
    assert!(
        here || !required.split(',').any(|p| p == "webnn"),
        "webnn is required here:\n{listing}"
    );
    here
}

fn run(platform: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_hwcov"))
        .args(["run", "--platform", platform, "--json"])
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hwcov run --platform {platform} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The same answer: strings, integers and structure equal, other numbers within 1e-4.
fn agree(path: &str, a: &serde_json::Value, b: &serde_json::Value) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{path}");
            for (k, v) in x {
                agree(&format!("{path}.{k}"), v, &y[k]);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                agree(&format!("{path}[{i}]"), v, w);
            }
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-4, "{path}: {x} vs {y}");
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

#[test]
fn tasks_in_the_browser_answer_as_on_the_cpu() {
    if !webnn_here() {
        return;
    }
    let cases: &[&[&str]] = &[
        &[
            "--model-dir",
            "fixtures/bert",
            "--text",
            "hello",
            "--text",
            "world",
            "--similarity",
        ],
        &[
            "--model-dir",
            "fixtures/vit",
            "--image",
            "fixtures/preprocess/images/photo.jpg",
            "--top-k",
            "2",
        ],
        &[
            "--model-dir",
            "fixtures/clip",
            "--image",
            "fixtures/preprocess/images/photo.jpg",
            "--text",
            "cat",
            "--text",
            "dog",
        ],
        &[
            "--model-dir",
            "fixtures/whisper",
            "--audio",
            "fixtures/preprocess/audio/speech16k.flac",
            "--max-new-tokens",
            "3",
        ],
        &["--model-dir", "fixtures/qwen2", "--text", "Hi", "--max-new-tokens", "3"],
    ];
    for args in cases {
        let (webnn, cpu) = (run("webnn", args), run("cpu", args));
        agree(args[1], &webnn, &cpu);
    }
}
