//! Bad image, video and vision-model input through the `hwcov` binary: each case exits 2 with an
//! error that names the file and the field or tensor at fault, and never panics.

use std::path::{Path, PathBuf};
use std::process::Command;

use hwcov::tensor::{read_safetensors, write_safetensors};
use hwcov::{HostTensor, NamedTensors};

mod common;
use common::copy_fixture;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn image(name: &str) -> PathBuf {
    fixtures().join("preprocess/images").join(name)
}

fn hwcov(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hwcov")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "hwcov panicked:\n{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

fn assert_error(args: &[&str], needles: &[&str]) {
    let (code, stderr) = hwcov(args);
    assert_eq!(code, 2, "expected exit 2 for {args:?}, got {code}: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "error for {args:?} lacks `{n}`:\n{stderr}");
    }
}

fn features(model_dir: &Path, input: &[&str], dir: &Path) -> Vec<String> {
    let mut args = vec![
        "features".to_string(),
        "--model-dir".to_string(),
        model_dir.display().to_string(),
    ];
    args.extend(input.iter().map(|s| s.to_string()));
    args.push("--out".into());
    args.push(dir.join("out.safetensors").display().to_string());
    args
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn unreadable_truncated_and_foreign_images_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let vit = fixtures().join("vit");
    let check = |file: &Path, needles: &[&str]| {
        let args = features(&vit, &["--image", &s(file)], dir.path());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_error(&args, needles);
    };
    check(&dir.path().join("missing.png"), &["missing.png"]);

    for (name, src) in [("cut.png", "rgb.png"), ("cut.jpg", "photo.jpg")] {
        let bytes = std::fs::read(image(src)).unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        check(&p, &[name, "truncated"]);
    }

    let p = dir.path().join("notes.png");
    std::fs::write(&p, "these are not pixels").unwrap();
    check(&p, &["notes.png", "not an image format"]);

    let p = dir.path().join("empty.jpg");
    std::fs::write(&p, b"").unwrap();
    check(&p, &["empty.jpg", "empty"]);

    check(&fixtures().join("preprocess/bad/cmyk.jpg"), &["cmyk.jpg", "CMYK"]);
}

/// A PNG of 0 x 0 pixels: its header is valid in form but holds no image.
#[test]
fn zero_sized_image_names_the_file() {
    fn chunk(tag: &[u8], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(tag);
        c.extend_from_slice(data);
        let crc = crc32(&[tag, data].concat());
        c.extend_from_slice(&crc.to_be_bytes());
        c
    }
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &[0, 0, 0, 0, 0, 0, 0, 0, 8, 2, 0, 0, 0]));
    png.extend(chunk(b"IEND", b""));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("zero.png");
    std::fs::write(&p, png).unwrap();
    let args = features(&fixtures().join("vit"), &["--image", &s(&p)], dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_error(&args, &["zero.png"]);
}

/// Grayscale, RGBA and 16-bit PNGs are converted as PIL converts them (documented in
/// hwcov_preprocess::image); they are not errors.
#[test]
fn grayscale_rgba_and_16_bit_pngs_are_converted() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "gray.png",
        "rgba.png",
        "gray16.png",
        "rgb16.png",
        "palette.png",
        "gray.jpg",
    ] {
        let args = features(&fixtures().join("clip"), &["--image", &s(&image(f))], dir.path());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = hwcov(&args);
        assert_eq!(code, 0, "{f}: {stderr}");
        let t = read_safetensors(&dir.path().join("out.safetensors")).unwrap();
        assert_eq!(t["pixel_values"].shape(), &[1, 3, 30, 30], "{f}");
    }
}

