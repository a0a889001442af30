//! What every kernel of hwcov's on CUDA shares: the NVRTC source and its compiled module, the choice
//! of a kernel by dtype and row length, launch shapes, and [`OnCuda`], which runs a [`Kernel`] as one
//! of candle's custom ops.

use std::sync::OnceLock;

use candle_core::cuda_backend::CudaDType;
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaSlice, DeviceRepr, LaunchConfig};
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, WithDType,
};

/// Every kernel in f32 arithmetic; `R` rounds an intermediate to the dtype and back, where
/// transformers stores that intermediate in the dtype.
const SOURCE: &str = include_str!("hwcov_kernels.cu");

pub(super) fn ptx() -> candle_core::Result<&'static str> {
    static PTX: OnceLock<Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(SOURCE)
            .map(|p| p.to_src())
            .map_err(|e| e.to_string())
    })
    .as_deref()
    .map_err(|e| candle_core::Error::Cuda(format!("compiling hwcov's CUDA kernels: {e}").into()))
}

pub(super) fn suffix(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F32 => Some("f32"),
        DType::BF16 => Some("bf16"),
        DType::F16 => Some("f16"),
        _ => None,
    }
}

/// Whether the kernels take `t`: a contiguous CUDA tensor of a float dtype with fewer than 2^32
/// elements.
pub(super) fn fits(t: &Tensor) -> bool {
    t.device().is_cuda() && t.is_contiguous() && suffix(t.dtype()).is_some() && u32::try_from(t.elem_count()).is_ok()
}

pub(super) fn not_cuda() -> candle_core::Error {
    candle_core::Error::Msg("hwcov's fused kernels run on CUDA tensors only".into())
}

/// The output of `n` elements and the kernel `name`_`dtype`.
pub(super) fn prepare<T: DeviceRepr + WithDType>(
    dev: &CudaDevice,
    name: &str,
    n: usize,
) -> candle_core::Result<(CudaSlice<T>, CudaFunction)> {
    prepare_kernel(dev, name, "", n)
}

/// The output of `n` elements and the row kernel `name`_`dtype`_`length` for rows of `cols`.
pub(super) fn prepare_rows<T: DeviceRepr + WithDType>(
    dev: &CudaDevice,
    name: &str,
    cols: u32,
    n: usize,
) -> candle_core::Result<(CudaSlice<T>, CudaFunction)> {
    // The elements each lane holds, as ROW_KERNELS_ALL_LENGTHS names them; "long" reads the row again.
    let length = match cols {
        0..=128 => "_4",
        129..=256 => "_8",
        257..=512 => "_16",
        513..=1024 => "_32",
        1025..=2048 => "_64",
        _ => "_long",
    };
    prepare_kernel(dev, name, length, n)
}

pub(super) fn prepare_kernel<T: DeviceRepr + WithDType>(
    dev: &CudaDevice,
    name: &str,
    length: &str,
    n: usize,
) -> candle_core::Result<(CudaSlice<T>, CudaFunction)> {
    let f = kernel::<T>(dev, name, length)?;
    // SAFETY: every kernel here writes all n elements of its output.
    let y = unsafe { dev.alloc::<T>(n)? };
    Ok((y, f))
}

/// The kernel `name`_`dtype``length` of T's dtype.
pub(super) fn kernel<T: WithDType>(dev: &CudaDevice, name: &str, length: &str) -> candle_core::Result<CudaFunction> {
    let dtype_suffix = suffix(T::DTYPE).ok_or_else(not_cuda)?;
    Ok(dev
        .get_or_load_custom_func(&format!("{name}_{dtype_suffix}{length}"), "hwcov_nn", ptx()?)?
        .into_cuda_function())
}

/// 1 where rows of `cols` elements divide into quads of four elements (`quad_bytes`) and every
/// pointer is aligned to one: the row kernels then move four elements at a time.
pub(super) fn quads(cols: u32, pointers: &[u64], quad_bytes: usize) -> u32 {
    (cols.is_multiple_of(4) && pointers.iter().all(|p| p.is_multiple_of(quad_bytes as u64))) as u32
}

/// A launch of one warp per row, four rows per block.
pub(super) fn warp_per_row(rows: u32) -> LaunchConfig {
    const WARPS: u32 = 4;
    LaunchConfig {
        grid_dim: (rows.div_ceil(WARPS), 1, 1),
        block_dim: (32 * WARPS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The elements of `s` from the layout's start offset.
pub(super) fn input<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
) -> candle_core::Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>> {
    Ok(s.as_cuda_slice::<T>()?.slice(l.start_offset()..))
}

/// Calls `$f::<T>($args)` for the storage's dtype.
macro_rules! by_dtype {
    ($storage:expr, $f:ident($($arg:expr),*)) => {
        match $storage.dtype() {
            DType::F32 => $f::<f32>($($arg),*),
            DType::BF16 => $f::<half::bf16>($($arg),*),
            DType::F16 => $f::<half::f16>($($arg),*),
            _ => Err(not_cuda()),
        }
    };
}
pub(super) use by_dtype;

/// One thread per element, a row per blockIdx.y.
pub(super) fn rows_config(rows: u32, inner: u32) -> LaunchConfig {
    const THREADS: u32 = 256;
    LaunchConfig {
        grid_dim: (inner.div_ceil(THREADS).min(65535), rows.min(65535), 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A kernel of hwcov's on one, two or three CUDA tensors. candle's custom-op traits also ask for a
/// CPU side, which these kernels do not have: [`OnCuda`] gives candle the op, with one refusal for the
/// CPU where each kernel had its own.
pub(super) trait Kernel {
    fn name(&self) -> &'static str;

    fn run1(&self, _xs: &CudaStorage, _xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        Err(arity(self.name(), 1))
    }

    fn run2(
        &self,
        _xs: &CudaStorage,
        _xl: &Layout,
        _bs: &CudaStorage,
        _bl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        Err(arity(self.name(), 2))
    }

    #[allow(clippy::too_many_arguments)]
    fn run3(
        &self,
        _xs: &CudaStorage,
        _xl: &Layout,
        _bs: &CudaStorage,
        _bl: &Layout,
        _rs: &CudaStorage,
        _rl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        Err(arity(self.name(), 3))
    }
}

fn arity(name: &str, tensors: usize) -> candle_core::Error {
    candle_core::Error::Msg(format!("hwcov's CUDA kernel {name} does not take {tensors} tensors"))
}

/// A [`Kernel`] as candle's custom op of its arity: `x.apply_op2_no_bwd(b, &OnCuda(&plan))`.
pub(super) struct OnCuda<'a, K>(pub &'a K);

impl<K: Kernel> CustomOp1 for OnCuda<'_, K> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(not_cuda())
    }

    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        self.0.run1(xs, xl)
    }
}

impl<K: Kernel> CustomOp2 for OnCuda<'_, K> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(not_cuda())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.0.run2(xs, xl, bs, bl)
    }
}

impl<K: Kernel> CustomOp3 for OnCuda<'_, K> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(not_cuda())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
        rs: &CudaStorage,
        rl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.0.run3(xs, xl, bs, bl, rs, rl)
    }
}
