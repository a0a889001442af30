//! LLaVA and LLaVA-NeXT end to end through the `hwcov` binary: `hwcov run` against what transformers'
//! processor, chat template and greedy `generate()` give (fixtures/llava-processor/run.json), and bad
//! input: every case exits 2 with an error that names the file, field or tensor at fault.

use std::path::{Path, PathBuf};
use std::process::Command;

use hwcov::tensor::{read_safetensors, write_safetensors};
use hwcov::{HostTensor, NamedTensors};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn image(name: &str) -> String {
    s(&fixtures().join("preprocess/images").join(name))
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn hwcov(args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_hwcov")).args(args).output().unwrap();
    let o = Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!o.stderr.contains("panicked"), "hwcov panicked:\n{}", o.stderr);
    o
}

fn assert_error(args: &[&str], needles: &[&str]) {
    let o = hwcov(args);
    assert_eq!(
        o.code, 2,
        "expected exit 2 for {args:?}\nstdout: {}\nstderr: {}",
        o.stdout, o.stderr
    );
    for n in needles {
        assert!(o.stderr.contains(n), "error for {args:?} lacks `{n}`:\n{}", o.stderr);
    }
}

fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

fn edit_io(dir: &Path, f: impl FnOnce(&mut NamedTensors)) -> String {
    let mut t = read_safetensors(&dir.join("io.safetensors")).unwrap();
    f(&mut t);
    let out = dir.join("edited-io.safetensors");
    write_safetensors(&out, &t).unwrap();
    s(&out)
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn verify_error(dir: &Path, io: &str, needles: &[&str]) {
    assert_error(&["verify", "--model-dir", &s(dir), "--io", io], needles);
}

/// The image token id of the fixtures' tokenizer (config.json's image_token_index).
const IMAGE_TOKEN: i64 = 3;

/// The models.toml fixtures, and the variants: a Qwen2 language model with two feature layers and the
/// "full" strategy (llava-qwen2-full), and with up to 3x3 tiles (llava-next-qwen2).
#[test]
fn fixtures_verify() {
    for name in ["llava", "llava-next", "llava-qwen2-full", "llava-next-qwen2"] {
        let dir = fixtures().join(name);
        let o = hwcov(&[
            "verify",
            "--model-dir",
            &s(&dir),
            "--io",
            &s(&dir.join("io.safetensors")),
        ]);
        assert_eq!(o.code, 0, "{name}: {}{}", o.stdout, o.stderr);
        assert!(
            o.stdout.contains("VERIFIED") && o.stdout.contains("generated"),
            "{}",
            o.stdout
        );
    }
}

/// `hwcov run` with the llava-1.5 chat template gives transformers' answer: the same new tokens and
/// the same text. rgb.png (64x48) is larger than every grid pinpoint of the LLaVA-NeXT fixture.
#[test]
fn run_answers_as_transformers() {
    let runs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("llava-processor/run.json")).unwrap()).unwrap();
    let template = fixtures().join("llava-processor/llava-pad/chat_template.jinja");
    for case in runs.as_array().unwrap() {
        let d = copy_fixture(case["fixture"].as_str().unwrap());
        std::fs::copy(&template, d.path().join("chat_template.jinja")).unwrap();
        let max_new = case["max_new_tokens"].to_string();
        let o = hwcov(&[
            "run",
            "--model-dir",
            &s(d.path()),
            "--image",
            &image(case["image"].as_str().unwrap()),
            "--text",
            case["text"].as_str().unwrap(),
            "--max-new-tokens",
            &max_new,
            "--json",
        ]);
        assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
        let got: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(got["prompt"], case["prompt"], "{case}");
        assert_eq!(got["token_ids"], case["new_token_ids"], "{case}");
        assert_eq!(got["text"], case["answer"], "{case}");
        assert_eq!(got["chat_template"], true);
    }
}

/// Without a chat template the text goes as it is; the image token is put at its start where it
/// has none.
#[test]
fn run_without_chat_template() {
    let dir = fixtures().join("llava");
    let run = |text: &str| {
        let o = hwcov(&[
            "run",
            "--model-dir",
            &s(&dir),
            "--image",
            &image("rgb.png"),
            "--text",
            text,
            "--max-new-tokens",
            "3",
            "--json",
        ]);
        assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
        serde_json::from_str::<serde_json::Value>(&o.stdout).unwrap()
    };
    let added = run("Describe it.");
    assert_eq!(added["prompt"], "<image>\nDescribe it.");
    assert_eq!(added["image_tokens"], 16);
    assert_eq!(added["chat_template"], false);
    let given = run("<image>\nDescribe it.");
    assert_eq!(given["token_ids"], added["token_ids"]);
}

