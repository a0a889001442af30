//! Pieces that transformers itself shares between models (`modeling_utils`, `masking_utils`).

use candle_core::{DType, Result, Tensor};

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

/// The query, key and value of a stacked projection (`nn::stack_linears` of the three, output
/// (batch, seq, 3 * heads * head_dim)), each as (batch, heads, seq, head_dim) by one copy: what
/// `view(...).transpose(1, 2)` of three separate projections gives. The stacked product has three
/// times the width and runs on larger, faster tiles than three of one width each, with the same dot
/// products (docs/benchmarks.md).
pub fn split_stacked_qkv(qkv: &Tensor, heads: usize, head_dim: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, l, _) = qkv.dims3()?;
    let qkv = qkv.reshape((b, l, 3, heads, head_dim))?;
    let part = |i: usize| crate::nn::contiguous(&qkv.narrow(2, i, 1)?.squeeze(2)?.transpose(1, 2)?);
    Ok((part(0)?, part(1)?, part(2)?))
}

/// `eager_attention_forward`: softmax(q k^T * scaling + mask) v, the softmax in f32 as transformers
/// does. q, k, v are (batch, heads, seq, head_dim).
pub fn eager_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scaling: f64) -> Result<Tensor> {
    let (k, v, mask) = crate::nn::align_keys(k, v, mask, q.dim(2)?)?;
    let scores = crate::nn::attention_scores(q, &k)?;
    crate::nn::attention_softmax(&scores, scaling, mask.as_ref())?.matmul(&v)
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
    let (k, v, mask) = crate::nn::align_keys(k, v, mask, lq)?;
    let (kvh, lk) = (k.dim(1)?, k.dim(2)?);
    // Checked in the heads' shape, which the error names; the stacked product holds as many.
    crate::nn::check_elements(q.device(), "the attention scores", &[b, h, lq, lk])?;
    let q = crate::nn::contiguous(q)?.reshape((b, kvh, n_rep * lq, d))?;
    let scores = q.matmul(&k.t()?)?.reshape((b, h, lq, lk))?;
    let probs = crate::nn::attention_softmax(&scores, scaling, mask.as_ref())?.reshape((b, kvh, n_rep * lq, lk))?;
    probs.matmul(&v)?.reshape((b, h, lq, d))
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
    crate::nn::check_elements(device, "the causal attention mask", &[b, 1, q_len, kv_len])?;
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
///
/// transformers concatenates the new positions to the old ones at each step, which copies the whole
/// cache every step; here each layer's keys and values live in a buffer with room to spare, the new
/// positions are written into it in place, and the cache hands out views of the filled part. When the
/// buffer is full it is replaced by one twice as long.
#[derive(Debug, Clone, Default)]
pub struct DynamicCache {
    layers: Vec<Option<LayerCache>>,
}

#[derive(Debug, Clone)]
struct LayerCache {
    keys: Tensor,
    values: Tensor,
    /// Positions filled, along dimension 2.
    len: usize,
}

impl LayerCache {
    fn filled(&self) -> Result<(Tensor, Tensor)> {
        Ok((self.keys.narrow(2, 0, self.len)?, self.values.narrow(2, 0, self.len)?))
    }
}

/// A (batch, heads, capacity, head_dim) buffer holding `x` at its start.
fn buffer_with(x: &Tensor, capacity: usize) -> Result<Tensor> {
    let (b, h, _, d) = x.dims4()?;
    let buffer = Tensor::zeros((b, h, capacity, d), x.dtype(), x.device())?;
    buffer.slice_set(&crate::nn::contiguous(x)?, 2, 0)?;
    Ok(buffer)
}

impl DynamicCache {
    pub fn new(num_layers: usize) -> Self {
        DynamicCache {
            layers: vec![None; num_layers],
        }
    }

    /// Appends the new keys and values of `layer_idx` and returns all of them.
    pub fn update(&mut self, layer_idx: usize, key: Tensor, value: Tensor) -> Result<(Tensor, Tensor)> {
        let (key, value) = (crate::nn::contiguous(&key)?, crate::nn::contiguous(&value)?);
        let new = key.dim(2)?;
        let cache = match self.layers[layer_idx].take() {
            Some(mut c) if c.len + new <= c.keys.dim(2)? => {
                c.keys.slice_set(&key, 2, c.len)?;
                c.values.slice_set(&value, 2, c.len)?;
                c.len += new;
                c
            }
            Some(c) => {
                let (k, v) = c.filled()?;
                let capacity = (2 * (c.len + new)).max(64);
                let (keys, values) = (buffer_with(&k, capacity)?, buffer_with(&v, capacity)?);
                keys.slice_set(&key, 2, c.len)?;
                values.slice_set(&value, 2, c.len)?;
                LayerCache {
                    keys,
                    values,
                    len: c.len + new,
                }
            }
            None => {
                let capacity = new.next_power_of_two().max(64);
                LayerCache {
                    keys: buffer_with(&key, capacity)?,
                    values: buffer_with(&value, capacity)?,
                    len: new,
                }
            }
        };
        let all = cache.filled();
        self.layers[layer_idx] = Some(cache);
        all
    }

    /// The keys and values stored for a layer, if any (the cross-attention cache of encoder-decoders).
    pub fn get(&self, layer_idx: usize) -> Option<(Tensor, Tensor)> {
        self.layers[layer_idx].as_ref().and_then(|c| c.filled().ok())
    }

    /// Stores a layer's keys and values as they are (computed once, such as cross-attention's).
    pub fn set(&mut self, layer_idx: usize, key: Tensor, value: Tensor) {
        let len = key.dim(2).unwrap_or(0);
        self.layers[layer_idx] = Some(LayerCache {
            keys: key,
            values: value,
            len,
        });
    }

    /// The number of positions cached (of the first layer).
    pub fn get_seq_length(&self) -> usize {
        match self.layers.first() {
            Some(Some(c)) => c.len,
            _ => 0,
        }
    }
}

pub use crate::nn::RmsNorm;

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

pub use crate::nn::LayerNorm;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Padding the keys (as a provider with a key alignment asks for unaligned lengths) leaves eager attention's output as it was,
    /// with a mask and without one.
    #[test]
    fn padded_keys_leave_attention_unchanged() -> Result<()> {
        let dev = Device::Cpu;
        let (b, h, lq, lk, d) = (2, 3, 5, 13, 4);
        let q = Tensor::randn(0f32, 1.0, (b, h, lq, d), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (b, h, lk, d), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (b, h, lk, d), &dev)?;
        let keep: Vec<f32> = (0..b * lk)
            .map(|i| if i % lk < lk - 2 * (i / lk) { 1.0 } else { 0.0 })
            .collect();
        let mask = additive_padding_mask(&Tensor::from_vec(keep, (b, lk), &dev)?, DType::F32)?;
        for mask in [None, Some(&mask)] {
            let plain = eager_attention(&q, &k, &v, mask, 0.5)?;
            let (kp, vp, mp) = crate::nn::pad_keys(&k, &v, mask, 3)?;
            assert_eq!(kp.dims(), [b, h, lk + 3, d]);
            let scores = q.matmul(&kp.t()?)?;
            let padded = crate::nn::attention_softmax(&scores, 0.5, mp.as_ref())?.matmul(&vp)?;
            let diff = (plain - padded)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "padded keys changed the output by {diff}");
        }
        Ok(())
    }
}
