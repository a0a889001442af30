//! The matrix-product kernels over many shapes: all three (`any` for strided or unaligned products,
//! `tiled` for products of whole vec4 rows, `rows` for 4 rows or fewer, N whole vec4s or not), tile
//! edges, split K, broadcast batch axes and Gemm's transposed B, on random inputs, against products
//! computed in f64 on the host.
//!
//! The last two tests run the same graph on growing sizes, as a decoding loop does: plans patched
//! from cached ones, and plans readied during the run before, must compute the same products.

use std::path::{Path, PathBuf};

use hwcov_core::{HostTensor, NamedTensors};

fn graph(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/kernel-graphs")
        .join(name)
        .join("model.onnx")
}

/// Values in [-1, 1) from a fixed xorshift sequence.
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn session(name: &str) -> Option<hwcov_webgpu::Session> {
    match hwcov_webgpu::gpu::gpu() {
        Ok(g) => Some(hwcov_webgpu::Session::open(g, &graph(name)).expect("opens")),
        Err(e) => {
            let required = std::env::var("HWCOV_REQUIRE_PLATFORMS").unwrap_or_default();
            assert!(!required.split(',').any(|p| p == "webgpu"), "{e}");
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// Largest |got - want| relative to the largest |want|.
fn check(what: &str, got: &HostTensor, want: &[f64], k: usize) {
    let g = got.to_f64_vec();
    assert_eq!(g.len(), want.len(), "{what}");
    let scale = want.iter().fold(1e-30f64, |m, x| m.max(x.abs()));
    let err = g.iter().zip(want).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    // f32 products of k terms in [-1, 1): well under 1e-5 of the largest value for these sizes.
    assert!(
        err / scale < 1e-5 * (k as f64).sqrt().max(1.0),
        "{what}: relative error {:.3e}",
        err / scale
    );
}

#[test]
fn matmul_over_shapes() {
    let Some(mut s) = session("matmul") else { return };
    for (i, &(b, m, k, n)) in [
        (1, 1, 8, 8),
        (2, 5, 3, 7),
        (1, 64, 64, 64),
        (2, 130, 36, 132),
        (1, 257, 68, 200),
        (3, 70, 16, 68),
        (1, 128, 1, 128),
        (1, 1, 896, 4864),
        (2, 3, 37, 260),
        (1, 4, 64, 132),
        // K split over workgroups: 64-tiles, the rows kernel, a batch of each.
        (1, 64, 2048, 128),
        (1, 3, 2048, 64),
        (2, 70, 1024, 68),
        (3, 2, 512, 64),
        // 128-tiles (enough of them to fill a large GPU), K not a multiple of the slice depth.
        (1, 1400, 20, 1540),
        // The rows kernel where N is not a whole number of vec4s (a vocabulary of 51,865).
        (1, 1, 64, 51),
        (1, 3, 40, 130),
        (2, 2, 33, 7),
        (1, 4, 96, 1001),
    ]
    .iter()
    .enumerate()
    {
        let a = random(b * m * k, 2 * i as u64);
        let w = random(k * n, 2 * i as u64 + 1);
        let mut inputs = NamedTensors::new();
        inputs.insert("A".into(), HostTensor::f32(vec![b, m, k], a.clone()).unwrap());
        inputs.insert("B".into(), HostTensor::f32(vec![k, n], w.clone()).unwrap());
        let y = s.run(&inputs).unwrap();
        let mut want = vec![0f64; b * m * n];
        for bi in 0..b {
            for r in 0..m {
                for c in 0..n {
                    want[(bi * m + r) * n + c] = (0..k)
                        .map(|j| a[(bi * m + r) * k + j] as f64 * w[j * n + c] as f64)
                        .sum();
                }
            }
        }
        check(&format!("MatMul {b}x{m}x{k} @ {k}x{n}"), &y["Y"], &want, k);
    }
}

#[test]
fn matmul_with_broadcast_batch_axes() {
    let Some(mut s) = session("matmul_batched") else { return };
    for (i, &(b, m, k, n)) in [
        (3, 4, 5, 6),
        (2, 65, 12, 64),
        (2, 1, 9, 8),
        (2, 66, 1024, 64),
        (2, 2, 1024, 8),
        // B with a batch axis of 1: the batch folds into the rows.
        (1, 5, 16, 12),
    ]
    .iter()
    .enumerate()
    {
        let a = random(2 * b * m * k, 10 + i as u64);
        let w = random(b * k * n, 20 + i as u64);
        let mut inputs = NamedTensors::new();
        inputs.insert("A".into(), HostTensor::f32(vec![2, b, m, k], a.clone()).unwrap());
        inputs.insert("B".into(), HostTensor::f32(vec![b, k, n], w.clone()).unwrap());
        let y = s.run(&inputs).unwrap();
        let mut want = vec![0f64; 2 * b * m * n];
        for o in 0..2 {
            for bi in 0..b {
                for r in 0..m {
                    for c in 0..n {
                        want[((o * b + bi) * m + r) * n + c] = (0..k)
                            .map(|j| a[((o * b + bi) * m + r) * k + j] as f64 * w[(bi * k + j) * n + c] as f64)
                            .sum();
                    }
                }
            }
        }
        check(&format!("batched MatMul 2x{b}x{m}x{k}"), &y["Y"], &want, k);
    }
}

#[test]
fn gemm_with_transposed_b_and_bias() {
    let Some(mut s) = session("gemm_transb") else { return };
    for (i, &(m, k, n)) in [
        (3, 5, 7),
        (96, 64, 132),
        (200, 40, 64),
        (2, 16, 8),
        (64, 1024, 64),
        (1400, 24, 1540),
    ]
    .iter()
    .enumerate()
    {
        let a = random(m * k, 30 + i as u64);
        let w = random(n * k, 40 + i as u64);
        let c = random(n, 50 + i as u64);
        let mut inputs = NamedTensors::new();
        inputs.insert("A".into(), HostTensor::f32(vec![m, k], a.clone()).unwrap());
        inputs.insert("B".into(), HostTensor::f32(vec![n, k], w.clone()).unwrap());
        inputs.insert("C".into(), HostTensor::f32(vec![n], c.clone()).unwrap());
        let y = s.run(&inputs).unwrap();
        let mut want = vec![0f64; m * n];
        for r in 0..m {
            for col in 0..n {
                let dot: f64 = (0..k).map(|j| a[r * k + j] as f64 * w[col * k + j] as f64).sum();
                want[r * n + col] = 0.5 * dot + 2.0 * c[col] as f64;
            }
        }
        check(&format!("Gemm {m}x{k} @ ({n}x{k})^T"), &y["Y"], &want, k);
    }
}

/// Runs the `matmul` graph on `m` random rows of width k (from `seed`) times `w` (k x n) and checks
/// the product.
fn product_of_rows(s: &mut hwcov_webgpu::Session, m: usize, w: &[f32], (k, n): (usize, usize), seed: u64) {
    let a = random(m * k, seed);
    let mut inputs = NamedTensors::new();
    inputs.insert("A".into(), HostTensor::f32(vec![1, m, k], a.clone()).unwrap());
    inputs.insert("B".into(), HostTensor::f32(vec![k, n], w.to_vec()).unwrap());
    let y = s.run(&inputs).unwrap();
    let want: Vec<f64> = (0..m * n)
        .map(|i| {
            (0..k)
                .map(|j| a[(i / n) * k + j] as f64 * w[j * n + i % n] as f64)
                .sum()
        })
        .collect();
    check(&format!("MatMul 1x{m}x{k} @ {k}x{n}"), &y["Y"], &want, k);
}

/// A decoding loop's plans: the same graph on sizes that grow by one row a run. After the first
/// plans, each is a cached plan patched for the new size (new parameters, the same buffers); every
/// result must still be the product.
#[test]
fn plans_patched_for_growing_sizes_compute_the_product() {
    let Some(mut s) = session("matmul") else { return };
    let (k, n) = (24, 36);
    let w = random(k * n, 99);
    for m in 5..70 {
        product_of_rows(&mut s, m, &w, (k, n), m as u64);
    }
    assert!(
        s.plans_patched >= 40,
        "{} of 65 plans patched ({} compiled)",
        s.plans_patched,
        s.plans_compiled
    );
}

/// A decoding loop that says what its next run will be (`expect_growth`): each run finds its plan
/// made during the run before, and makes only the next one; the products stay right.
#[test]
fn the_expected_next_plan_is_made_during_the_run_before() {
    let Some(mut s) = session("matmul") else { return };
    let (k, n) = (24, 36);
    let w = random(k * n, 7);
    for m in 5..20 {
        s.expect_growth(&[("A".to_string(), 1)]);
        let before = s.plans_compiled + s.plans_patched;
        product_of_rows(&mut s, m, &w, (k, n), 100 + m as u64);
        let made = s.plans_compiled + s.plans_patched - before;
        let expected = if m == 5 { 2 } else { 1 };
        assert_eq!(made, expected, "plans made during the run of {m} rows");
    }
}

/// Reads a kept output back by running the `matmul` graph on it times the identity.
fn read_kept(s: &mut hwcov_webgpu::Session, kept: &hwcov_webgpu::exec::DeviceTensor) -> Vec<f64> {
    let n = *kept.ty.shape.last().unwrap();
    let mut eye = vec![0f32; n * n];
    for i in 0..n {
        eye[i * n + i] = 1.0;
    }
    let mut given = NamedTensors::new();
    given.insert("B".into(), HostTensor::f32(vec![n, n], eye).unwrap());
    let resident = std::collections::BTreeMap::from([("A".to_string(), kept.clone())]);
    let (host, _) = s
        .run_resident(&given, &resident, &|_| hwcov_onnx::handler::Fate::Host)
        .unwrap();
    host["Y"].to_f64_vec()
}

/// Outputs kept on the device share buffers only once the caller lets go of them: a buffer still
/// held keeps its values while later runs keep theirs, and a released one takes the next output.
#[test]
fn kept_outputs_reuse_only_released_buffers() {
    let Some(mut s) = session("matmul") else { return };
    let (m, k) = (6, 8);
    let w = random(k * k, 3);
    let keep = |s: &mut hwcov_webgpu::Session, seed: u64| {
        let mut given = NamedTensors::new();
        given.insert("A".into(), HostTensor::f32(vec![1, m, k], random(m * k, seed)).unwrap());
        given.insert("B".into(), HostTensor::f32(vec![k, k], w.clone()).unwrap());
        let (host, mut kept) = s
            .run_resident(&given, &Default::default(), &|_| hwcov_onnx::handler::Fate::Keep)
            .unwrap();
        assert!(host.is_empty(), "a kept output came back to the host");
        let d = kept.remove("Y").expect("Y kept");
        let want = s.run(&given).unwrap()["Y"].to_f64_vec();
        (d, want)
    };
    let (first, first_want) = keep(&mut s, 11);
    let (second, second_want) = keep(&mut s, 12);
    assert!(
        !std::sync::Arc::ptr_eq(&first.buffer, &second.buffer),
        "a held buffer was reused"
    );
    assert_eq!(read_kept(&mut s, &first), first_want);
    assert_eq!(read_kept(&mut s, &second), second_want);
    let released = std::sync::Arc::as_ptr(&first.buffer);
    drop(first);
    let (third, third_want) = keep(&mut s, 13);
    assert_eq!(
        std::sync::Arc::as_ptr(&third.buffer),
        released,
        "a released buffer was not reused"
    );
    assert_eq!(read_kept(&mut s, &second), second_want, "a held output changed");
    assert_eq!(read_kept(&mut s, &third), third_want);
}
