//! Pieces that transformers itself shares between models (`modeling_utils`, `masking_utils`).

use candle_core::{D, DType, Result, Tensor};

/// The smallest finite value of a dtype, as `torch.finfo(dtype).min` (what transformers puts in masks).
pub fn dtype_min(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => half::f16::MIN.to_f64(),
        DType::BF16 => half::bf16::MIN.to_f64(),
        DType::F64 => f64::MIN,
        _ => f32::MIN as f64,
    }
}

/// A padding mask (batch, seq) of 1 = attend, 0 = padding, made additive and broadcastable to the
/// attention scores: (batch, 1, 1, seq), 0 where attended, the dtype's minimum where masked.
pub fn additive_padding_mask(attention_mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (b, l) = attention_mask.dims2()?;
    let keep = attention_mask.to_dtype(DType::F32)?;
    let inverted = (1.0 - keep)?;
    (inverted * dtype_min(dtype).max(f32::MIN as f64))?
        .to_dtype(dtype)?
        .reshape((b, 1, 1, l))
}

/// `eager_attention_forward`: softmax(q k^T * scaling + mask) v, the softmax in f32 as transformers
/// does. q, k, v are (batch, heads, seq, head_dim).
pub fn eager_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scaling: f64) -> Result<Tensor> {
    let dtype = q.dtype();
    let mut scores = (q.matmul(&k.t()?)? * scaling)?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    let probs = candle_nn::ops::softmax(&scores.to_dtype(DType::F32)?, D::Minus1)?.to_dtype(dtype)?;
    probs.matmul(v)
}
