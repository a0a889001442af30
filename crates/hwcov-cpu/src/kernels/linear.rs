//! `nn.Linear` as one product: `x W^T + b` by the `gemm` crate (the kernels candle's own matmul
//! calls), with the bias written into the output first and the product added to it, where candle
//! adds the bias in a second, single-threaded pass over the output.

use candle_core::{Result, Tensor};
use gemm::Parallelism;

use super::{F32s, tensor};

/// `x W^T + b` for a contiguous f32 `x` (..., k), `weight` (n, k) and `bias` (n); `None` for other
/// tensors.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    let (Some(xs), Some(ws)) = (F32s::of(x), F32s::of(weight)) else {
        return Ok(None);
    };
    let Ok((n, k)) = weight.dims2() else {
        return Ok(None);
    };
    if x.dims().last() != Some(&k) || k == 0 || n == 0 {
        return Ok(None);
    }
    let bs = match bias {
        Some(b) => match F32s::of(b) {
            Some(bs) if b.elem_count() == n => Some(bs),
            _ => return Ok(None),
        },
        None => None,
    };
    let m = x.elem_count() / k;
    let mut out = vec![0f32; m * n];
    if let Some(bs) = &bs {
        for row in out.chunks_mut(n) {
            row.copy_from_slice(bs.values());
        }
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let (xv, wv) = (xs.values(), ws.values());
    // SAFETY: out is m x n row-major, x is m x k row-major, W^T is read from W (n x k row-major) as a
    // k x n matrix with row stride 1 and column stride k; every index stays within the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            bs.is_some(),
            xv.as_ptr(),
            1,
            k as isize,
            wv.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    tensor(out, &dims).map(Some)
}
