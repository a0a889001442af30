//! hwcov's image and video preprocessing against transformers' image processors on real PNG, JPEG and
//! GIF files, with both of transformers' backends: every case of fixtures/preprocess/cases.json (PIL
//! backend) and fixtures/preprocess/torchvision/cases.json (torchvision backend, once for each set of
//! torch's CPU kernels), whose reference tensors tools/fixtures/preprocess.py made with transformers.

use std::path::{Path, PathBuf};

use hwcov_core::error::read_json;
use hwcov_core::tensor::read_safetensors;
use hwcov_core::{NamedTensors, Result};
use hwcov_preprocess::image::{Backend, CpuKernels, ImageProcessor, load_image};
use hwcov_preprocess::video::load_video;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/preprocess")
}

/// What hwcov makes of a case's files with `backend` and `kernels`.
fn preprocess(case: &Value, backend: Backend, kernels: CpuKernels) -> Result<NamedTensors> {
    let dir = root().join("processors").join(case["processor"].as_str().unwrap());
    let mut proc = ImageProcessor::from_dir(&dir)?.with_backend(backend)?;
    proc.cpu_kernels = kernels;
    if let Some(video) = case["video"].as_str() {
        let n = case["num_frames"].as_u64().unwrap() as usize;
        let frames = load_video(&root().join("images").join(video), Some(n))?;
        return proc.preprocess_videos(&[frames]);
    }
    let images = case["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| load_image(&root().join("images").join(f.as_str().unwrap())))
        .collect::<Result<Vec<_>>>()?;
    proc.preprocess(&images)
}

/// Checks every case against `reference`; returns the largest error.
fn check(cases: &[Value], backend: Backend, kernels: CpuKernels, reference: &NamedTensors) -> f64 {
    let mut worst = 0f64;
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let got = preprocess(case, backend, kernels);
        if let Some(error) = case["error"].as_str() {
            // transformers refuses this processor with this backend; so must hwcov, saying why.
            let e = got.expect_err(name).to_string();
            assert!(
                e.contains("resample") && e.contains("PIL backend"),
                "{name}: {e} (transformers: {error})"
            );
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
        for key in ["pixel_values", "pixel_mask"] {
            let Some(want) = reference.get(&format!("{name}.{key}")) else {
                assert!(!got.contains_key(key), "{name}: {key} made but transformers makes none");
                continue;
            };
            let g = got.get(key).unwrap_or_else(|| panic!("{name}: no {key}"));
            assert_eq!(g.shape(), want.shape(), "{name}: {key} shape");
            let err = g
                .to_f64_vec()
                .iter()
                .zip(want.to_f64_vec())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            if err > 1e-4 {
                failures.push(format!(
                    "{name} ({backend}, {}): {key} differs from transformers by {err}",
                    kernels.name()
                ));
            }
            worst = worst.max(err);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    worst
}

#[test]
fn pil_backend_matches_transformers() {
    let meta = read_json(&root().join("cases.json")).unwrap();
    assert_eq!(meta["backend"], "pil");
    let reference = read_safetensors(&root().join("reference.safetensors")).unwrap();
    let cases = meta["cases"].as_array().unwrap();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    // The PIL backend does not depend on torch's kernels.
    let worst = check(cases, Backend::Pil, CpuKernels::Avx2, &reference);
    eprintln!("pil: {} cases, max abs error {worst:e}", cases.len());
}

#[test]
fn torchvision_backend_matches_transformers() {
    let dir = root().join("torchvision");
    let meta = read_json(&dir.join("cases.json")).unwrap();
    assert_eq!(meta["backend"], "torchvision");
    let cases = meta["cases"].as_array().unwrap();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let avx2 = read_safetensors(&dir.join("avx2.safetensors")).unwrap();
    let worst = check(cases, Backend::Torchvision, CpuKernels::Avx2, &avx2);
    eprintln!(
        "torchvision (avx2 kernels): {} cases, max abs error {worst:e}",
        cases.len()
    );

    // The default kernels' file holds the cases where their pixels differ; the rest equal the AVX2 ones.
    let default = read_safetensors(&dir.join("default.safetensors")).unwrap();
    let mut reference = avx2.clone();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let differs = default.keys().any(|k| k.starts_with(&format!("{name}.")));
        assert_eq!(case["default_differs"].as_bool(), Some(differs), "{name}");
    }
    assert!(
        default.len() >= 30,
        "{} tensors differ with the default kernels",
        default.len()
    );
    reference.extend(default);
    let worst = check(cases, Backend::Torchvision, CpuKernels::Default, &reference);
    eprintln!(
        "torchvision (default kernels): {} cases, max abs error {worst:e}",
        cases.len()
    );
}

/// The backends differ on these files (else the torchvision references would not test anything the
/// PIL ones do not).
#[test]
fn the_backends_differ() {
    let pil = read_safetensors(&root().join("reference.safetensors")).unwrap();
    let tv = read_safetensors(&root().join("torchvision/avx2.safetensors")).unwrap();
    let differing = tv
        .iter()
        .filter(|(k, t)| {
            let p = &pil[*k];
            p.shape() != t.shape()
                || p.to_f64_vec()
                    .iter()
                    .zip(t.to_f64_vec())
                    .any(|(a, b)| (a - b).abs() > 1e-3)
        })
        .count();
    assert!(differing >= 30, "only {differing} of {} tensors differ", tv.len());
}

/// As in transformers 5.17, the folder does not choose the backend: whatever class name
/// preprocessor_config.json records (the base name both backends save, a hand-written `Pil` name, a
/// legacy `Fast` one, a legacy feature extractor, or none, by config.json's model_type), the processor
/// computes as the torchvision backend, which AutoImageProcessor picks where torchvision is installed,
/// until the caller asks for PIL.
#[test]
fn the_folder_does_not_choose_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let folders = [
        r#"{"image_processor_type": "ViTImageProcessor"}"#,
        r#"{"image_processor_type": "ViTImageProcessorPil"}"#,
        r#"{"image_processor_type": "ViTImageProcessorFast"}"#,
        r#"{"feature_extractor_type": "ViTFeatureExtractor"}"#,
        r#"{"image_processor_type": "ViTImageProcessor", "use_fast": false}"#,
        r#"{}"#,
    ];
    for (i, json) in folders.iter().enumerate() {
        let d = dir.path().join(i.to_string());
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("preprocessor_config.json"), json).unwrap();
        std::fs::write(d.join("config.json"), r#"{"model_type": "vit"}"#).unwrap();
        let proc = ImageProcessor::from_dir(&d).unwrap();
        assert_eq!(proc.backend, Backend::Torchvision, "{json}");
        assert_eq!(proc.with_backend(Backend::Pil).unwrap().backend, Backend::Pil, "{json}");
    }
}
