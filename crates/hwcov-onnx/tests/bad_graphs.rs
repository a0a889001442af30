//! Bad graphs (fixtures/bad-graphs, made by tools/fixtures/bad_graphs.py) are refused with an error
//! that names the node or file at fault: an unknown op, external data that is missing, short, or
//! outside the model's folder (by `..`, an absolute path or a symbolic link), a shape that depends
//! on the values of the input, a cycle, subgraphs nested without end, an attribute longer than the file.

use std::path::{Path, PathBuf};

use hwcov_core::{DType, Error};
use hwcov_onnx::ir::ValueType;
use hwcov_onnx::{Model, Program};

fn bad(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/bad-graphs")
        .join(case)
        .join("model.onnx")
}

/// The error of specializing `case` for an input x of 2 x 3 floats.
fn plan_error(case: &str) -> Error {
    let program = Program::load(&bad(case)).expect("the file itself reads");
    let x = vec![("x".to_string(), ValueType::new(DType::F32, vec![2, 3]))];
    program.plan(&x).expect_err("must be refused")
}

fn load_error(case: &str) -> String {
    Model::load(&bad(case)).expect_err("must be refused").to_string()
}

#[test]
fn an_unknown_op_is_unsupported_naming_op_and_node() {
    let e = plan_error("unknown_op");
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("FooBar") && msg.contains("the_foobar"), "{msg}");
}

#[test]
fn missing_external_data_names_the_file() {
    let msg = load_error("missing_external");
    assert!(msg.contains("weights.bin") && msg.contains("missing"), "{msg}");
}

#[test]
fn external_data_outside_the_folder_is_refused() {
    let msg = load_error("escaping_external");
    assert!(msg.contains("../outside.bin") && msg.contains("`..`"), "{msg}");
    let msg = load_error("absolute_external");
    assert!(msg.contains("/etc/hostname") && msg.contains("absolute path"), "{msg}");
}

#[test]
fn external_data_through_a_symlink_leaving_the_folder_is_refused() {
    let root = std::env::temp_dir().join(format!("hwcov-bad-graphs-{}", std::process::id()));
    let (inside, outside) = (root.join("model"), root.join("elsewhere"));
    std::fs::create_dir_all(&inside).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::copy(bad("symlink_external"), inside.join("model.onnx")).unwrap();
    std::fs::write(outside.join("secret.bin"), [0u8; 24]).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.bin"), inside.join("link.bin")).unwrap();
    let msg = Model::load(&inside.join("model.onnx")).unwrap_err().to_string();
    std::fs::remove_dir_all(&root).unwrap();
    assert!(msg.contains("link.bin") && msg.contains("symbolic link"), "{msg}");
}

#[test]
fn external_data_shorter_than_its_range_names_the_file() {
    let model = Model::load(&bad("short_external")).expect("the location itself is fine");
    let w = model.graph.initializers.get("w").expect("initializer w");
    let msg = model.tensor(w).unwrap_err().to_string();
    assert!(msg.contains("weights.bin") && msg.contains("past the end"), "{msg}");
    // Loading for a device reads it, and says the same.
    let msg = Program::load(&bad("short_external"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("weights.bin"), "{msg}");
}

#[test]
fn a_shape_that_depends_on_the_values_names_the_node() {
    let msg = plan_error("data_dependent_shape").to_string();
    assert!(
        msg.contains("reshape_by_value") && msg.contains("cannot be inferred"),
        "{msg}"
    );
}

#[test]
fn a_cycle_names_the_node() {
    let msg = plan_error("cycle").to_string();
    assert!(
        msg.contains("first") && msg.contains("produced by no node before it"),
        "{msg}"
    );
}

/// A protobuf length-delimited field: key, length, bytes.
fn field(number: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for mut x in [(number << 3) | 2, bytes.len() as u64] {
        while x >= 0x80 {
            out.push((x as u8) | 0x80);
            x >>= 7;
        }
        out.push(x as u8);
    }
    out.extend_from_slice(bytes);
    out
}

fn from_bytes_error(bytes: Vec<u8>) -> String {
    Model::from_bytes(Path::new("nested/model.onnx"), bytes)
        .expect_err("must be refused")
        .to_string()
}

/// Subgraphs (an If's branch holding an If, ...) nested without end are refused by depth instead of
/// overflowing the stack of the recursive parse.
#[test]
fn subgraphs_nested_without_end_are_refused() {
    let mut graph = Vec::new();
    // 2000 subgraphs deep: far over the limit.
    for _ in 0..2000 {
        let attribute = field(6, &graph);
        let node = field(5, &attribute);
        graph = field(1, &node);
    }
    let msg = from_bytes_error(field(7, &graph));
    assert!(
        msg.contains("nested/model.onnx") && msg.contains("nested more than"),
        "{msg}"
    );
}

/// An attribute whose length says more than the file holds (here 2^40 bytes) is refused at the byte
/// that says so, without reading or allocating it.
#[test]
fn an_attribute_longer_than_the_file_is_refused() {
    let mut attribute = vec![0x42, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20];
    attribute.extend_from_slice(&[1, 2, 3]);
    let node = [field(4, b"Relu"), field(5, &attribute)].concat();
    let msg = from_bytes_error(field(7, &field(1, &node)));
    assert!(
        msg.contains("nested/model.onnx") && msg.contains("runs past the end"),
        "{msg}"
    );
}
