//! Elementwise passes split over the threads: a Linear's bias with what follows it, GELU, residual
//! and broadcast adds, SwiGLU's `silu(gate) * up`. Each computes what candle's op computes, in f32.

use candle_core::cpu::erf::erf_f32;
use candle_core::{Result, Tensor};
use hwcov_candle::kernels::AfterBias;

use super::{F32s, for_rows, map_indices, tensor};

/// torch's exact GELU, as candle's `gelu_erf` computes it.
fn gelu_f32(v: f32) -> f32 {
    (erf_f32(v * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * v
}

/// `y + b` over rows of `b`'s length, then `after`.
pub fn bias(y: &Tensor, b: &Tensor, after: AfterBias) -> Result<Option<Tensor>> {
    let (Some(ys), Some(bs)) = (F32s::of(y), F32s::of(b)) else {
        return Ok(None);
    };
    let cols = y.dims().last().copied().unwrap_or(0);
    if cols == 0 || b.elem_count() != cols {
        return Ok(None);
    }
    let residual = match after {
        AfterBias::Residual(r) => match F32s::of(r) {
            Some(rs) if r.dims() == y.dims() => Some(rs),
            _ => return Ok(None),
        },
        _ => None,
    };
    let (yv, bv) = (ys.values(), bs.values());
    let rv = residual.as_ref().map(|r| r.values());
    let gelu = matches!(after, AfterBias::Gelu);
    let mut out = vec![0f32; yv.len()];
    for_rows(&mut out, cols, |r, row| {
        let at = r * cols;
        for (c, o) in row.iter_mut().enumerate() {
            let v = yv[at + c] + bv[c];
            *o = match rv {
                Some(rv) => v + rv[at + c],
                None if gelu => gelu_f32(v),
                None => v,
            };
        }
    });
    tensor(out, y.dims()).map(Some)
}

pub fn gelu(x: &Tensor) -> Result<Option<Tensor>> {
    let Some(xs) = F32s::of(x) else { return Ok(None) };
    let xv = xs.values();
    tensor(map_indices(xv.len(), |i| gelu_f32(xv[i])), x.dims()).map(Some)
}

/// `x + r` for two tensors of one shape.
pub fn add(x: &Tensor, r: &Tensor) -> Result<Option<Tensor>> {
    let (Some(xs), Some(rs)) = (F32s::of(x), F32s::of(r)) else {
        return Ok(None);
    };
    if x.dims() != r.dims() {
        return Ok(None);
    }
    let (xv, rv) = (xs.values(), rs.values());
    tensor(map_indices(xv.len(), |i| xv[i] + rv[i]), x.dims()).map(Some)
}

/// `x + b` for a bias or an attention mask (`hwcov_candle::kernels::repeated_rows` says which shapes).
pub fn add_broadcast(x: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    let (Some(xs), Some(bs)) = (F32s::of(x), F32s::of(b)) else {
        return Ok(None);
    };
    let Some((group, inner)) = hwcov_candle::kernels::repeated_rows(x.dims(), b.dims()) else {
        return Ok(None);
    };
    let (xv, bv) = (xs.values(), bs.values());
    let n = x.elem_count();
    tensor(
        map_indices(n, |i| xv[i] + bv[(i / group) * inner + i % inner]),
        x.dims(),
    )
    .map(Some)
}

/// `silu(gate) * up`, the two side by side over the last dimension of `gate_up`.
pub fn silu_mul(gate_up: &Tensor) -> Result<Option<Tensor>> {
    let Some(gs) = F32s::of(gate_up) else {
        return Ok(None);
    };
    let width = gate_up.dims().last().copied().unwrap_or(0);
    if width == 0 || width % 2 != 0 {
        return Ok(None);
    }
    let half = width / 2;
    let gv = gs.values();
    let mut out = vec![0f32; gv.len() / 2];
    for_rows(&mut out, half, |r, row| {
        let src = &gv[r * width..(r + 1) * width];
        for (c, o) in row.iter_mut().enumerate() {
            let g = src[c];
            *o = g / (1.0 + (-g).exp()) * src[half + c];
        }
    });
    let mut dims = gate_up.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = half;
    }
    tensor(out, &dims).map(Some)
}