#[test]
fn run_bad_requests() {
    let dir = s(&fixtures().join("llava"));
    assert_error(&["run", "--model-dir", &dir, "--text", "What is this?"], &["--image"]);
    assert_error(&["run", "--model-dir", &dir, "--image", &image("rgb.png")], &["--text"]);
    // Two image tokens for the one image.
    assert_error(
        &[
            "run",
            "--model-dir",
            &dir,
            "--image",
            &image("rgb.png"),
            "--text",
            "<image> and <image>",
        ],
        &["2 image tokens", "<image>", "1 image"],
    );
    let bad = fixtures().join("preprocess/bad/cmyk.jpg");
    assert_error(
        &["run", "--model-dir", &dir, "--image", &s(&bad), "--text", "Hi"],
        &["cmyk.jpg"],
    );
    // With a chat template the image token must not be in the text.
    let d = copy_fixture("llava");
    std::fs::copy(
        fixtures().join("llava-processor/llava-pad/chat_template.jinja"),
        d.path().join("chat_template.jinja"),
    )
    .unwrap();
    assert_error(
        &[
            "run",
            "--model-dir",
            &s(d.path()),
            "--image",
            &image("rgb.png"),
            "--text",
            "<image> what?",
        ],
        &["chat template", "--no-chat"],
    );
    // No processor_config.json: the processor cannot count the image tokens.
    let d = copy_fixture("llava");
    std::fs::remove_file(d.path().join("processor_config.json")).unwrap();
    assert_error(
        &[
            "run",
            "--model-dir",
            &s(d.path()),
            "--image",
            &image("rgb.png"),
            "--text",
            "Hi",
        ],
        &["processor_config.json", "patch_size"],
    );
}

#[test]
fn image_tokens_must_match_the_images() {
    // No image token in the prompt, but an image.
    let d = copy_fixture("llava");
    let io = edit_io(d.path(), |t| {
        let ids = &t["in_input_ids"];
        let v: Vec<i64> = ids
            .to_i64_vec()
            .unwrap()
            .into_iter()
            .map(|x| if x == IMAGE_TOKEN { 5 } else { x })
            .collect();
        t.insert("in_input_ids".into(), HostTensor::i64(ids.shape().to_vec(), v).unwrap());
    });
    verify_error(d.path(), &io, &["in_pixel_values", "no image token"]);

    // Image tokens, but no image.
    let io = edit_io(d.path(), |t| {
        t.remove("in_pixel_values");
    });
    verify_error(d.path(), &io, &["in_input_ids", "32 image tokens", "no pixel_values"]);

    // More images than the prompts' image tokens take.
    let io = edit_io(d.path(), |t| {
        t.insert(
            "in_pixel_values".into(),
            HostTensor::f32(vec![3, 3, 16, 16], vec![0.1; 3 * 768]).unwrap(),
        );
    });
    verify_error(
        d.path(),
        &io,
        &[
            "in_input_ids",
            "32 image tokens",
            "3 images",
            "48 image features",
            "do not match",
        ],
    );

    // Pixels of another size than the vision tower's.
    let io = edit_io(d.path(), |t| {
        t.insert(
            "in_pixel_values".into(),
            HostTensor::f32(vec![2, 3, 20, 20], vec![0.1; 2 * 1200]).unwrap(),
        );
    });
    verify_error(d.path(), &io, &["in_pixel_values", "vision_config.image_size"]);

    // LLaVA takes no image_sizes.
    let io = edit_io(d.path(), |t| {
        t.insert(
            "in_image_sizes".into(),
            HostTensor::i64(vec![2, 2], vec![30, 40, 40, 30]).unwrap(),
        );
    });
    verify_error(d.path(), &io, &["in_image_sizes", "not an input"]);
}

