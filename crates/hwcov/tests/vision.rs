//! The vision tasks of `hwcov run` and `hwcov features` end to end, against what transformers made of
//! the same files with the same model fixtures, with either image processor backend
//! (fixtures/preprocess/tasks.json and reference.safetensors with PIL, fixtures/preprocess/torchvision/
//! with torchvision; written by tools/fixtures/preprocess.py).

use std::path::{Path, PathBuf};
use std::process::Command;

use hwcov::features::ImageBackend;
use hwcov::run::{RunRequest, run};
use hwcov::tensor::read_safetensors;
use hwcov::{LoadOptions, NamedTensors, PlatformId};
use hwcov_preprocess::image::CpuKernels;
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

fn read_tasks(file: &str) -> Vec<Value> {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("preprocess").join(file)).unwrap()).unwrap()
}

/// With the PIL backend asked for, the tasks match transformers' pipelines with the PIL backend.
#[test]
fn tasks_match_transformers_pil() {
    let tasks = read_tasks("tasks.json");
    assert!(tasks.len() >= 7);
    check_tasks(&tasks, Some(ImageBackend::Pil));
}

/// By default, the tasks match transformers' pipelines with torchvision installed (its backend, on
/// the torch kernels of this machine's CPU).
#[test]
fn tasks_match_transformers_torchvision_by_default() {
    let kernels = CpuKernels::current().name();
    let tasks: Vec<Value> = read_tasks("torchvision/tasks.json")
        .into_iter()
        .filter(|t| t["kernels"] == kernels)
        .collect();
    assert!(tasks.len() >= 7, "{} tasks for the {kernels} kernels", tasks.len());
    check_tasks(&tasks, None);
}

fn check_tasks(tasks: &[Value], backend: Option<ImageBackend>) {
    for task in tasks {
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
        request.image_backend = backend;
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

fn max_error(got: &NamedTensors, reference: &NamedTensors, case: &str, key: &str) -> f64 {
    let (g, w) = (&got[key], &reference[&format!("{case}.{key}")]);
    assert_eq!(g.shape(), w.shape(), "{case}: {key}");
    g.to_f64_vec()
        .iter()
        .zip(w.to_f64_vec())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// `hwcov features` writes what transformers' processor makes of the same files: with the
/// torchvision backend by default (on the AVX2 kernels, and on the default ones where
/// ATEN_CPU_CAPABILITY=default says so, as it says to torch), with PIL where asked.
#[test]
fn features_cli_matches_transformers() {
    let pil = read_safetensors(&fixtures().join("preprocess/reference.safetensors")).unwrap();
    let tv_avx2 = read_safetensors(&fixtures().join("preprocess/torchvision/avx2.safetensors")).unwrap();
    let mut tv_default = tv_avx2.clone();
    tv_default.extend(read_safetensors(&fixtures().join("preprocess/torchvision/default.safetensors")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let run_features = |args: &[&str], kernels: Option<&str>, out: &Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hwcov"));
        cmd.arg("features").args(args).arg("--out").arg(out);
        match kernels {
            Some(k) => cmd.env("ATEN_CPU_CAPABILITY", k),
            None => cmd.env_remove("ATEN_CPU_CAPABILITY"),
        };
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        read_safetensors(out).unwrap()
    };
    let procs = fixtures().join("preprocess/processors");
    let img = |f: &str| images().join(f).display().to_string();
    let detr = procs.join("detr").display().to_string();
    let detr_args = [
        "--model-dir",
        &detr,
        "--image",
        &img("rgb.png"),
        "--image",
        &img("exif.jpg"),
        "--image",
        &img("gray.png"),
    ];
    let videomae = procs.join("videomae").display().to_string();
    let video_args = ["--model-dir", &videomae, "--video", &img("frames"), "--num-frames", "3"];
    let out = dir.path().join("out.safetensors");

    // The default backend, on this machine's kernels and on each set named.
    let here = match CpuKernels::current() {
        CpuKernels::Avx2 => &tv_avx2,
        CpuKernels::Default => &tv_default,
    };
    let named = [(None, here), (Some("default"), &tv_default)];
    for (kernels, reference) in named {
        let got = run_features(&detr_args, kernels, &out);
        for key in ["pixel_values", "pixel_mask"] {
            let err = max_error(&got, reference, "detr/batch", key);
            assert!(err <= 1e-4, "torchvision ({kernels:?}) {key}: {err}");
        }
        let got = run_features(&video_args, kernels, &out);
        let err = max_error(&got, reference, "videomae/frames_3", "pixel_values");
        assert!(err <= 1e-4, "torchvision ({kernels:?}) video: {err}");
    }

    // The PIL backend where asked for: what the PIL processors make, which is not what the torchvision
    // ones make of these files.
    fn with_pil<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [args, &["--image-backend", "pil"]].concat()
    }
    let got = run_features(&with_pil(&detr_args), None, &out);
    for key in ["pixel_values", "pixel_mask"] {
        assert!(max_error(&got, &pil, "detr/batch", key) <= 1e-4, "pil {key}");
    }
    assert!(max_error(&got, &tv_avx2, "detr/batch", "pixel_values") > 1e-3);
    let got = run_features(&with_pil(&video_args), None, &out);
    assert!(max_error(&got, &pil, "videomae/frames_3", "pixel_values") <= 1e-4);
    assert!(max_error(&got, &tv_avx2, "videomae/frames_3", "pixel_values") > 1e-3);
}

/// The model's num_frames picks the frames when no --num-frames is given.
#[test]
fn video_features_take_the_models_frame_count() {
    let t = hwcov::features::video(&fixtures().join("xclip"), &images().join("video.gif"), None, None).unwrap();
    let n = hwcov::features::model_num_frames(&fixtures().join("xclip"))
        .unwrap()
        .unwrap();
    assert_eq!(t["pixel_values"].shape(), &[1, n, 3, 30, 30]);
}
