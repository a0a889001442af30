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
    let mut scores = (q.matmul(&k.t()?)? * scaling)?;
    if let Some(mask) = mask {
        scores = crate::nn::add_broadcast(&scores, mask)?;
    }
    softmax_f32(&scores)?.matmul(v)
}

/// Softmax over the last dimension, computed in f32 and returned in the input's dtype, as
/// transformers' `softmax(..., dtype=torch.float32).to(dtype)`. candle's CUDA kernel already
/// accumulates half precision in f32 and rounds once, so there half inputs skip the two casts; its
/// CPU kernel computes in the input's dtype, so there they are cast.
fn softmax_f32(scores: &Tensor) -> Result<Tensor> {
    let dtype = scores.dtype();
    if dtype == DType::F32 || scores.device().is_cuda() {
        candle_nn::ops::softmax_last_dim(scores)
    } else {
        candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)
    }
}

/// `eager_attention_forward` with grouped-query attention: q is (batch, heads, q_len, head_dim), k and
/// v (batch, kv_heads, kv_len, head_dim) with heads = kv_heads * n_rep, head h reading kv head
/// h / n_rep as `repeat_kv` arranges it. The query heads of a group are stacked against their one
/// kv head, so that k and v are never copied n_rep times.
pub fn grouped_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scaling: f64,
    n_rep: usize,
) -> Result<Tensor> {
    if n_rep == 1 {
        return eager_attention(q, k, v, mask, scaling);
    }
    let (b, h, lq, d) = q.dims4()?;
    let (kvh, lk) = (k.dim(1)?, k.dim(2)?);
    let q = q.contiguous()?.reshape((b, kvh, n_rep * lq, d))?;
    let mut scores = (q.matmul(&k.t()?)? * scaling)?.reshape((b, h, lq, lk))?;
    if let Some(mask) = mask {
        scores = crate::nn::add_broadcast(&scores, mask)?;
    }
    let probs = softmax_f32(&scores)?.reshape((b, kvh, n_rep * lq, lk))?;
    probs.matmul(v)?.reshape((b, h, lq, d))
}

/// `create_causal_mask` of `masking_utils` for eager attention: an additive (batch, 1, q_len, kv_len)
/// mask, 0 where a query may attend and the dtype's minimum elsewhere. The queries are the last
/// `q_len` of the `kv_len` positions; `padding` is the 2D attention mask of all of them (1 = token,
/// 0 = padding), one row per batch item. A query that sees no key (a padding position at the left)
/// gets a row of minima, which softmax turns into uniform weights, as in transformers.
pub fn causal_mask(
    padding: &[Vec<u32>],
    q_len: usize,
    sliding_window: Option<usize>,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let b = padding.len();
    let kv_len = padding.first().map(|r| r.len()).unwrap_or(0);
    let past = kv_len - q_len;
    let min = dtype_min(dtype).max(f32::MIN as f64) as f32;
    let mut values = Vec::with_capacity(b * q_len * kv_len);
    for row in padding {
        for i in 0..q_len {
            let q_idx = past + i;
            for (kv_idx, &keep) in row.iter().enumerate() {
                let visible = kv_idx <= q_idx && keep != 0 && sliding_window.is_none_or(|w| kv_idx + w > q_idx);
                values.push(if visible { 0.0 } else { min });
            }
        }
    }
    Tensor::from_vec(values, (b, 1, q_len, kv_len), device)?.to_dtype(dtype)
}

/// `repeat_kv`: (batch, kv_heads, seq, head_dim) -> (batch, kv_heads * n_rep, seq, head_dim), each
/// key/value head repeated for the `n_rep` query heads of its group.
pub fn repeat_kv(xs: &Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(xs.clone());
    }
    let (b, kv_heads, seq, head_dim) = xs.dims4()?;
    xs.unsqueeze(2)?
        .expand((b, kv_heads, n_rep, seq, head_dim))?
        .reshape((b, kv_heads * n_rep, seq, head_dim))
}

/// `DynamicCache` of `cache_utils`: per layer, the keys and values of every position seen so far,
/// (batch, heads, seq, head_dim), grown along the sequence at each call.
#[derive(Debug, Clone, Default)]
pub struct DynamicCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl DynamicCache {
    pub fn new(num_layers: usize) -> Self {
        DynamicCache {
            layers: vec![None; num_layers],
        }
    }

    /// Appends the new keys and values of `layer_idx` and returns all of them.
    pub fn update(&mut self, layer_idx: usize, key: Tensor, value: Tensor) -> Result<(Tensor, Tensor)> {
        let slot = &mut self.layers[layer_idx];
        let (k, v) = match slot.take() {
            None => (key, value),
            Some((k, v)) => (Tensor::cat(&[&k, &key], 2)?, Tensor::cat(&[&v, &value], 2)?),
        };
        *slot = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// The keys and values stored for a layer, if any (the cross-attention cache of encoder-decoders).
    pub fn get(&self, layer_idx: usize) -> Option<&(Tensor, Tensor)> {
        self.layers[layer_idx].as_ref()
    }

    /// Stores a layer's keys and values as they are (computed once, such as cross-attention's).
    pub fn set(&mut self, layer_idx: usize, key: Tensor, value: Tensor) {
        self.layers[layer_idx] = Some((key, value));
    }

    /// The number of positions cached (of the first layer).
    pub fn get_seq_length(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dim(2).unwrap_or(0),
            _ => 0,
        }
    }
}

/// `LlamaRMSNorm` / `T5LayerNorm`: x / sqrt(mean(x^2) + eps) * weight, the statistics in f32.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    variance_epsilon: f64,
}

impl RmsNorm {
    pub fn new(size: usize, eps: f64, vb: candle_nn::VarBuilder) -> Result<Self> {
        Ok(RmsNorm {
            weight: vb.get(size, "weight")?,
            variance_epsilon: eps,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        let input_dtype = hidden_states.dtype();
        let hs = hidden_states.to_dtype(DType::F32)?;
        let variance = hs.sqr()?.mean_keepdim(D::Minus1)?;
        let hs = hs.broadcast_div(&(variance + self.variance_epsilon)?.sqrt()?)?;
        hs.to_dtype(input_dtype)?.broadcast_mul(&self.weight)
    }
}

/// The output embedding of a language model: `lm_head.weight` when the checkpoint has it, else the
/// input embeddings when the config ties them (`tie_word_embeddings`), as transformers ties weights
/// on load. An untied model without `lm_head.weight` is a load error naming the tensor.
pub fn lm_head(
    vb: &candle_nn::VarBuilder,
    embeddings: &Tensor,
    tie_word_embeddings: bool,
    in_dim: usize,
    vocab_size: usize,
) -> Result<crate::nn::Linear> {
    if vb.contains_tensor("lm_head.weight") || !tie_word_embeddings {
        crate::nn::linear_no_bias(in_dim, vocab_size, vb.pp("lm_head"))
    } else {
        Ok(crate::nn::Linear::new(embeddings.clone(), None))
    }
}

/// `nn.LayerNorm` computed in two passes as torch does (the mean, then the mean of the squared
/// deviations from it). candle-nn's fused layer norm takes the variance as E[x^2] - E[x]^2 in f32,
/// which loses digits when the activations are large next to their spread.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(size: usize, eps: f64, vb: candle_nn::VarBuilder) -> Result<Self> {
        Ok(LayerNorm {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?.to_dtype(dtype)?;
        normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}