#[test]
fn llava_next_image_inputs_are_checked() {
    let d = copy_fixture("llava-next");
    let io = edit_io(d.path(), |t| {
        t.remove("in_image_sizes");
    });
    verify_error(d.path(), &io, &["in_image_sizes", "missing"]);

    let io = edit_io(d.path(), |t| {
        t.insert(
            "in_image_sizes".into(),
            HostTensor::i64(vec![1, 2], vec![30, 40]).unwrap(),
        );
    });
    verify_error(d.path(), &io, &["in_image_sizes", "1 sizes for the 2 images"]);

    let io = edit_io(d.path(), |t| {
        t.insert(
            "in_image_sizes".into(),
            HostTensor::i64(vec![2, 2], vec![30, 40, 0, 30]).unwrap(),
        );
    });
    verify_error(d.path(), &io, &["in_image_sizes", "row 1"]);

    // Another size needs another number of image tokens: 16x16 picks the 16x32 grid (3 tiles).
    let io = edit_io(d.path(), |t| {
        t.insert(
            "in_image_sizes".into(),
            HostTensor::i64(vec![2, 2], vec![30, 40, 16, 16]).unwrap(),
        );
    });
    verify_error(
        d.path(),
        &io,
        &["in_input_ids", "image features and image tokens do not match"],
    );

    // Fewer tiles than the image sizes take.
    let io = edit_io(d.path(), |t| {
        let px = &t["in_pixel_values"];
        let v = px.to_f64_vec();
        let per_tile = 3 * 16 * 16;
        let mut kept = Vec::new();
        for image in v.chunks(5 * per_tile) {
            kept.extend(image[..3 * per_tile].iter().map(|&x| x as f32));
        }
        t.insert(
            "in_pixel_values".into(),
            HostTensor::f32(vec![2, 3, 3, 16, 16], kept).unwrap(),
        );
    });
    verify_error(d.path(), &io, &["in_pixel_values", "3 tiles per image", "takes 5"]);

    // All tiles in one batch (4-D), as transformers also takes them: the same result.
    let io = edit_io(d.path(), |t| {
        let px = &t["in_pixel_values"];
        let v: Vec<f32> = px.to_f64_vec().into_iter().map(|x| x as f32).collect();
        t.insert(
            "in_pixel_values".into(),
            HostTensor::f32(vec![10, 3, 16, 16], v).unwrap(),
        );
    });
    let o = hwcov(&["verify", "--model-dir", &s(d.path()), "--io", &io]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let io = edit_io(d.path(), |t| {
        t.insert(
            "in_pixel_values".into(),
            HostTensor::f32(vec![9, 3, 16, 16], vec![0.0; 9 * 768]).unwrap(),
        );
    });
    verify_error(d.path(), &io, &["in_pixel_values", "9 tiles", "take 10"]);
}

/// A fixture, an edit of its config.json, and what the error must say.
type ConfigCase = (&'static str, fn(&mut serde_json::Value), &'static [&'static str]);

#[test]
fn bad_llava_configs_name_the_field() {
    let cases: [ConfigCase; 7] = [
        (
            "llava",
            |c| c["vision_feature_layer"] = serde_json::json!(-4),
            &["vision_feature_layer", "-4"],
        ),
        (
            "llava",
            |c| c["vision_feature_layer"] = serde_json::json!([]),
            &["vision_feature_layer", "empty"],
        ),
        (
            "llava",
            |c| c["vision_feature_select_strategy"] = serde_json::json!("cls"),
            &["vision_feature_select_strategy"],
        ),
        (
            "llava",
            |c| c["text_config"]["model_type"] = serde_json::json!("gpt2"),
            &["text_config.model_type", "gpt2"],
        ),
        (
            "llava",
            |c| c["vision_config"]["model_type"] = serde_json::json!("siglip_vision_model"),
            &["vision_config.model_type", "siglip_vision_model"],
        ),
        (
            "llava-next",
            |c| c["vision_feature_select_strategy"] = serde_json::json!("full"),
            &["vision_feature_select_strategy", "full"],
        ),
        (
            "llava-next",
            |c| c["image_grid_pinpoints"] = serde_json::json!([[16, 24]]),
            &["image_grid_pinpoints", "[16, 24]"],
        ),
    ];
    for (name, edit, needles) in cases {
        let d = copy_fixture(name);
        edit_config(d.path(), edit);
        verify_error(d.path(), &s(&d.path().join("io.safetensors")), needles);
        assert_error(
            &[
                "verify",
                "--model-dir",
                &s(d.path()),
                "--io",
                &s(&d.path().join("io.safetensors")),
            ],
            &["config.json"],
        );
    }
    // The projector's width follows the number of feature layers: two layers need other weights.
    let d = copy_fixture("llava");
    edit_config(d.path(), |c| c["vision_feature_layer"] = serde_json::json!([-2, -1]));
    verify_error(
        d.path(),
        &s(&d.path().join("io.safetensors")),
        &["model.safetensors", "config.json"],
    );
}

/// `hwcov features` makes LLaVA-NeXT's pixel_values and image_sizes as its processor does.
#[test]
fn features_of_llava_next() {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("f.safetensors");
    let dir = fixtures().join("llava-next");
    let o = hwcov(&[
        "features",
        "--model-dir",
        &s(&dir),
        "--image",
        &s(&dir.join("image.png")),
        "--out",
        &s(&path),
    ]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let t = read_safetensors(&path).unwrap();
    let io = read_safetensors(&dir.join("io.safetensors")).unwrap();
    assert_eq!(t["image_sizes"].to_i64_vec().unwrap(), vec![30, 40]);
    let want = io["in_pixel_values"].to_f64_vec();
    assert_eq!(t["pixel_values"].shape(), &[1, 5, 3, 16, 16]);
    assert_eq!(t["pixel_values"].to_f64_vec(), want[..5 * 768].to_vec());
}
