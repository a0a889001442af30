//! Reductions over the last dimension, one pass a row, rows split over the threads: LayerNorm,
//! RMSNorm, and attention's scale, mask and softmax.

use candle_core::{Result, Tensor};

use super::{F32s, for_rows, tensor};

/// `nn.LayerNorm` over the last dimension: the mean, then the variance of the deviations from it
/// (as torch takes it), both summed in f64, and `(x - mean) / sqrt(var + eps) * weight + bias`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    let (Some(xs), Some(ws), Some(bs)) = (F32s::of(x), F32s::of(weight), F32s::of(bias)) else {
        return Ok(None);
    };
    let cols = x.dims().last().copied().unwrap_or(0);
    if cols == 0 || weight.elem_count() != cols || bias.elem_count() != cols {
        return Ok(None);
    }
    let (xv, wv, bv) = (xs.values(), ws.values(), bs.values());
    let mut out = vec![0f32; xv.len()];
    for_rows(&mut out, cols, |r, row| {
        let src = &xv[r * cols..(r + 1) * cols];
        let mean = src.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
        let var = src.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cols as f64;
        let (mean, rstd) = (mean as f32, 1.0 / ((var as f32) + eps as f32).sqrt());
        for (((o, &v), &w), &b) in row.iter_mut().zip(src).zip(wv).zip(bv) {
            *o = (v - mean) * rstd * w + b;
        }
    });
    tensor(out, x.dims()).map(Some)
}

/// `LlamaRMSNorm` at f32: `x * rsqrt(mean(x^2) + eps) * weight`, the mean summed in f64.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    let (Some(xs), Some(ws)) = (F32s::of(x), F32s::of(weight)) else {
        return Ok(None);
    };
    let cols = x.dims().last().copied().unwrap_or(0);
    if cols == 0 || weight.elem_count() != cols {
        return Ok(None);
    }
    let (xv, wv) = (xs.values(), ws.values());
    let mut out = vec![0f32; xv.len()];
    for_rows(&mut out, cols, |r, row| {
        let src = &xv[r * cols..(r + 1) * cols];
        let mean_square = src.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / cols as f64;
        let rstd = 1.0 / ((mean_square as f32) + eps as f32).sqrt();
        for ((o, &v), &w) in row.iter_mut().zip(src).zip(wv) {
            *o = v * rstd * w;
        }
    });
    tensor(out, x.dims()).map(Some)
}

/// `softmax(scores * scaling + mask)` over the last dimension, for f32 scores (batch, heads, q_len,
/// kv_len) and an additive mask (batch or 1, 1, q_len or 1, kv_len).
pub fn attention_softmax(scores: &Tensor, scaling: f64, mask: Option<&Tensor>) -> Result<Option<Tensor>> {
    let Some(ss) = F32s::of(scores) else {
        return Ok(None);
    };
    let Ok((batch, heads, q_len, kv_len)) = scores.dims4() else {
        return Ok(None);
    };
    if kv_len == 0 {
        return Ok(None);
    }
    // Where each row's mask row starts, from the row's batch and query.
    let ms = match mask {
        Some(m) => {
            let Ok((mb, mh, mq, mk)) = m.dims4() else {
                return Ok(None);
            };
            if mh != 1 || mk != kv_len || !(mb == 1 || mb == batch) || !(mq == 1 || mq == q_len) {
                return Ok(None);
            }
            match F32s::of(m) {
                Some(ms) => Some((ms, mb > 1, mq > 1, mq)),
                None => return Ok(None),
            }
        }
        None => None,
    };
    let scale = scaling as f32;
    let sv = ss.values();
    let mut out = vec![0f32; sv.len()];
    for_rows(&mut out, kv_len, |r, row| {
        let src = &sv[r * kv_len..(r + 1) * kv_len];
        let (b, q) = (r / (heads * q_len), r % q_len);
        for (o, &s) in row.iter_mut().zip(src) {
            *o = if scale == 1.0 { s } else { s * scale };
        }
        if let Some((ms, per_batch, per_query, mq)) = &ms {
            let at = (if *per_batch { b * mq } else { 0 } + if *per_query { q } else { 0 }) * kv_len;
            for (o, &m) in row.iter_mut().zip(&ms.values()[at..at + kv_len]) {
                *o += m;
            }
        }
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // The sum in f64: one rounding, where an f32 sum of 1500 terms drifts by several.
        let mut sum = 0f64;
        for o in row.iter_mut() {
            *o = (*o - max).exp();
            sum += *o as f64;
        }
        let sum = sum as f32;
        for o in row.iter_mut() {
            *o /= sum;
        }
    });
    tensor(out, scores.dims()).map(Some)
}
