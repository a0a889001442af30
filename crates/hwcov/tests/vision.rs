//! The vision tasks of `hwcov run` and `hwcov features` end to end, against what transformers made of
//! the same files with the same model fixtures (fixtures/preprocess/tasks.json and
//! reference.safetensors, written by tools/fixtures/preprocess.py).

use std::path::{Path, PathBuf};
use std::process::Command;

use hwcov::run::{RunRequest, run};
use hwcov::tensor::read_safetensors;
use hwcov::{LoadOptions, PlatformId};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn images() -> PathBuf {
    fixtures().join("preprocess/images")
}

fn close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= 1e-4, "{what}: {got} vs transformers {want}");
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn tasks_match_transformers() {
    let tasks: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("preprocess/tasks.json")).unwrap()).unwrap();
    assert!(tasks.len() >= 7);
    for task in &tasks {
        let model = task["model"].as_str().unwrap();
        let mut request = RunRequest::default();
        if let Some(img) = task["image"].as_str() {
            request.image = Some(images().join(img));
        }
        if let Some(video) = task["video"].as_str() {
            request.video = Some(images().join(video));
        }
        if let Some(texts) = task.get("texts") {
            request.texts = strings(texts);
        }
        request.top_k = task["top_k"].as_u64().map(|k| k as usize);
        request.threshold = task["threshold"].as_f64();
        let out = run(
            &fixtures().join(model),
            &request,
            PlatformId::Cpu,
            &LoadOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{model}: {e}"));
        let what = format!(
            "{model} on {}",
            task["image"].as_str().or(task["video"].as_str()).unwrap()
        );
        match model {
            "vit" | "clip" => {
                let want = task["predictions"].as_array().unwrap();
                let got = out.json["predictions"].as_array().unwrap();
                assert_eq!(got.len(), want.len(), "{what}");
                for (g, w) in got.iter().zip(want) {
                    assert_eq!(g["label"], w["label"], "{what}");
                    close(g["score"].as_f64().unwrap(), w["score"].as_f64().unwrap(), &what);
                }
            }
            "detr" => {
                let want = task["detections"].as_array().unwrap();
                let got = out.json["detections"].as_array().unwrap();
                assert!(!want.is_empty(), "{what}: the reference finds nothing");
                assert_eq!(got.len(), want.len(), "{what}");
                for (g, w) in got.iter().zip(want) {
                    assert_eq!(g["label"], w["label"], "{what}");
                    close(g["score"].as_f64().unwrap(), w["score"].as_f64().unwrap(), &what);
                    for (k, key) in ["xmin", "ymin", "xmax", "ymax"].iter().enumerate() {
                        // Pixel coordinates: scaled from [0, 1] by the image size, so allow that factor.
                        let (gv, wv) = (g["box"][key].as_f64().unwrap(), w["box"][k].as_f64().unwrap());
                        assert!((gv - wv).abs() <= 1e-4 * 100.0, "{what} {key}: {gv} vs {wv}");
                    }
                }
            }
            "xclip" => {
                let want = task["probabilities"].as_object().unwrap();
                for g in out.json["predictions"].as_array().unwrap() {
                    let t = g["text"].as_str().unwrap();
                    close(g["score"].as_f64().unwrap(), want[t].as_f64().unwrap(), &what);
                }
            }
            other => panic!("unknown model {other} in tasks.json"),
        }
    }
}

/// `hwcov features` writes what transformers' processor makes of the same files.
#[test]
fn features_cli_matches_transformers() {
    let reference = read_safetensors(&fixtures().join("preprocess/reference.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run_features = |args: &[&str], out: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_hwcov"))
            .arg("features")
            .args(args)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        read_safetensors(out).unwrap()
    };
    let procs = fixtures().join("preprocess/processors");
    let img = |f: &str| images().join(f).display().to_string();

    let out = dir.path().join("detr.safetensors");
    let got = run_features(
        &[
            "--model-dir",
            &procs.join("detr").display().to_string(),
            "--image",
            &img("rgb.png"),
            "--image",
            &img("exif.jpg"),
            "--image",
            &img("gray.png"),
        ],
        &out,
    );
    for key in ["pixel_values", "pixel_mask"] {
        let (g, w) = (&got[key], &reference[&format!("detr/batch.{key}")]);
        assert_eq!(g.shape(), w.shape(), "{key}");
        let err = g
            .to_f64_vec()
            .iter()
            .zip(w.to_f64_vec())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err <= 1e-4, "{key}: {err}");
    }

    let out = dir.path().join("video.safetensors");
    let got = run_features(
        &[
            "--model-dir",
            &procs.join("videomae").display().to_string(),
            "--video",
            &img("video.gif"),
            "--num-frames",
            "4",
        ],
        &out,
    );
    let (g, w) = (&got["pixel_values"], &reference["videomae/video_gif_4.pixel_values"]);
    assert_eq!(g.shape(), w.shape());
    assert!(
        g.to_f64_vec()
            .iter()
            .zip(w.to_f64_vec())
            .all(|(a, b)| (a - b).abs() <= 1e-4)
    );
}

/// The model's num_frames picks the frames when no --num-frames is given.
#[test]
fn video_features_take_the_models_frame_count() {
    let t = hwcov::features::video(&fixtures().join("xclip"), &images().join("video.gif"), None).unwrap();
    let n = hwcov::features::model_num_frames(&fixtures().join("xclip"))
        .unwrap()
        .unwrap();
    assert_eq!(t["pixel_values"].shape(), &[1, n, 3, 30, 30]);
}
