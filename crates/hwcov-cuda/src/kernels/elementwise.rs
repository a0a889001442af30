//! Elementwise kernels: a broadcast add (bias or attention mask), a Linear's bias with what follows it
//! (GELU, a residual), torch's exact GELU, rsqrt and residual add, and SwiGLU's `silu(gate) * up`.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaStorage, DType, Layout, Shape, Tensor, WithDType};

use super::launch::*;

/// `x + b`, `b` repeating every `inner` elements within groups of `group` elements of `x`.
pub struct AddBroadcast {
    group: u32,
    inner: u32,
}

impl AddBroadcast {
    /// A plan for a bias or an attention mask (`hwcov_candle::kernels::repeated_rows` says which
    /// shapes); `None` for anything else.
    pub fn plan(x: &Tensor, b: &Tensor) -> Option<Self> {
        if !fits(x) || !fits(b) || x.dtype() != b.dtype() {
            return None;
        }
        let (group, inner) = hwcov_candle::kernels::repeated_rows(x.dims(), b.dims())?;
        Some(Self {
            group: group as u32,
            inner: inner as u32,
        })
    }
}

fn add_broadcast<T: CudaDType + DeviceRepr + WithDType>(
    p: &AddBroadcast,
    xs: &CudaStorage,
    xl: &Layout,
    bs: &CudaStorage,
    bl: &Layout,
) -> candle_core::Result<CudaStorage> {
    let n = xl.shape().elem_count() as u32;
    let (x, b) = (input::<T>(xs, xl)?, input::<T>(bs, bl)?);
    let (y, f) = prepare::<T>(xs.device(), "add_broadcast", n as usize)?;
    let stream = xs.device().cuda_stream();
    let mut builder = stream.launch_builder(&f);
    builder.arg(&x).arg(&b).arg(&y).arg(&n).arg(&p.group).arg(&p.inner);
    // SAFETY: the arguments match the kernel's signature; n bounds every access.
    unsafe { builder.launch(LaunchConfig::for_num_elems(n)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(y, xs.device().clone()))
}

impl Kernel for AddBroadcast {
    fn name(&self) -> &'static str {
        "add_broadcast"
    }

    fn run2(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        Ok((by_dtype!(xs, add_broadcast(self, xs, xl, bs, bl))?, xl.shape().clone()))
    }
}

/// The bias of a Linear over the last dimension of its output `y`: (rows, inner).
fn bias_shape(y: &Tensor, b: &Tensor) -> Option<(u32, u32)> {
    let inner = *y.dims().last()?;
    let fine = fits(y) && fits(b) && y.dtype() == b.dtype() && b.elem_count() == inner && inner > 0;
    fine.then(|| ((y.elem_count() / inner) as u32, inner as u32))
}

/// A Linear's bias, and what follows it: nothing, the exact GELU, or a residual add.
#[derive(Clone, Copy)]
enum Epilogue {
    Add,
    Gelu,
    Residual,
}

/// `y + b` (then GELU, or plus a residual) over rows of `inner` elements.
pub struct BiasEpilogue {
    rows: u32,
    inner: u32,
    epilogue: Epilogue,
}

impl BiasEpilogue {
    fn with(y: &Tensor, b: &Tensor, epilogue: Epilogue) -> Option<Self> {
        let (rows, inner) = bias_shape(y, b)?;
        Some(Self { rows, inner, epilogue })
    }

    pub fn plan_add(y: &Tensor, b: &Tensor) -> Option<Self> {
        Self::with(y, b, Epilogue::Add)
    }

    pub fn plan_gelu(y: &Tensor, b: &Tensor) -> Option<Self> {
        Self::with(y, b, Epilogue::Gelu)
    }

    pub fn plan_residual(y: &Tensor, b: &Tensor, r: &Tensor) -> Option<Self> {
        let same = fits(r) && r.dtype() == y.dtype() && r.dims() == y.dims();
        Self::with(y, b, Epilogue::Residual).filter(|_| same)
    }

    fn kernel(&self) -> &'static str {
        match self.epilogue {
            Epilogue::Add => "bias_add",
            Epilogue::Gelu => "bias_gelu",
            Epilogue::Residual => "bias_residual",
        }
    }
}

fn bias_epilogue<T: CudaDType + DeviceRepr + WithDType>(
    p: &BiasEpilogue,
    (xs, xl): (&CudaStorage, &Layout),
    (bs, bl): (&CudaStorage, &Layout),
    residual: Option<(&CudaStorage, &Layout)>,
) -> candle_core::Result<CudaStorage> {
    let (x, b) = (input::<T>(xs, xl)?, input::<T>(bs, bl)?);
    let r = residual.map(|(rs, rl)| input::<T>(rs, rl)).transpose()?;
    let (y, f) = prepare::<T>(xs.device(), p.kernel(), xl.shape().elem_count())?;
    let stream = xs.device().cuda_stream();
    let mut builder = stream.launch_builder(&f);
    builder.arg(&x).arg(&b);
    if let Some(r) = &r {
        builder.arg(r);
    }
    builder.arg(&y).arg(&p.rows).arg(&p.inner);
    // SAFETY: the arguments match the kernel's signature (the residual kernel alone takes a
    // residual); rows and inner bound every access.
    unsafe { builder.launch(rows_config(p.rows, p.inner)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(y, xs.device().clone()))
}

impl Kernel for BiasEpilogue {
    fn name(&self) -> &'static str {
        self.kernel()
    }

    fn run2(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        if matches!(self.epilogue, Epilogue::Residual) {
            return Err(candle_core::Error::Msg(
                "bias_residual takes the residual as a third tensor".into(),
            ));
        }
        Ok((
            by_dtype!(xs, bias_epilogue(self, (xs, xl), (bs, bl), None))?,
            xl.shape().clone(),
        ))
    }

    fn run3(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
        rs: &CudaStorage,
        rl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let out = by_dtype!(xs, bias_epilogue(self, (xs, xl), (bs, bl), Some((rs, rl))))?;
        Ok((out, xl.shape().clone()))
    }
}

