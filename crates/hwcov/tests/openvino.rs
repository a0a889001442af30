//! Bad input on the OpenVINO platform: each error names the graph file and what is wrong.
//! These need the runtime; `cargo xtask test` installs it and requires it (HWCOV_REQUIRE_PLATFORMS).

use std::path::Path;
use std::process::Command;

mod common;
use common::copy_fixture;

/// Whether the OpenVINO runtime is here; when `cargo xtask test` requires it, its absence fails.
fn runtime_here() -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_hwcov"))
        .args(["platforms", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let here = v
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["platform"] == "openvino" && r["available"] == true);
    let required = std::env::var("HWCOV_REQUIRE_PLATFORMS").unwrap_or_default();
    assert!(
        here || !required.split(',').any(|p| p == "openvino"),
        "OpenVINO is required here: {v}"
    );
    if !here {
        eprintln!("OpenVINO runtime absent: skipped");
    }
    here
}

fn verify(dir: &Path, io: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hwcov"))
        .args(["verify", "--platform", "openvino", "--model-dir"])
        .arg(dir)
        .arg("--io")
        .arg(io)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn unknown_op_names_the_graph_and_the_op() {
    if !runtime_here() {
        return;
    }
    let d = copy_fixture("bert");
    let graph = d.path().join("model.onnx");
    let bytes = std::fs::read(&graph).unwrap();
    // Same length, so the protobuf stays valid: every Softmax node becomes an op no runtime has.
    let patched = replace_all(&bytes, b"Softmax", b"Softmix");
    std::fs::write(&graph, patched).unwrap();
    let (code, err) = verify(d.path(), &d.path().join("io.safetensors"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("model.onnx") && err.contains("Softmix"), "{err}");
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = hay.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn inputs_that_do_not_fit_the_graph() {
    if !runtime_here() {
        return;
    }
    use hwcov::tensor::{read_safetensors, write_safetensors};
    let d = copy_fixture("vit");
    let mut io = read_safetensors(&d.path().join("io.safetensors")).unwrap();
    io.remove("in_pixel_values");
    io.insert(
        "in_pixel_mask".into(),
        hwcov::HostTensor::i64(vec![1, 2], vec![1, 1]).unwrap(),
    );
    write_safetensors(&d.path().join("no-input.safetensors"), &io).unwrap();
    let (code, err) = verify(d.path(), &d.path().join("no-input.safetensors"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("in_pixel_values") && err.contains("model.onnx"), "{err}");

    io.insert(
        "in_pixel_values".into(),
        hwcov::HostTensor::f32(vec![1, 3, 8, 8], vec![0.0; 192]).unwrap(),
    );
    write_safetensors(&d.path().join("small.safetensors"), &io).unwrap();
    let (code, err) = verify(d.path(), &d.path().join("small.safetensors"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("model.onnx"), "{err}");
}

/// A protobuf field: key, then the payload.
fn field(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
    varint(out, (number << 3) | 2);
    varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

fn varint_field(out: &mut Vec<u8>, number: u64, value: u64) {
    varint(out, number << 3);
    varint(out, value);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// An ONNX model `y = x + w` whose initializer `w` lives in an external file that is not there.
fn model_with_external_data(location: &str) -> Vec<u8> {
    let value_info = |name: &str| {
        let mut dim = Vec::new();
        varint_field(&mut dim, 1, 2);
        let mut shape = Vec::new();
        field(&mut shape, 1, &dim);
        let mut tensor_type = Vec::new();
        varint_field(&mut tensor_type, 1, 1);
        field(&mut tensor_type, 2, &shape);
        let mut ty = Vec::new();
        field(&mut ty, 1, &tensor_type);
        let mut vi = Vec::new();
        field(&mut vi, 1, name.as_bytes());
        field(&mut vi, 2, &ty);
        vi
    };
    let mut entry = Vec::new();
    field(&mut entry, 1, b"location");
    field(&mut entry, 2, location.as_bytes());
    let mut init = Vec::new();
    varint_field(&mut init, 1, 2);
    varint_field(&mut init, 2, 1);
    field(&mut init, 8, b"w");
    field(&mut init, 13, &entry);
    varint_field(&mut init, 14, 1);
    let mut node = Vec::new();
    field(&mut node, 1, b"x");
    field(&mut node, 1, b"w");
    field(&mut node, 2, b"y");
    field(&mut node, 4, b"Add");
    let mut graph = Vec::new();
    field(&mut graph, 1, &node);
    field(&mut graph, 2, b"g");
    field(&mut graph, 5, &init);
    field(&mut graph, 11, &value_info("x"));
    field(&mut graph, 12, &value_info("y"));
    let mut opset = Vec::new();
    varint_field(&mut opset, 2, 17);
    let mut model = Vec::new();
    varint_field(&mut model, 1, 8);
    field(&mut model, 7, &graph);
    field(&mut model, 8, &opset);
    model
}

#[test]
fn missing_external_data_names_the_file() {
    if !runtime_here() {
        return;
    }
    let d = copy_fixture("vit");
    std::fs::write(d.path().join("model.onnx"), model_with_external_data("weights.bin")).unwrap();
    let (code, err) = verify(d.path(), &d.path().join("io.safetensors"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("weights.bin") && err.contains("external data"), "{err}");
}

#[test]
fn ir_without_weights_names_the_bin() {
    if !runtime_here() {
        return;
    }
    let d = copy_fixture("vit");
    std::fs::remove_file(d.path().join("model.onnx")).unwrap();
    std::fs::write(d.path().join("openvino_model.xml"), "<net name=\"m\" version=\"11\"/>").unwrap();
    let (code, err) = verify(d.path(), &d.path().join("io.safetensors"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("openvino_model.bin"), "{err}");
}

#[test]
fn a_runtime_that_is_not_there_says_how_to_get_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_hwcov"))
        .args(["platforms"])
        .env("OPENVINO_LIB", "/nonexistent/libopenvino_c.so.2641")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().find(|l| l.starts_with("openvino")).unwrap();
    assert!(
        row.contains("unavailable") && row.contains("/nonexistent/libopenvino_c.so.2641"),
        "{row}"
    );
}

/// optimum's seq2seq layout (onnx/encoder_model.onnx + onnx/decoder_model.onnx) runs too, generation
/// included: the fixture folders without their single graph.
#[test]
fn encoder_decoder_graphs_verify() {
    if !runtime_here() {
        return;
    }
    for name in ["t5", "whisper"] {
        let d = copy_fixture(name);
        std::fs::remove_file(d.path().join("model.onnx")).unwrap();
        let (code, err) = verify(d.path(), &d.path().join("io.safetensors"));
        assert_eq!(code, 0, "{name}: {err}");
    }
}
