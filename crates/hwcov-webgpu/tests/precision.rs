//! Weights kept in f16 (`--precision f16` on WebGPU): products, convolutions and embedding tables
//! read f16 weights and sum in f32. On BERT (embedding tables, products) and ViT (the patch
//! convolution, products) fixtures, the outputs move off the f32 run's (the f16 path ran) by no
//! more than f16 rounding of the weights explains.
//!
//! The last test splits a run into several submissions, as long runs are: the outputs must not move.

use std::path::{Path, PathBuf};

use hwcov_core::{HostTensor, NamedTensors};

fn graph(fixture: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(fixture)
        .join("model.onnx")
}

/// The device, or `None` (skipped, said on stderr) where there is none and webgpu is not required.
fn gpu() -> Option<std::sync::Arc<hwcov_webgpu::gpu::Gpu>> {
    match hwcov_webgpu::gpu::gpu() {
        Ok(g) => Some(g),
        Err(e) => {
            let required = std::env::var("HWCOV_REQUIRE_PLATFORMS").unwrap_or_default();
            assert!(!required.split(',').any(|p| p == "webgpu"), "{e}");
            eprintln!("skipped: {e}");
            None
        }
    }
}

fn sessions(fixture: &str) -> Option<(hwcov_webgpu::Session, hwcov_webgpu::Session)> {
    let g = gpu()?;
    if !g.features.contains(wgpu::Features::SHADER_F16) {
        eprintln!("skipped: {} has no shader-f16", g.info.name);
        return None;
    }
    let f32 = hwcov_webgpu::Session::open(g.clone(), &graph(fixture)).expect("opens");
    let mut f16 = hwcov_webgpu::Session::open(g, &graph(fixture)).expect("opens");
    f16.weights_f16 = true;
    Some((f32, f16))
}

/// Runs both sessions; every output of the f16 one differs from the f32 one's, by at most
/// `rel` of the output's largest value.
fn compare(fixture: &str, inputs: &NamedTensors, rel: f64) {
    let Some((mut a, mut b)) = sessions(fixture) else {
        return;
    };
    let want = a.run(inputs).expect("f32 run");
    let got = b.run(inputs).expect("f16-weights run");
    for (name, w) in &want {
        let (w, g) = (w.to_f64_vec(), got[name].to_f64_vec());
        let scale = w.iter().fold(1e-30f64, |m, x| m.max(x.abs()));
        let err = w.iter().zip(&g).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            err > 0.0,
            "{fixture} {name}: the same as at f32; the f16 weights were not read"
        );
        assert!(
            err / scale < rel,
            "{fixture} {name}: {:.3e} of its largest value",
            err / scale
        );
    }
}

/// Two rows of nine tokens for the BERT fixture.
fn bert_inputs() -> NamedTensors {
    let (b, l) = (2, 9);
    let ids: Vec<i64> = (0..b * l).map(|i| (i * 37 % 128) as i64).collect();
    let mut inputs = NamedTensors::new();
    inputs.insert("input_ids".into(), HostTensor::i64(vec![b, l], ids).unwrap());
    inputs.insert(
        "attention_mask".into(),
        HostTensor::i64(vec![b, l], vec![1; b * l]).unwrap(),
    );
    inputs.insert(
        "token_type_ids".into(),
        HostTensor::i64(vec![b, l], vec![0; b * l]).unwrap(),
    );
    inputs
}

#[test]
fn bert_with_f16_weights_stays_near_f32() {
    let inputs = bert_inputs();
    compare("bert", &inputs, 5e-3);
}

#[test]
fn vit_with_f16_weights_stays_near_f32() {
    let n = 2 * 3 * 30 * 30;
    let pixels: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    let mut inputs = NamedTensors::new();
    inputs.insert(
        "pixel_values".into(),
        HostTensor::f32(vec![2, 3, 30, 30], pixels).unwrap(),
    );
    compare("vit", &inputs, 5e-3);
}

/// A run submitted in parts (three dispatches a submission) computes what one submission does, to
/// the bit: the parts run in order on the same buffers.
#[test]
fn a_run_submitted_in_parts_gives_the_same_outputs() {
    let Some(g) = gpu() else { return };
    let mut whole = hwcov_webgpu::Session::open(g.clone(), &graph("bert")).expect("opens");
    whole.dispatches_per_submission = usize::MAX;
    let mut parts = hwcov_webgpu::Session::open(g, &graph("bert")).expect("opens");
    parts.dispatches_per_submission = 3;
    let inputs = bert_inputs();
    let want = whole.run(&inputs).expect("one submission");
    let got = parts.run(&inputs).expect("in parts");
    assert!(
        parts.last_dispatches > 3,
        "{} dispatches: not split",
        parts.last_dispatches
    );
    for (name, w) in &want {
        assert_eq!(w.to_f64_vec(), got[name].to_f64_vec(), "{name}");
    }
}