#[test]
fn short_or_empty_videos_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let xclip = fixtures().join("xclip");
    // video.gif has 8 frames.
    let gif = image("video.gif");
    let args = features(&xclip, &["--video", &s(&gif), "--num-frames", "20"], dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_error(&args, &["video.gif", "8 frames", "20"]);

    let empty = dir.path().join("no-frames");
    std::fs::create_dir(&empty).unwrap();
    let args = features(&xclip, &["--video", &s(&empty)], dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_error(&args, &["no-frames", "no image files"]);

    let still = image("rgb.png");
    let args = features(&xclip, &["--video", &s(&still)], dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_error(&args, &["rgb.png", "not a video"]);

    // The model takes 3 frames; a folder of 2 is too short.
    let frames = dir.path().join("two");
    std::fs::create_dir(&frames).unwrap();
    for i in 0..2 {
        std::fs::copy(image("rgb.png"), frames.join(format!("{i}.png"))).unwrap();
    }
    let args = features(&xclip, &["--video", &s(&frames)], dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_error(&args, &["two", "2 frames", "3"]);
}

#[test]
fn bad_processor_configs_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let img = s(&image("rgb.png"));
    let run = |model_dir: &Path, needles: &[&str]| {
        let args = features(model_dir, &["--image", &img], dir.path());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_error(&args, needles);
    };
    let none = dir.path().join("none");
    std::fs::create_dir(&none).unwrap();
    run(&none, &["preprocessor_config.json"]);

    let write = |name: &str, json: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("preprocessor_config.json"), json).unwrap();
        d
    };
    run(
        &write("other", r#"{"image_processor_type": "SiglipImageProcessor"}"#),
        &[
            "preprocessor_config.json",
            "image_processor_type",
            "SiglipImageProcessor",
        ],
    );
    run(
        &write(
            "size",
            r#"{"image_processor_type": "ViTImageProcessor", "size": {"edge": 3}}"#,
        ),
        &["preprocessor_config.json", "`size`"],
    );
    run(
        &write(
            "resample",
            r#"{"image_processor_type": "CLIPImageProcessor", "resample": 9}"#,
        ),
        &["preprocessor_config.json", "`resample`"],
    );
    run(
        &write(
            "mean",
            r#"{"image_processor_type": "ViTImageProcessor", "image_mean": [0.5, 0.5]}"#,
        ),
        &["preprocessor_config.json", "`image_mean`"],
    );
    run(
        &write("broken", "{ not json"),
        &["preprocessor_config.json", "invalid JSON"],
    );
}

fn edit_io(dir: &Path, f: impl FnOnce(&mut NamedTensors)) -> String {
    let mut t = read_safetensors(&dir.join("io.safetensors")).unwrap();
    f(&mut t);
    let out = dir.join("edited-io.safetensors");
    write_safetensors(&out, &t).unwrap();
    s(&out)
}

fn verify(model_dir: &Path, io: &str, needles: &[&str]) {
    assert_error(&["verify", "--model-dir", &s(model_dir), "--io", io], needles);
}

#[test]
fn wrong_pixel_values_name_the_tensor() {
    let d = copy_fixture("clip");
    let io = edit_io(d.path(), |t| {
        t.insert(
            "in_pixel_values".into(),
            HostTensor::f32(vec![1, 3, 16, 16], vec![0.0; 768]).unwrap(),
        );
    });
    verify(d.path(), &io, &["pixel_values", "image_size"]);

    let d = copy_fixture("xclip");
    let io = edit_io(d.path(), |t| {
        t.insert(
            "in_pixel_values".into(),
            HostTensor::f32(vec![2, 4, 3, 30, 30], vec![0.0; 2 * 4 * 3 * 900]).unwrap(),
        );
    });
    verify(d.path(), &io, &["pixel_values", "num_frames"]);

    let d = copy_fixture("detr");
    let io = edit_io(d.path(), |t| {
        t.insert(
            "in_pixel_mask".into(),
            HostTensor::i64(vec![2, 4, 4], vec![1; 32]).unwrap(),
        );
    });
    verify(d.path(), &io, &["pixel_mask", "shape"]);
}

#[test]
fn bad_vision_configs_name_the_field() {
    let edit = |d: &Path, f: &dyn Fn(&mut serde_json::Value)| {
        let path = d.join("config.json");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    };
    let io = |d: &Path| s(&d.join("io.safetensors"));

    let d = copy_fixture("detr");
    edit(d.path(), &|c| {
        c.as_object_mut().unwrap().remove("backbone_config");
    });
    verify(d.path(), &io(d.path()), &["config.json", "backbone_config", "timm"]);

    let d = copy_fixture("detr");
    edit(d.path(), &|c| c["backbone_config"]["layer_type"] = "wide".into());
    verify(d.path(), &io(d.path()), &["config.json", "backbone_config.layer_type"]);

    let d = copy_fixture("clip");
    edit(d.path(), &|c| c["vision_config"]["num_attention_heads"] = 5.into());
    verify(
        d.path(),
        &io(d.path()),
        &["config.json", "vision_config.num_attention_heads"],
    );

    let d = copy_fixture("xclip");
    edit(d.path(), &|c| c["vision_config"]["mit_hidden_size"] = 48.into());
    verify(
        d.path(),
        &io(d.path()),
        &["config.json", "vision_config.mit_hidden_size"],
    );
}

#[test]
fn tasks_reject_inputs_they_cannot_use() {
    let img = s(&image("rgb.png"));
    let gif = s(&image("video.gif"));
    let vit = s(&fixtures().join("vit"));
    let clip = s(&fixtures().join("clip"));
    let xclip = s(&fixtures().join("xclip"));
    assert_error(&["run", "--model-dir", &vit, "--video", &gif], &["--video"]);
    assert_error(
        &["run", "--model-dir", &vit, "--image", &img, "--text", "cat"],
        &["--text"],
    );
    assert_error(&["run", "--model-dir", &clip, "--image", &img], &["--text"]);
    assert_error(
        &[
            "run",
            "--model-dir",
            &clip,
            "--image",
            &img,
            "--text",
            "cat",
            "--hypothesis-template",
            "no slot",
        ],
        &["--hypothesis-template"],
    );
    assert_error(&["run", "--model-dir", &xclip, "--text", "cooking"], &["--video"]);
}

/// An input the model does not take is an error, not silently left out.
#[test]
fn unknown_inputs_name_the_tensor() {
    let d = copy_fixture("clip");
    let io = edit_io(d.path(), |t| {
        let ids = t["in_input_ids"].clone();
        t.insert("in_token_type_ids".into(), ids);
    });
    verify(d.path(), &io, &["in_token_type_ids", "not an input"]);

    let d = copy_fixture("detr");
    let io = edit_io(d.path(), |t| {
        t.insert("in_labels".into(), HostTensor::i64(vec![1], vec![0]).unwrap());
    });
    verify(d.path(), &io, &["in_labels", "not an input"]);
}

/// A backend name that is not transformers', a filter the torchvision backend cannot resize with,
/// and a backend for a model without images.
#[test]
fn bad_image_backends_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let img = s(&image("rgb.png"));
    let vit = fixtures().join("preprocess/processors/vit");
    let args = features(&vit, &["--image", &img, "--image-backend", "fast"], dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_error(&args, &["fast", "pil or torchvision"]);

    // transformers' torchvision backend fails on BOX (torch's interpolate has no such mode); the PIL
    // backend resizes with it.
    let boxed = fixtures().join("preprocess/processors/vit-box");
    let args = features(&boxed, &["--image", &img], dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_error(&args, &["preprocessor_config.json", "`resample`", "Box", "PIL backend"]);
    let args = features(&boxed, &["--image", &img, "--image-backend", "pil"], dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stderr) = hwcov(&args);
    assert_eq!(code, 0, "{stderr}");

    let bert = s(&fixtures().join("bert"));
    assert_error(
        &["run", "--model-dir", &bert, "--text", "a dog", "--image-backend", "pil"],
        &["--image-backend", "images"],
    );
}
