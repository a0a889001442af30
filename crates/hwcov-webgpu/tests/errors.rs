//! What the WebGPU platform refuses, and how it says so: an op without a kernel is `unsupported`
//! naming the op and node (never run elsewhere), a tensor larger than the adapter binds is refused
//! naming the tensor and the limit, an index out of range names the node.

use std::path::{Path, PathBuf};

use hwcov_core::{Error, HostTensor, NamedTensors};

fn graph(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/bad-graphs")
        .join(case)
        .join("model.onnx")
}

fn session(case: &str) -> Option<hwcov_webgpu::Session> {
    match hwcov_webgpu::gpu::gpu() {
        Ok(g) => Some(hwcov_webgpu::Session::open(g, &graph(case)).expect("opens")),
        Err(e) => {
            let required = std::env::var("HWCOV_REQUIRE_PLATFORMS").unwrap_or_default();
            assert!(!required.split(',').any(|p| p == "webgpu"), "{e}");
            eprintln!("skipped: {e}");
            None
        }
    }
}

#[test]
fn an_op_without_a_kernel_is_unsupported_on_webgpu() {
    let Some(mut s) = session("unknown_op") else { return };
    let mut inputs = NamedTensors::new();
    inputs.insert("x".into(), HostTensor::f32(vec![2, 3], vec![0.0; 6]).unwrap());
    match s.run(&inputs) {
        Err(Error::Unsupported { platform, what, .. }) => {
            assert_eq!(platform, "webgpu");
            assert!(what.contains("FooBar") && what.contains("the_foobar"), "{what}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_tensor_larger_than_the_adapter_binds_is_refused_by_name() {
    let Some(mut s) = session("oversized") else { return };
    let limit = hwcov_webgpu::gpu::gpu().unwrap().max_binding();
    let n = (limit / 4 + 1) as usize;
    let mut inputs = NamedTensors::new();
    inputs.insert("x".into(), HostTensor::f32(vec![n], vec![1.0; n]).unwrap());
    match s.run(&inputs) {
        Err(Error::Unsupported { what, reason, .. }) => {
            assert!(what.contains("`x`"), "{what}");
            assert!(reason.contains(&limit.to_string()), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_index_out_of_range_names_the_node() {
    let Some(mut s) = session("gather_index") else { return };
    let mut inputs = NamedTensors::new();
    inputs.insert("ids".into(), HostTensor::i64(vec![2], vec![1, -1]).unwrap());
    let y = s.run(&inputs).expect("in range, negative counting from the end");
    assert_eq!(y["y"].to_f64_vec(), [3.0, 4.0, 5.0, 9.0, 10.0, 11.0]);
    inputs.insert("ids".into(), HostTensor::i64(vec![2], vec![1, 7]).unwrap());
    let msg = s.run(&inputs).unwrap_err().to_string();
    assert!(msg.contains("embed") && msg.contains("out of range"), "{msg}");
}
