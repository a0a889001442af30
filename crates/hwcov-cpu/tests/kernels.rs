//! hwcov's CPU kernels against the plain candle sequence of each layer (hwcov-candle's layers with no
//! provider installed, as in this test binary), at the sizes real models meet: BERT-base's 768-wide
//! rows and 12 heads of 128 positions, Whisper's 1500 frames, masks broadcast over the batch and over
//! the queries, strided head transposes, products with and without a bias and of one row.

use candle_core::{Device, Result, Tensor};
use hwcov_candle::activation::Activation;
use hwcov_candle::kernels::{AfterBias, Kernels};
use hwcov_candle::nn;
use hwcov_cpu::kernels::CpuKernels;

fn randn(shape: &[usize]) -> Result<Tensor> {
    Tensor::randn(0f32, 1.0, shape, &Device::Cpu)
}

/// The largest difference of two tensors of one shape, relative to the reference's largest value.
fn gap(ours: &Tensor, plain: &Tensor) -> Result<f32> {
    assert_eq!(ours.dims(), plain.dims());
    let diff = (ours - plain)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let scale = plain.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
    Ok(diff / scale)
}

fn taken(answer: Result<Option<Tensor>>, what: &str) -> Tensor {
    answer
        .expect(what)
        .unwrap_or_else(|| panic!("the CPU kernels declined {what}"))
}

#[test]
fn norms_match_the_plain_layers() -> Result<()> {
    for rows in [1, 7, 256] {
        let x = randn(&[rows, 768])?.affine(3.0, 10.0)?;
        let (w, b) = (randn(&[768])?, randn(&[768])?);
        let plain = nn::LayerNorm::from_parts(w.clone(), b.clone(), 1e-12).forward(&x)?;
        let ours = taken(CpuKernels.layer_norm(&x, &w, &b, 1e-12), "layer_norm");
        assert!(gap(&ours, &plain)? < 1e-5, "layer_norm over {rows} rows");
    }
    let x = randn(&[3, 11, 896])?;
    let w = randn(&[896])?;
    let vb = candle_nn::VarBuilder::from_tensors(
        [("weight".to_string(), w.clone())].into_iter().collect(),
        candle_core::DType::F32,
        &Device::Cpu,
    );
    let plain = nn::RmsNorm::new(896, 1e-6, vb)?.forward(&x)?;
    let ours = taken(CpuKernels.rms_norm(&x, &w, 1e-6), "rms_norm");
    assert!(gap(&ours, &plain)? < 1e-5);
    Ok(())
}

#[test]
fn attention_softmax_matches_with_every_mask_shape() -> Result<()> {
    let (b, h, q, k) = (2, 12, 128, 128);
    let scores = (randn(&[b, h, q, k])? * 4.0)?;
    let padding = Tensor::from_vec(
        (0..b * k)
            .map(|i| if i % k < k - 9 * (i / k) { 0f32 } else { f32::MIN })
            .collect(),
        (b, 1, 1, k),
        &Device::Cpu,
    )?;
    let causal = Tensor::from_vec(
        (0..q * k)
            .map(|i| if i % k <= i / k { 0f32 } else { f32::NEG_INFINITY })
            .collect(),
        (1, 1, q, k),
        &Device::Cpu,
    )?;
    let full = randn(&[b, 1, q, k])?;
    for (name, mask) in [
        ("none", None),
        ("padding", Some(&padding)),
        ("causal", Some(&causal)),
        ("full", Some(&full)),
    ] {
        for scaling in [1.0, 0.125] {
            let plain = nn::attention_softmax(&scores, scaling, mask)?;
            let ours = taken(
                CpuKernels.attention_softmax(&scores, scaling, mask),
                "attention_softmax",
            );
            let g = gap(&ours, &plain)?;
            // candle sums a row in f32 lanes, here in f64: the probabilities part by a few f32 steps.
            assert!(g < 4e-6, "mask {name}, scaling {scaling}: {g}");
        }
    }
    // Whisper's cross-attention: one query meets 1500 frames.
    let scores = randn(&[1, 6, 1, 1500])?;
    let plain = nn::attention_softmax(&scores, 0.125, None)?;
    assert!(
        gap(
            &taken(CpuKernels.attention_softmax(&scores, 0.125, None), "rows of 1500"),
            &plain
        )? < 4e-6
    );
    Ok(())
}

