//! Kernels that move bytes: a strided tensor made contiguous, and zero rows padded after each matrix.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaStorage, DType, Layout, Shape, Tensor};

use super::launch::*;

/// A strided tensor made contiguous: its dimensions merged where they are contiguous with each
/// other, at most four left, every source offset under 2^32. Where rows of the innermost
/// dimension are contiguous and 8-byte aligned, 8 bytes are copied at a time.
pub struct StridedCopy {
    dims: [u32; 4],
    strides: [u32; 4],
    /// Bytes per copied unit: the element's, or 8.
    unit: usize,
}

impl StridedCopy {
    pub fn plan(x: &Tensor) -> Option<Self> {
        let copied = matches!(x.dtype(), DType::F32 | DType::U32 | DType::BF16 | DType::F16);
        if !x.device().is_cuda() || !copied || x.elem_count() == 0 {
            return None;
        }
        u32::try_from(x.elem_count()).ok()?;
        let layout = x.layout();
        // (dim, stride) outermost first, size-1 dimensions dropped, contiguous neighbours merged.
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (&d, &s) in layout.dims().iter().zip(layout.stride()) {
            if d == 1 {
                continue;
            }
            match merged.last_mut() {
                Some((pd, ps)) if *ps == s * d => {
                    *pd *= d;
                    *ps = s;
                }
                _ => merged.push((d, s)),
            }
        }
        if merged.len() > 4 {
            return None;
        }
        let last_offset: usize = merged.iter().map(|(d, s)| (d - 1) * s).sum();
        u32::try_from(last_offset).ok()?;
        let elem = x.dtype().size_in_bytes();
        let per_unit = 8 / elem;
        let widen = matches!(merged.last(), Some(&(d, 1)) if d % per_unit == 0)
            && merged.iter().all(|&(_, s)| s == 1 || s % per_unit == 0)
            && layout.start_offset().is_multiple_of(per_unit);
        let (unit, factor) = if widen { (8, per_unit) } else { (elem, 1) };
        let mut dims = [1u32; 4];
        let mut strides = [0u32; 4];
        let pad = 4 - merged.len();
        let inner = merged.len().saturating_sub(1);
        for (i, (d, s)) in merged.into_iter().enumerate() {
            let inner_dim = i == inner;
            dims[pad + i] = (if inner_dim { d / factor } else { d }) as u32;
            strides[pad + i] = (if inner_dim { s } else { s / factor }) as u32;
        }
        Some(Self { dims, strides, unit })
    }
}

/// Runs the kernel `prefix`_u{8, 16, 32, 64} that moves `xs` as units of `unit` bytes (its element
/// type's width, or wider where the plan found the bytes aligned), writing `out_bytes` bytes. The
/// kernel takes x, y, the number of output units, then `scalars`.
fn move_units(
    prefix: &str,
    unit: usize,
    xs: &CudaStorage,
    xl: &Layout,
    out_bytes: usize,
    scalars: &[u32],
) -> candle_core::Result<CudaStorage> {
    let args = (prefix, xs, xl, out_bytes, scalars);
    match (xs.dtype(), unit) {
        (DType::F32, 8) => move_units_as::<f32, u64>(args),
        (DType::F32, 4) => move_units_as::<f32, u32>(args),
        (DType::U32, 8) => move_units_as::<u32, u64>(args),
        (DType::U32, 4) => move_units_as::<u32, u32>(args),
        (DType::BF16, 8) => move_units_as::<half::bf16, u64>(args),
        (DType::BF16, 4) => move_units_as::<half::bf16, u32>(args),
        (DType::BF16, 2) => move_units_as::<half::bf16, u16>(args),
        (DType::F16, 8) => move_units_as::<half::f16, u64>(args),
        (DType::F16, 4) => move_units_as::<half::f16, u32>(args),
        (DType::F16, 2) => move_units_as::<half::f16, u16>(args),
        _ => Err(not_cuda()),
    }
}