/// An elementwise step: torch's exact GELU or rsqrt, or the sum of two tensors of one shape.
#[derive(Clone, Copy)]
pub enum Map {
    Gelu,
    Add,
    Rsqrt,
}

impl Map {
    /// `self` where the kernels take `x` (and `r`, of `x`'s shape and dtype).
    pub fn plan(self, x: &Tensor, r: Option<&Tensor>) -> Option<Self> {
        let same = r.is_none_or(|r| fits(r) && r.dtype() == x.dtype() && r.dims() == x.dims());
        (fits(x) && same && x.elem_count() > 0).then_some(self)
    }

    fn kernel(self) -> &'static str {
        match self {
            Map::Gelu => "gelu",
            Map::Add => "add",
            Map::Rsqrt => "rsqrt",
        }
    }
}

fn map<T: CudaDType + DeviceRepr + WithDType>(
    p: Map,
    (xs, xl): (&CudaStorage, &Layout),
    r: Option<(&CudaStorage, &Layout)>,
) -> candle_core::Result<CudaStorage> {
    let n = xl.shape().elem_count();
    let x = input::<T>(xs, xl)?;
    let r = r.map(|(rs, rl)| input::<T>(rs, rl)).transpose()?;
    let (y, f) = prepare::<T>(xs.device(), p.kernel(), n)?;
    let stream = xs.device().cuda_stream();
    // Four elements move as one access where every pointer is aligned to four elements.
    let mut pointers = vec![x.device_ptr(&stream).0, y.device_ptr(&stream).0];
    pointers.extend(r.as_ref().map(|r| r.device_ptr(&stream).0));
    let vec = quads(4, &pointers, 4 * std::mem::size_of::<T>());
    let n = n as u32;
    let mut builder = stream.launch_builder(&f);
    builder.arg(&x);
    if let Some(r) = &r {
        builder.arg(r);
    }
    builder.arg(&y).arg(&n).arg(&vec);
    // SAFETY: the arguments match the kernel's signature (add alone takes r); n bounds every
    // access, and vec is set only where the accesses of four elements are aligned.
    // Eight elements a thread, 256 threads a block so that several blocks share a multiprocessor.
    let threads = n.div_ceil(8);
    let cfg = LaunchConfig {
        grid_dim: (threads.div_ceil(256), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    unsafe { builder.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(y, xs.device().clone()))
}

impl Kernel for Map {
    fn name(&self) -> &'static str {
        self.kernel()
    }

    fn run1(&self, xs: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        Ok((by_dtype!(xs, map(*self, (xs, xl), None))?, xl.shape().clone()))
    }

    fn run2(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        rs: &CudaStorage,
        rl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        Ok((by_dtype!(xs, map(*self, (xs, xl), Some((rs, rl))))?, xl.shape().clone()))
    }
}

/// `silu(gate) * up` over rows of `2 * inner` elements (gate, then up).
pub struct SiluMul {
    rows: u32,
    inner: u32,
}

impl SiluMul {
    pub fn plan(x: &Tensor) -> Option<Self> {
        let last = *x.dims().last()?;
        if !fits(x) || last == 0 || last % 2 != 0 {
            return None;
        }
        Some(Self {
            rows: (x.elem_count() / last) as u32,
            inner: (last / 2) as u32,
        })
    }
}

fn silu_mul<T: CudaDType + DeviceRepr + WithDType>(
    p: &SiluMul,
    xs: &CudaStorage,
    xl: &Layout,
) -> candle_core::Result<CudaStorage> {
    let x = input::<T>(xs, xl)?;
    let (y, f) = prepare::<T>(xs.device(), "silu_mul", xl.shape().elem_count() / 2)?;
    let stream = xs.device().cuda_stream();
    let mut builder = stream.launch_builder(&f);
    builder.arg(&x).arg(&y).arg(&p.rows).arg(&p.inner);
    // SAFETY: the arguments match the kernel's signature; rows and inner bound every access.
    unsafe { builder.launch(rows_config(p.rows, p.inner)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(y, xs.device().clone()))
}

impl Kernel for SiluMul {
    fn name(&self) -> &'static str {
        "silu_mul"
    }

    fn run1(&self, xs: &CudaStorage, xl: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let mut dims = xl.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last /= 2;
        }
        Ok((by_dtype!(xs, silu_mul(self, xs, xl))?, Shape::from(dims)))
    }
}
