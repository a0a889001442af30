//! The LLaVA and LLaVA-NeXT fixtures' inputs were made by transformers' LlavaProcessor and
//! LlavaNextProcessor (PIL backend) from fixtures/llava/image.png, the same image rotated 90 degrees,
//! and the prompts of meta.json, padded at the left: hwcov's processors must make the same
//! `input_ids`, `attention_mask`, `pixel_values` and `image_sizes` from the same files.

use std::path::{Path, PathBuf};

use hwcov_core::IoFile;
use hwcov_core::error::read_json;
use hwcov_preprocess::image::{Backend, RgbImage, load_image};
use hwcov_preprocess::llava::{LlavaKind, LlavaProcessor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name)
}

/// PIL's `transpose(Image.Transpose.ROTATE_90)`: a quarter turn counter-clockwise.
fn rotate_90(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width, img.height);
    let mut data = Vec::with_capacity(img.data.len());
    for y in 0..w {
        for x in 0..h {
            let src = (x * w + (w - 1 - y)) * 3;
            data.extend_from_slice(&img.data[src..src + 3]);
        }
    }
    RgbImage::new(h, w, data).unwrap()
}

fn check(name: &str, kind: LlavaKind) {
    let dir = fixture(name);
    let meta = read_json(&dir.join("meta.json")).unwrap();
    let prompts: Vec<String> = serde_json::from_value(meta["prompts"].clone()).unwrap();
    let image = load_image(&dir.join("image.png")).unwrap();
    let images = [image.clone(), rotate_90(&image)];
    let processor = LlavaProcessor::from_dir(&dir, kind, Some(Backend::Pil)).unwrap();
    let got = processor.process(&prompts, &images, true).unwrap().inputs;
    let io = IoFile::read(&dir.join("io.safetensors")).unwrap();
    let mut names: Vec<&String> = got.keys().collect();
    names.sort();
    let mut want: Vec<&String> = io.inputs.keys().collect();
    want.sort();
    assert_eq!(names, want, "{name}: the processor's outputs");
    for (key, expected) in &io.inputs {
        let g = &got[key];
        assert_eq!(g.shape(), expected.shape(), "{name}: {key} shape");
        if key == "pixel_values" {
            let err = g
                .to_f64_vec()
                .iter()
                .zip(expected.to_f64_vec())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(err <= 1e-6, "{name}: pixel_values differ by {err}");
        } else {
            assert_eq!(g, expected, "{name}: {key}");
        }
    }
}

#[test]
fn llava_inputs_match_transformers() {
    check("llava", LlavaKind::Llava);
}

#[test]
fn llava_next_inputs_match_transformers() {
    check("llava-next", LlavaKind::LlavaNext);
}

/// The variant fixtures: the "full" strategy, and other grid pinpoints.
#[test]
fn variant_inputs_match_transformers() {
    check("llava-qwen2-full", LlavaKind::Llava);
    check("llava-next-qwen2", LlavaKind::LlavaNext);
}

/// Every case of fixtures/llava-processor (tools/fixtures/llava_processor.py): other image processors
/// and settings, images of other sizes, several images per prompt, and chat templates.
#[test]
fn processor_cases_match_transformers() {
    let root = fixture("llava-processor");
    let meta = read_json(&root.join("cases.json")).unwrap();
    let reference = hwcov_core::tensor::read_safetensors(&root.join("reference.safetensors")).unwrap();
    let cases = meta["cases"].as_array().unwrap();
    assert!(cases.len() >= 9, "{} cases", cases.len());
    let mut compared = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let kind = match case["processor_class"].as_str().unwrap() {
            "LlavaProcessor" => LlavaKind::Llava,
            "LlavaNextProcessor" => LlavaKind::LlavaNext,
            other => panic!("{name}: {other}"),
        };
        let processor = LlavaProcessor::from_dir(
            &root.join(case["processor"].as_str().unwrap()),
            kind,
            Some(Backend::Pil),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let images: Vec<RgbImage> = case["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| load_image(&fixture("preprocess/images").join(f.as_str().unwrap())).unwrap())
            .collect();
        let prompts: Vec<String> = serde_json::from_value(case["prompts"].clone()).unwrap();
        let mut add_special_tokens = true;
        if let Some(chat) = case.get("chat") {
            let rendered = processor
                .apply_chat_template(chat["text"].as_str().unwrap(), images.len())
                .unwrap()
                .expect("the folder has a chat template");
            assert_eq!(rendered, chat["rendered"].as_str().unwrap(), "{name}: chat template");
            add_special_tokens = !chat["bos"].as_bool().unwrap();
        }
        let got = processor
            .process(&prompts, &images, add_special_tokens)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .inputs;
        for key in ["input_ids", "attention_mask", "pixel_values", "image_sizes"] {
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
            let tol = if key == "pixel_values" { 1e-6 } else { 0.0 };
            assert!(err <= tol, "{name}: {key} differs from transformers by {err}");
            compared += 1;
        }
    }
    assert_eq!(compared, reference.len(), "every reference tensor compared");
}

/// transformers' processor fails on fewer images than image tokens and passes more images on to the
/// model, which then fails; hwcov says so at once, in both cases.
#[test]
fn image_tokens_and_images_must_pair_up() {
    let dir = fixture("llava-next");
    let processor = LlavaProcessor::from_dir(&dir, LlavaKind::LlavaNext, Some(Backend::Pil)).unwrap();
    let image = load_image(&dir.join("image.png")).unwrap();
    let more = processor
        .process(&["<image> once".to_string()], &[image.clone(), image.clone()], true)
        .err()
        .unwrap()
        .to_string();
    assert!(more.contains("1 image token") && more.contains("2 images"), "{more}");
    let fewer = processor
        .process(&["<image> and <image>".to_string()], std::slice::from_ref(&image), true)
        .err()
        .unwrap()
        .to_string();
    assert!(fewer.contains("2 image tokens") && fewer.contains("1 image"), "{fewer}");
    let none = processor
        .process(&["no image token".to_string()], &[image], true)
        .err()
        .unwrap()
        .to_string();
    assert!(none.contains("0 image tokens") && none.contains("`<image>`"), "{none}");
    // Text alone needs no image.
    let text = processor.process(&["just text".to_string()], &[], true).unwrap();
    assert!(!text.inputs.contains_key("pixel_values"));
}

/// A LLaVA-NeXT folder whose image processor is not LlavaNextImageProcessor is refused, naming it.
#[test]
fn llava_next_needs_its_image_processor() {
    let err = LlavaProcessor::from_dir(&fixture("llava"), LlavaKind::LlavaNext, None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("image_processor_type") && err.contains("LlavaNextImageProcessor"),
        "{err}"
    );
}
