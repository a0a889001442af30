//! Normalisations: LayerNorm and RMSNorm over rows (one warp a row, Welford's statistics in
//! torch's order), and GroupNorm in torch's two kernels (statistics, then scale and shift).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaStorage, DType, Layout, Shape, Tensor, WithDType};

use super::launch::*;

/// `F.group_norm` of (N, C, *) in `groups` groups with weight and bias of C, as torch's kernels
/// compute it.
pub struct GroupNorm {
    rows: u32,
    len: u32,
    channels: u32,
    per_group: u32,
    hw: u32,
    eps: f32,
}

impl GroupNorm {
    pub fn plan(x: &Tensor, w: &Tensor, b: &Tensor, groups: usize, eps: f64) -> Option<Self> {
        let (n, c) = (*x.dims().first()?, *x.dims().get(1)?);
        let fine = |t: &Tensor| fits(t) && t.dtype() == x.dtype() && t.dims() == [c];
        let fits_all = fits(x) && fine(w) && fine(b) && x.elem_count() > 0;
        if !fits_all || groups == 0 || !c.is_multiple_of(groups) {
            return None;
        }
        let hw = x.elem_count() / (n * c);
        // torch hands eps to the statistics kernel in the tensor's dtype.
        let eps = hwcov_candle::nn::round_f32(eps as f32, x.dtype());
        Some(Self {
            rows: (n * groups) as u32,
            len: (c / groups * hw) as u32,
            channels: c as u32,
            per_group: (c / groups) as u32,
            hw: hw as u32,
            eps,
        })
    }
}

fn group_norm<T: CudaDType + DeviceRepr + WithDType>(
    p: &GroupNorm,
    (xs, xl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
    (bs, bl): (&CudaStorage, &Layout),
) -> candle_core::Result<CudaStorage> {
    let dev = xs.device();
    let (x, w, b) = (input::<T>(xs, xl)?, input::<T>(ws, wl)?, input::<T>(bs, bl)?);
    let n = xl.shape().elem_count() as u32;
    let (y, apply) = prepare::<T>(dev, "group_norm_apply", n as usize)?;
    let stats = kernel::<T>(dev, "group_norm_stats", "")?;
    // SAFETY: the statistics kernel writes one mean and one rstd per row.
    let (mean, rstd) = unsafe { (dev.alloc::<f32>(p.rows as usize)?, dev.alloc::<f32>(p.rows as usize)?) };
    let stream = dev.cuda_stream();
    let mut builder = stream.launch_builder(&stats);
    builder.arg(&x).arg(&mean).arg(&rstd).arg(&p.len).arg(&p.eps);
    let rows = LaunchConfig {
        grid_dim: (p.rows, 1, 1),
        block_dim: (if p.len < 512 { 32 } else { 512 }, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match the kernel's signature; each block reads its row of len elements.
    unsafe { builder.launch(rows) }.w()?;
    let mut builder = stream.launch_builder(&apply);
    builder.arg(&x).arg(&mean).arg(&rstd).arg(&w).arg(&b).arg(&y);
    builder.arg(&p.channels).arg(&p.per_group).arg(&p.hw).arg(&n);
    // SAFETY: the arguments match the kernel's signature; n bounds every access.
    unsafe { builder.launch(LaunchConfig::for_num_elems(n)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

impl Kernel for GroupNorm {
    fn name(&self) -> &'static str {
        "group_norm"
    }

    fn run3(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let out = by_dtype!(xs, group_norm(self, (xs, xl), (ws, wl), (bs, bl)))?;
        Ok((out, xl.shape().clone()))
    }
}

/// LayerNorm (with a bias) or RMSNorm (without) over rows of `cols` elements, one warp per row.
pub struct NormRows {
    kernel: &'static str,
    rows: u32,
    cols: u32,
    eps: f32,
}

impl NormRows {
    fn plan(kernel: &'static str, x: &Tensor, params: &[&Tensor], eps: f64) -> Option<Self> {
        let cols = *x.dims().last()?;
        let fine = |t: &Tensor| fits(t) && t.dtype() == x.dtype() && t.dims() == [cols];
        if !fits(x) || cols == 0 || !params.iter().all(|t| fine(t)) {
            return None;
        }
        Some(Self {
            kernel,
            rows: (x.elem_count() / cols) as u32,
            cols: cols as u32,
            eps: eps as f32,
        })
    }

    pub fn plan_layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Option<Self> {
        Self::plan("layer_norm", x, &[w, b], eps)
    }

    pub fn plan_rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Option<Self> {
        Self::plan("rms_norm", x, &[w], eps)
    }
}

fn norm_rows<T: CudaDType + DeviceRepr + WithDType>(
    p: &NormRows,
    (xs, xl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
    bias: Option<(&CudaStorage, &Layout)>,
) -> candle_core::Result<CudaStorage> {
    let (x, w) = (input::<T>(xs, xl)?, input::<T>(ws, wl)?);
    let b = bias.map(|(bs, bl)| input::<T>(bs, bl)).transpose()?;
    let (y, f) = prepare_rows::<T>(xs.device(), p.kernel, p.cols, xl.shape().elem_count())?;
    let stream = xs.device().cuda_stream();
    let mut pointers = vec![
        x.device_ptr(&stream).0,
        w.device_ptr(&stream).0,
        y.device_ptr(&stream).0,
    ];
    pointers.extend(b.as_ref().map(|b| b.device_ptr(&stream).0));
    let vec = quads(p.cols, &pointers, 4 * std::mem::size_of::<T>());
    let mut builder = stream.launch_builder(&f);
    builder.arg(&x).arg(&w);
    if let Some(b) = &b {
        builder.arg(b);
    }
    builder.arg(&y).arg(&p.rows).arg(&p.cols).arg(&p.eps).arg(&vec);
    // SAFETY: the arguments match the kernel's signature (layer_norm alone takes a bias); rows and
    // cols bound every access, and vec is set only where rows divide into aligned quads.
    unsafe { builder.launch(warp_per_row(p.rows)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(y, xs.device().clone()))
}

impl Kernel for NormRows {
    fn name(&self) -> &'static str {
        self.kernel
    }

    fn run2(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        Ok((
            by_dtype!(xs, norm_rows(self, (xs, xl), (ws, wl), None))?,
            xl.shape().clone(),
        ))
    }

    fn run3(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let out = by_dtype!(xs, norm_rows(self, (xs, xl), (ws, wl), Some((bs, bl))))?;
        Ok((out, xl.shape().clone()))
    }
}
