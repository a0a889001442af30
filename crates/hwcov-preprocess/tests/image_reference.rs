//! hwcov's image and video preprocessing against transformers' image processors (PIL backend) on real
//! PNG, JPEG and GIF files: every case of fixtures/preprocess/cases.json, whose reference tensors
//! tools/fixtures/preprocess.py made with transformers.

use std::path::{Path, PathBuf};

use hwcov_core::error::read_json;
use hwcov_core::tensor::read_safetensors;
use hwcov_preprocess::image::{ImageProcessor, load_image};
use hwcov_preprocess::video::load_video;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/preprocess")
}

#[test]
fn pixel_values_match_transformers() {
    let meta = read_json(&root().join("cases.json")).unwrap();
    let reference = read_safetensors(&root().join("reference.safetensors")).unwrap();
    let cases = meta["cases"].as_array().unwrap();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let mut worst = 0f64;
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let dir = root().join("processors").join(case["processor"].as_str().unwrap());
        let proc = ImageProcessor::from_dir(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = if let Some(video) = case["video"].as_str() {
            let n = case["num_frames"].as_u64().unwrap() as usize;
            let frames = load_video(&root().join("images").join(video), Some(n)).unwrap();
            proc.preprocess_videos(&[frames]).unwrap()
        } else {
            let images: Vec<_> = case["images"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| load_image(&root().join("images").join(f.as_str().unwrap())).unwrap())
                .collect();
            proc.preprocess(&images).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        for key in ["pixel_values", "pixel_mask"] {
            let want = reference.get(&format!("{name}.{key}"));
            let Some(want) = want else {
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
                failures.push(format!("{name}: {key} differs from transformers by {err}"));
            }
            worst = worst.max(err);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{} cases, max abs error {worst:e}", cases.len());
}
