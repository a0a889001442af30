//! Bad graphs (fixtures/bad-graphs, made by tools/fixtures/bad_graphs.py) are refused with an error
//! that names the node or file at fault: an unknown op, external data that is missing, short, or
//! outside the model's folder (by `..`, an absolute path or a symbolic link), a shape that depends
//! on the values of the input, a cycle.

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
