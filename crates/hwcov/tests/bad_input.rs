//! Bad input through the `hwcov` binary: every case must exit non-zero with an error that names the
//! file and the field or tensor at fault, and never panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use hwcov::tensor::{read_safetensors, write_safetensors};
use hwcov::{HostTensor, NamedTensors, TensorData};

mod common;
use common::{copy_fixture, fixture};

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn verify(model_dir: &Path, io: &Path) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_hwcov"))
        .args(["verify", "--platform", "cpu", "--model-dir"])
        .arg(model_dir)
        .arg("--io")
        .arg(io)
        .output()
        .unwrap();
    let o = Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!o.stderr.contains("panicked"), "hwcov panicked:\n{}", o.stderr);
    o
}

/// Asserts an error exit (2) whose message holds every one of `needles`.
fn assert_error(o: &Outcome, needles: &[&str]) {
    assert_eq!(
        o.code, 2,
        "expected exit 2, got {}\nstdout: {}\nstderr: {}",
        o.code, o.stdout, o.stderr
    );
    for n in needles {
        assert!(o.stderr.contains(n), "error message lacks `{n}`:\n{}", o.stderr);
    }
}

fn edit_io(dir: &Path, f: impl FnOnce(&mut NamedTensors)) -> PathBuf {
    let path = dir.join("io.safetensors");
    let mut t = read_safetensors(&path).unwrap();
    f(&mut t);
    let out = dir.join("edited-io.safetensors");
    write_safetensors(&out, &t).unwrap();
    out
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn fixtures_verify() {
    for name in ["bert", "vit"] {
        let o = verify(&fixture(name), &fixture(name).join("io.safetensors"));
        assert_eq!(o.code, 0, "{name}: {}{}", o.stdout, o.stderr);
        assert!(o.stdout.contains("VERIFIED"), "{}", o.stdout);
    }
}

#[test]
fn truncated_weights() {
    let d = copy_fixture("bert");
    let w = d.path().join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    assert_error(
        &verify(d.path(), &d.path().join("io.safetensors")),
        &["model.safetensors", "cannot read the weights"],
    );
}

#[test]
fn corrupt_weights_header() {
    let d = copy_fixture("bert");
    let w = d.path().join("model.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    bytes[8..24].copy_from_slice(b"this is not json");
    std::fs::write(&w, &bytes).unwrap();
    assert_error(
        &verify(d.path(), &d.path().join("io.safetensors")),
        &["model.safetensors"],
    );
    // A header length beyond the file.
    std::fs::write(&w, u64::MAX.to_le_bytes()).unwrap();
    assert_error(
        &verify(d.path(), &d.path().join("io.safetensors")),
        &["model.safetensors"],
    );
}

#[test]
fn config_sizes_do_not_match_weights() {
    let d = copy_fixture("bert");
    edit_config(d.path(), |c| c["intermediate_size"] = 40.into());
    assert_error(
        &verify(d.path(), &d.path().join("io.safetensors")),
        &[
            "model.safetensors",
            "config.json",
            "encoder.layer.0.intermediate.dense.weight",
        ],
    );
    let d = copy_fixture("vit");
    edit_config(d.path(), |c| c["image_size"] = 32.into());
    assert_error(
        &verify(d.path(), &d.path().join("io.safetensors")),
        &["model.safetensors", "config.json", "position_embeddings"],
    );
}

#[test]
fn config_field_of_wrong_type_or_value() {
    let d = copy_fixture("bert");
    edit_config(d.path(), |c| c["hidden_size"] = "big".into());
    assert_error(
        &verify(d.path(), &d.path().join("io.safetensors")),
        &["config.json", "hidden_size"],
    );
    let d = copy_fixture("bert");
    edit_config(d.path(), |c| c["hidden_act"] = "swiglu_unknown".into());
    assert_error(
        &verify(d.path(), &d.path().join("io.safetensors")),
        &["config.json", "hidden_act", "swiglu_unknown"],
    );
    let d = copy_fixture("bert");
    edit_config(d.path(), |c| c["num_attention_heads"] = 5.into());
    assert_error(
        &verify(d.path(), &d.path().join("io.safetensors")),
        &["config.json", "num_attention_heads"],
    );
}

#[test]
fn io_missing_an_input() {
    let d = copy_fixture("bert");
    let io = edit_io(d.path(), |t| {
        t.remove("in_input_ids");
    });
    assert_error(
        &verify(d.path(), &io),
        &["edited-io.safetensors", "in_input_ids", "missing"],
    );
}

#[test]
fn input_of_wrong_shape() {
    let d = copy_fixture("bert");
    let io = edit_io(d.path(), |t| {
        t.insert(
            "in_attention_mask".into(),
            HostTensor::i64(vec![2, 3], vec![1; 6]).unwrap(),
        );
    });
    assert_error(
        &verify(d.path(), &io),
        &["edited-io.safetensors", "in_attention_mask", "shape"],
    );

    let d = copy_fixture("vit");
    let io = edit_io(d.path(), |t| {
        t.insert(
            "in_pixel_values".into(),
            HostTensor::f32(vec![1, 3, 8, 8], vec![0.0; 192]).unwrap(),
        );
    });
    assert_error(&verify(d.path(), &io), &["in_pixel_values", "image_size"]);
    let io = edit_io(d.path(), |t| {
        t.insert(
            "in_pixel_values".into(),
            HostTensor::f32(vec![3, 30, 30], vec![0.0; 2700]).unwrap(),
        );
    });
    assert_error(&verify(d.path(), &io), &["in_pixel_values", "rank-4"]);
}

#[test]
fn input_of_wrong_dtype_or_range() {
    let d = copy_fixture("bert");
    let io = edit_io(d.path(), |t| {
        let ids = t["in_input_ids"].clone();
        let floats = ids.to_f64_vec().into_iter().map(|x| x as f32).collect();
        t.insert(
            "in_input_ids".into(),
            HostTensor::f32(ids.shape().to_vec(), floats).unwrap(),
        );
    });
    assert_error(&verify(d.path(), &io), &["in_input_ids", "dtype f32"]);
    let io = edit_io(d.path(), |t| {
        let shape = t["in_input_ids"].shape().to_vec();
        let n = shape.iter().product();
        t.insert("in_input_ids".into(), HostTensor::i64(shape, vec![100_000; n]).unwrap());
    });
    assert_error(&verify(d.path(), &io), &["in_input_ids", "vocab_size"]);

    let d = copy_fixture("vit");
    let io = edit_io(d.path(), |t| {
        t.insert(
            "in_pixel_values".into(),
            HostTensor::new(vec![1, 3, 30, 30], TensorData::U8(vec![0; 2700])).unwrap(),
        );
    });
    assert_error(&verify(d.path(), &io), &["in_pixel_values", "float"]);
}

#[test]
fn model_dir_without_config() {
    let d = copy_fixture("bert");
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    assert_error(&verify(d.path(), &d.path().join("io.safetensors")), &["config.json"]);
    let missing = d.path().join("no-such-folder");
    assert_error(&verify(&missing, &d.path().join("io.safetensors")), &["no-such-folder"]);
}

#[test]
fn config_not_json_or_unknown_model_type() {
    let d = copy_fixture("bert");
    std::fs::write(d.path().join("config.json"), "{ \"model_type\": ").unwrap();
    assert_error(
        &verify(d.path(), &d.path().join("io.safetensors")),
        &["config.json", "invalid JSON"],
    );
    let d = copy_fixture("bert");
    edit_config(d.path(), |c| c["model_type"] = "gpt_neox".into());
    assert_error(
        &verify(d.path(), &d.path().join("io.safetensors")),
        &["config.json", "model_type", "gpt_neox"],
    );
}

#[test]
fn weights_missing_or_pickled_only() {
    let d = copy_fixture("bert");
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    assert_error(
        &verify(d.path(), &d.path().join("io.safetensors")),
        &["model.safetensors", "no weights"],
    );
    std::fs::write(d.path().join("pytorch_model.bin"), b"pickle").unwrap();
    assert_error(
        &verify(d.path(), &d.path().join("io.safetensors")),
        &["pytorch_model.bin", "pickles"],
    );
}

#[test]
fn io_file_corrupt_or_without_outputs() {
    let d = copy_fixture("bert");
    let io = d.path().join("io.safetensors");
    std::fs::write(&io, b"garbage").unwrap();
    assert_error(&verify(d.path(), &io), &["io.safetensors", "not a valid safetensors"]);
    let d = copy_fixture("bert");
    let io = edit_io(d.path(), |t| t.retain(|k, _| k.starts_with("in_")));
    assert_error(&verify(d.path(), &io), &["edited-io.safetensors", "out_"]);
}

/// The comparison can fail: a reference nudged beyond the tolerance makes verify exit 1 and name
/// the output, and an output the handler cannot produce is a failure, not a skip.
#[test]
fn wrong_reference_fails() {
    let d = copy_fixture("bert");
    let io = edit_io(d.path(), |t| {
        let r = t["out_pooler_output"].clone();
        let mut v: Vec<f32> = r.to_f64_vec().into_iter().map(|x| x as f32).collect();
        v[5] += 1e-3;
        t.insert(
            "out_pooler_output".into(),
            HostTensor::f32(r.shape().to_vec(), v).unwrap(),
        );
        t.insert("out_logits".into(), HostTensor::f32(vec![2, 3], vec![0.0; 6]).unwrap());
        // Entries with neither prefix are ignored.
        t.insert("note".into(), HostTensor::i64(vec![1], vec![7]).unwrap());
    });
    let o = verify(d.path(), &io);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("FAIL pooler_output") && o.stdout.contains("mismatched 1"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("FAIL logits") && o.stdout.contains("not produced"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("ok   last_hidden_state"), "{}", o.stdout);
    assert!(!o.stdout.contains("note"), "{}", o.stdout);
    assert!(o.stdout.contains("FAILED: bert on cpu"), "{}", o.stdout);
}

#[test]
fn json_report() {
    let out = Command::new(env!("CARGO_BIN_EXE_hwcov"))
        .args(["verify", "--json", "--model-dir"])
        .arg(fixture("vit"))
        .arg("--io")
        .arg(fixture("vit").join("io.safetensors"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["passed"], true);
    assert_eq!(v["platform"], "cpu");
    assert_eq!(v["outputs"].as_array().unwrap().len(), 2);
    assert!(v["outputs"][0]["max_abs_err"].as_f64().unwrap() < 1e-4);
}

#[test]
fn platforms_lists_all_seven() {
    let out = Command::new(env!("CARGO_BIN_EXE_hwcov"))
        .args(["platforms", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 7);
    assert_eq!(rows[0]["platform"], "cpu");
    assert_eq!(rows[0]["available"], true);
    let required = std::env::var("HWCOV_REQUIRE_PLATFORMS").unwrap_or_default();
    for r in rows {
        let what = if r["available"] == true {
            &r["device"]
        } else {
            &r["reason"]
        };
        assert!(!what.as_str().unwrap().is_empty(), "{r}");
        let name = r["platform"].as_str().unwrap();
        if required.split(',').any(|p| p == name) {
            assert_eq!(r["available"], true, "{name} is required here: {r}");
        }
    }
}

/// Counts near u64::MAX and zeros on `hwcov bench`'s command line: a clear error naming the flag,
/// never a panic or an allocation the host cannot make.
#[test]
fn bench_refuses_shapes_the_model_cannot_take() {
    let bench = |model: &str, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hwcov"))
            .args([
                "bench",
                "--platform",
                "cpu",
                "--iters",
                "1",
                "--warmup",
                "0",
                "--model-dir",
            ])
            .arg(fixture(model))
            .args(extra)
            .output()
            .unwrap();
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let huge = "18446744073709551615";
    assert_error(&bench("bert", &["--batch", huge]), &["--batch", "input elements"]);
    assert_error(&bench("bert", &["--batch", "0"]), &["--batch must be at least 1"]);
    assert_error(&bench("bert", &["--seq", "0"]), &["--seq must be at least 1"]);
    assert_error(&bench("bert", &["--seq", huge]), &["--seq", "max_position_embeddings"]);
    assert_error(
        &bench("qwen2", &["--seq", "8", "--decode", huge]),
        &["--decode", "positions"],
    );
    assert_error(&bench("vit", &["--batch", "100000000"]), &["--batch", "input elements"]);
}