#[test]
fn linears_and_their_epilogues_match() -> Result<()> {
    for rows in [1, 5, 128] {
        let x = randn(&[rows, 768])?;
        let (w, bias) = (randn(&[3072, 768])?, randn(&[3072])?);
        let plain = (x.matmul(&w.t()?)?.broadcast_add(&bias))?;
        let ours = taken(CpuKernels.linear(&x, &w, Some(&bias)), "linear");
        assert!(gap(&ours, &plain)? < 1e-5, "linear with bias, {rows} rows");
        let ours = taken(CpuKernels.linear(&x, &w, None), "linear without bias");
        assert!(gap(&ours, &x.matmul(&w.t()?)?)? < 1e-5);
    }
    // The layer as the models call it, through the provider's answers and without them.
    let (x, w, bias) = (randn(&[2, 9, 64])?, randn(&[48, 64])?, randn(&[48])?);
    let residual = randn(&[2, 9, 48])?;
    let y = x.matmul(&w.t()?.broadcast_left(2)?)?;
    let layer = nn::Linear::new(w.clone(), Some(bias.clone()));
    let plain_gelu = layer.forward_act(&x, Activation::Gelu)?;
    let ours = taken(CpuKernels.bias(&y, &bias, AfterBias::Gelu), "bias + gelu");
    assert!(gap(&ours, &plain_gelu)? < 1e-5);
    let plain_residual = layer.forward_residual(&x, &residual)?;
    let ours = taken(
        CpuKernels.bias(&y, &bias, AfterBias::Residual(&residual)),
        "bias + residual",
    );
    assert!(gap(&ours, &plain_residual)? < 1e-5);
    let ours = taken(CpuKernels.gelu(&y), "gelu");
    assert!(gap(&ours, &nn::gelu(&y)?)? < 1e-6);
    Ok(())
}

#[test]
fn adds_copies_and_gated_activations_match() -> Result<()> {
    let x = randn(&[2, 12, 128, 128])?;
    let per_batch = randn(&[2, 1, 128, 128])?;
    let row = randn(&[128])?;
    for b in [&per_batch, &row] {
        let ours = taken(CpuKernels.add_broadcast(&x, b), "add_broadcast");
        assert_eq!(gap(&ours, &x.broadcast_add(b)?)?, 0.0);
    }
    let r = randn(&[2, 12, 128, 128])?;
    assert_eq!(gap(&taken(CpuKernels.add(&x, &r), "add"), &(&x + &r)?)?, 0.0);
    // Attention's head transposes, both ways, and a narrowed view.
    let heads = randn(&[2, 128, 12, 64])?.transpose(1, 2)?;
    let merged = randn(&[2, 12, 128, 64])?.transpose(1, 2)?;
    let narrowed = randn(&[4, 10, 96])?.narrow(2, 32, 32)?;
    for t in [&heads, &merged, &narrowed] {
        assert!(!t.is_contiguous());
        let ours = taken(CpuKernels.contiguous(t), "contiguous");
        assert_eq!(gap(&ours, &t.contiguous()?)?, 0.0);
    }
    let gate_up = randn(&[3, 7, 2 * 4864])?;
    let plain = nn::gated_act(&gate_up, Activation::Silu)?;
    assert!(gap(&taken(CpuKernels.silu_mul(&gate_up), "silu_mul"), &plain)? < 1e-6);
    Ok(())
}

/// Half-precision tensors and strided inputs are declined (the plain ops run them).
#[test]
fn other_dtypes_are_declined() -> Result<()> {
    let x = randn(&[4, 32])?.to_dtype(candle_core::DType::BF16)?;
    assert!(CpuKernels.gelu(&x)?.is_none());
    let w = randn(&[8, 32])?;
    assert!(CpuKernels.linear(&randn(&[32, 4])?.t()?, &w, None)?.is_none());
    Ok(())
}
