//! Attention's steps: RoPE with every rounding of transformers' expression, and the scaled,
//! masked softmax in one pass.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaStorage, DType, Layout, Shape, Tensor, WithDType};

use super::launch::*;

/// transformers' `apply_rotary_pos_emb` on x (batch, heads, seq, 2 * half) with cos and sin
/// (batch or absent, seq, half).
pub struct Rope {
    pairs: u32,
    half: u32,
    seq: u32,
    rows_per_batch: u32,
    cs_batch_stride: u32,
}

impl Rope {
    pub fn plan(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Option<Self> {
        let (b, h, seq, d) = x.dims4().ok()?;
        let half = d / 2;
        let same = |t: &Tensor| fits(t) && t.dtype() == x.dtype() && t.dims() == cos.dims();
        if !fits(x) || !same(cos) || !same(sin) || d % 2 != 0 || x.elem_count() == 0 {
            return None;
        }
        let cs_batch_stride = match cos.dims() {
            [s, c] if *s == seq && *c == half => 0,
            [cb, s, c] if *cb == b && *s == seq && *c == half => seq * half,
            [1, s, c] if *s == seq && *c == half => 0,
            _ => return None,
        };
        Some(Self {
            pairs: (x.elem_count() / 2) as u32,
            half: half as u32,
            seq: seq as u32,
            rows_per_batch: (h * seq) as u32,
            cs_batch_stride: cs_batch_stride as u32,
        })
    }
}

fn rope<T: CudaDType + DeviceRepr + WithDType>(
    p: &Rope,
    (xs, xl): (&CudaStorage, &Layout),
    (cs, cl): (&CudaStorage, &Layout),
    (ss, sl): (&CudaStorage, &Layout),
) -> candle_core::Result<CudaStorage> {
    let (x, cos, sin) = (input::<T>(xs, xl)?, input::<T>(cs, cl)?, input::<T>(ss, sl)?);
    let (y, f) = prepare::<T>(xs.device(), "rope", xl.shape().elem_count())?;
    let stream = xs.device().cuda_stream();
    let mut builder = stream.launch_builder(&f);
    builder.arg(&x).arg(&cos).arg(&sin).arg(&y);
    builder
        .arg(&p.pairs)
        .arg(&p.half)
        .arg(&p.seq)
        .arg(&p.rows_per_batch)
        .arg(&p.cs_batch_stride);
    // SAFETY: the arguments match the kernel's signature; pairs bounds x and y, and the plan
    // checked that cos and sin hold (batch or 1, seq, half) elements.
    unsafe { builder.launch(LaunchConfig::for_num_elems(p.pairs)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(y, xs.device().clone()))
}

impl Kernel for Rope {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn run3(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        cs: &CudaStorage,
        cl: &Layout,
        ss: &CudaStorage,
        sl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let out = by_dtype!(xs, rope(self, (xs, xl), (cs, cl), (ss, sl)))?;
        Ok((out, xl.shape().clone()))
    }
}

/// `softmax(R(R(scores * scale) + mask))` over the last dimension, one warp per row.
pub struct AttentionSoftmax {
    rows: u32,
    cols: u32,
    scale: f32,
    rows_per_batch: u32,
    q_len: u32,
    mask_batch_stride: u32,
    mask_row_stride: u32,
}

impl AttentionSoftmax {
    /// `scores` (batch, heads, q_len, kv_len); `mask` (batch or 1, 1, q_len or 1, kv_len).
    pub fn plan(scores: &Tensor, scaling: f64, mask: Option<&Tensor>) -> Option<Self> {
        let (b, h, q, k) = scores.dims4().ok()?;
        if !fits(scores) || k == 0 {
            return None;
        }
        let (mask_batch_stride, mask_row_stride) = match mask {
            None => (0, 0),
            Some(m) => {
                let (mb, mh, mq, mk) = m.dims4().ok()?;
                if !fits(m)
                    || m.dtype() != scores.dtype()
                    || mh != 1
                    || mk != k
                    || (mb != b && mb != 1)
                    || (mq != q && mq != 1)
                {
                    return None;
                }
                (if mb == 1 { 0 } else { mq * mk }, if mq == 1 { 0 } else { mk })
            }
        };
        Some(Self {
            rows: (b * h * q) as u32,
            cols: k as u32,
            scale: scaling as f32,
            rows_per_batch: (h * q) as u32,
            q_len: q as u32,
            mask_batch_stride: mask_batch_stride as u32,
            mask_row_stride: mask_row_stride as u32,
        })
    }

    fn launch<T: CudaDType + DeviceRepr + WithDType>(
        &self,
        (xs, xl): (&CudaStorage, &Layout),
        mask: Option<(&CudaStorage, &Layout)>,
    ) -> candle_core::Result<CudaStorage> {
        let x = input::<T>(xs, xl)?;
        let (y, f) = prepare_rows::<T>(xs.device(), "attention_softmax", self.cols, xl.shape().elem_count())?;
        let null: u64 = 0;
        let mask = mask.map(|(ms, ml)| input::<T>(ms, ml)).transpose()?;
        let stream = xs.device().cuda_stream();
        let mut builder = stream.launch_builder(&f);
        builder.arg(&x);
        match &mask {
            Some(m) => builder.arg(m),
            None => builder.arg(&null),
        };
        builder
            .arg(&y)
            .arg(&self.rows)
            .arg(&self.cols)
            .arg(&self.scale)
            .arg(&self.rows_per_batch)
            .arg(&self.q_len)
            .arg(&self.mask_batch_stride)
            .arg(&self.mask_row_stride);
        // SAFETY: the arguments match the kernel's signature; rows and cols bound every access,
        // and the plan checked the mask's shape against the strides.
        unsafe { builder.launch(warp_per_row(self.rows)) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(y, xs.device().clone()))
    }
}

fn attention_softmax<T: CudaDType + DeviceRepr + WithDType>(
    p: &AttentionSoftmax,
    x: (&CudaStorage, &Layout),
    mask: Option<(&CudaStorage, &Layout)>,
) -> candle_core::Result<CudaStorage> {
    p.launch::<T>(x, mask)
}

impl Kernel for AttentionSoftmax {
    fn name(&self) -> &'static str {
        "attention_softmax"
    }

    fn run1(&self, xs: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        Ok((
            by_dtype!(xs, attention_softmax(self, (xs, xl), None))?,
            xl.shape().clone(),
        ))
    }

    fn run2(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ms: &CudaStorage,
        ml: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let out = by_dtype!(xs, attention_softmax(self, (xs, xl), Some((ms, ml))))?;
        Ok((out, xl.shape().clone()))
    }
}