fn move_units_as<T: CudaDType + DeviceRepr, U: DeviceRepr>(
    (prefix, xs, xl, out_bytes, scalars): (&str, &CudaStorage, &Layout, usize, &[u32]),
) -> candle_core::Result<CudaStorage> {
    let dev = xs.device();
    let (t, u) = (std::mem::size_of::<T>(), std::mem::size_of::<U>());
    let units = (out_bytes / u) as u32;
    let x = input::<T>(xs, xl)?;
    let misfit = || candle_core::Error::Msg(format!("{prefix}: the tensor does not divide into units of {u} bytes"));
    // SAFETY: the same bytes read as wider units; the plan checked their alignment.
    let xu = unsafe { x.transmute::<U>(x.len() * t / u) }.ok_or_else(misfit)?;
    let f = dev.get_or_load_custom_func(&format!("{prefix}_u{}", 8 * u), "hwcov_nn", ptx()?)?;
    // SAFETY: the kernel writes all out_bytes bytes.
    let mut y = unsafe { dev.alloc::<T>(out_bytes / t)? };
    {
        // SAFETY: as for the input.
        let mut yu = unsafe { y.transmute_mut::<U>(units as usize) }.ok_or_else(misfit)?;
        let mut builder = f.builder();
        builder.arg(&xu).arg(&mut yu).arg(&units);
        for s in scalars {
            builder.arg(s);
        }
        // SAFETY: the arguments match the kernel's signature; the plan bounded every source offset
        // within the input.
        unsafe { builder.launch(LaunchConfig::for_num_elems(units)) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

impl Kernel for StridedCopy {
    fn name(&self) -> &'static str {
        "strided_copy"
    }

    fn run1(&self, xs: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        // The copy moves bits: each element type goes through the kernel of its width, or of 8 bytes.
        let (p, bytes) = (self, xl.shape().elem_count() * xs.dtype().size_in_bytes());
        let [_, d1, d2, d3] = p.dims;
        let [s0, s1, s2, s3] = p.strides;
        let out = move_units("strided_copy", p.unit, xs, xl, bytes, &[d1, d2, d3, s0, s1, s2, s3])?;
        Ok((out, xl.shape().clone()))
    }
}

/// Zero rows after the rows of each matrix: blocks of `inner` units of 8, 4 or 2 bytes, padded to
/// `outer` units.
pub struct PadBlocks {
    rows: usize,
    pad: usize,
    inner: u32,
    outer: u32,
    unit: usize,
}

impl PadBlocks {
    pub fn plan(x: &Tensor, pad: usize) -> Option<Self> {
        let copied = matches!(x.dtype(), DType::F32 | DType::U32 | DType::BF16 | DType::F16);
        let dims = x.dims();
        if !x.device().is_cuda() || !x.is_contiguous() || !copied || dims.len() < 2 || x.elem_count() == 0 || pad == 0 {
            return None;
        }
        let (rows, cols) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let elem = x.dtype().size_in_bytes();
        let (inner, outer, offset) = (
            rows * cols * elem,
            (rows + pad) * cols * elem,
            x.layout().start_offset() * elem,
        );
        let unit = [8, 4, 2].into_iter().find(|u| {
            *u >= elem && inner.is_multiple_of(*u) && outer.is_multiple_of(*u) && offset.is_multiple_of(*u)
        })?;
        let total = x.elem_count() / (rows * cols) * outer / unit;
        u32::try_from(total).ok()?;
        Some(Self {
            rows,
            pad,
            inner: (inner / unit) as u32,
            outer: (outer / unit) as u32,
            unit,
        })
    }
}

impl Kernel for PadBlocks {
    fn name(&self) -> &'static str {
        "pad_rows"
    }

    fn run1(&self, xs: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let in_units = xl.shape().elem_count() * xs.dtype().size_in_bytes() / self.unit;
        let out_bytes = in_units / self.inner as usize * self.outer as usize * self.unit;
        let out = move_units("pad_blocks", self.unit, xs, xl, out_bytes, &[self.inner, self.outer])?;
        let mut dims = xl.dims().to_vec();
        let at = dims.len() - 2;
        dims[at] = self.rows + self.pad;
        Ok((out, Shape::from(dims)))
    }
}
