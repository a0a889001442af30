//! What the webnn platform refuses, and how it says so: an unknown op, and a shape computed from
//! the data, are `unsupported` naming the op and node, with nothing run elsewhere (the graph
//! layer's refusals come out as webnn's).

use std::path::{Path, PathBuf};

use hwcov_core::{Error, HostTensor, NamedTensors};

fn graph(dir: &str, case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(dir)
        .join(case)
        .join("model.onnx")
}

/// Whether WebNN is here; required where `HWCOV_REQUIRE_PLATFORMS` names it.
fn here() -> bool {
    use hwcov_core::Platform;
    match hwcov_webnn::WebNnPlatform.probe() {
        hwcov_core::Availability::Available { .. } => true,
        hwcov_core::Availability::Unavailable { reason } => {
            let required = std::env::var("HWCOV_REQUIRE_PLATFORMS").unwrap_or_default();
            assert!(!required.split(',').any(|p| p == "webnn"), "{reason}");
            eprintln!("skipped: {reason}");
            false
        }
    }
}

fn unsupported(result: hwcov_core::Result<NamedTensors>) -> String {
    match result {
        Err(Error::Unsupported { platform, what, reason }) => {
            assert_eq!(platform, "webnn");
            format!("{what}: {reason}")
        }
        other => panic!("expected unsupported, got {other:?}"),
    }
}

#[test]
fn an_unknown_op_is_unsupported_by_name() {
    if !here() {
        return;
    }
    let mut g = hwcov_webnn::Graph::open(&graph("bad-graphs", "unknown_op")).expect("opens");
    let mut inputs = NamedTensors::new();
    inputs.insert("x".into(), HostTensor::f32(vec![2, 3], vec![0.0; 6]).unwrap());
    let e = unsupported(g.run(&inputs));
    assert!(e.contains("FooBar") && e.contains("the_foobar"), "{e}");
}

#[test]
fn a_shape_computed_from_the_data_is_unsupported_by_name() {
    if !here() {
        return;
    }
    let path = graph("bad-graphs", "data_dependent_shape");
    let program = hwcov_onnx::Program::load(&path).expect("loads");
    let mut g = hwcov_webnn::Graph::open(&path).expect("opens");
    let mut inputs = NamedTensors::new();
    for i in &program.model.graph.inputs {
        let shape: Vec<usize> = i
            .shape
            .iter()
            .flatten()
            .map(|d| match d {
                hwcov_onnx::Dim::Fixed(n) => *n as usize,
                _ => 3,
            })
            .collect();
        let n = shape.iter().product();
        inputs.insert(i.name.clone(), HostTensor::f32(shape, vec![1.0; n]).unwrap());
    }
    let e = unsupported(g.run(&inputs));
    assert!(
        e.contains("reshape_by_value") && e.contains("cannot be inferred"),
        "{e}"
    );
}
