//! Convolutions on CUDA through cuDNN, as torch runs them.
//!
//! torch's `F.conv1d`/`F.conv2d` on a GPU are cuDNN calls (a conv1d as a conv2d of height 1), with
//! f32 accumulation at every precision; candle's CUDA convolution is im2col and a cuBLAS product,
//! whose f32 sums come in another order. On an H100 the first algorithm that cuDNN's heuristics
//! rank for the legacy API gave torch's output bit for bit on every convolution of the fixtures and
//! of the benchmark checkpoints, at f16, bf16 and f32, while im2col parted from it (measured with
//! `tools/gpu/cudnn_probe.py`, docs/platforms/cuda.md). At f32, hwcov keeps FMA math (no TF32), as
//! its f32 products do.
//!
//! libcudnn is opened at run time (`libcudnn.so.9`, the one torch ships), so that a binary built
//! without it still runs every model that has no convolution; a convolution on CUDA without it is
//! an error that names the library, never a quiet switch to another algorithm.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::{Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, DeviceId};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape, Tensor, WithDType};

use hwcov_candle::nn::Geometry;

use super::launch::{Kernel, OnCuda, by_dtype, input, not_cuda};

/// The names tried, newest first.
const LIBRARIES: [&str; 2] = ["libcudnn.so.9", "libcudnn.so"];

/// `F.conv2d(x, w)` without bias for `x` (N, C, H, W) and `w` (K, C / groups, R, S) of one float
/// dtype on a CUDA device.
pub fn conv2d(x: &Tensor, w: &Tensor, geometry: Geometry) -> Result<Tensor> {
    if x.dtype() != w.dtype() {
        candle_core::bail!("convolution of a {:?} input with {:?} weights", x.dtype(), w.dtype());
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let key = Conv {
        dtype: x.dtype(),
        x: dims4(x.dims(), "input")?,
        w: dims4(w.dims(), "weight")?,
        geometry,
    };
    x.apply_op2_no_bwd(&w, &OnCuda(&key))
}

fn dims4(dims: &[usize], what: &str) -> Result<[c_int; 4]> {
    let d: [usize; 4] = dims
        .try_into()
        .map_err(|_| candle_core::Error::Msg(format!("convolution {what} of shape {dims:?}: expected 4 dimensions")))?;
    let int = |v: usize| {
        c_int::try_from(v)
            .map_err(|_| candle_core::Error::Msg(format!("convolution {what} of shape {dims:?}: too large")))
    };
    Ok([int(d[0])?, int(d[1])?, int(d[2])?, int(d[3])?])
}

/// The version of the libcudnn that convolutions use (e.g. 91900), or why there is none.
pub fn version() -> std::result::Result<usize, String> {
    let api = api()?;
    // SAFETY: cudnnGetVersion takes no arguments and only reads a constant.
    Ok(unsafe { (api.get_version)() })
}

/// One convolution: its dtype, input and weight shapes and geometry (also the key of its plan).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Conv {
    dtype: DType,
    x: [c_int; 4],
    w: [c_int; 4],
    geometry: Geometry,
}

type Status = c_int;
type Handle = *mut c_void;
type Desc = *mut c_void;

// cuDNN's enums, as its headers number them.
const FORMAT_NCHW: c_int = 0;
const CROSS_CORRELATION: c_int = 1;
const DATA_FLOAT: c_int = 0;
const DATA_HALF: c_int = 2;
const DATA_BFLOAT16: c_int = 9;
const TENSOR_OP_MATH: c_int = 1;
const FMA_MATH: c_int = 3;

/// `cudnnConvolutionFwdAlgoPerf_t`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct AlgoPerf {
    algo: c_int,
    status: Status,
    time: f32,
    memory: usize,
    determinism: c_int,
    math_type: c_int,
    reserved: [c_int; 3],
}

/// The functions of the legacy convolution API that hwcov calls.
struct Api {
    _lib: libloading::Library,
    get_version: unsafe extern "C" fn() -> usize,
    get_error_string: unsafe extern "C" fn(Status) -> *const c_char,
    create: unsafe extern "C" fn(*mut Handle) -> Status,
    set_stream: unsafe extern "C" fn(Handle, *mut c_void) -> Status,
    create_tensor: unsafe extern "C" fn(*mut Desc) -> Status,
    destroy_tensor: unsafe extern "C" fn(Desc) -> Status,
    set_tensor_4d: unsafe extern "C" fn(Desc, c_int, c_int, c_int, c_int, c_int, c_int) -> Status,
    create_filter: unsafe extern "C" fn(*mut Desc) -> Status,
    destroy_filter: unsafe extern "C" fn(Desc) -> Status,
    set_filter_4d: unsafe extern "C" fn(Desc, c_int, c_int, c_int, c_int, c_int, c_int) -> Status,
    create_conv: unsafe extern "C" fn(*mut Desc) -> Status,
    destroy_conv: unsafe extern "C" fn(Desc) -> Status,
    #[allow(clippy::type_complexity)]
    set_conv_2d: unsafe extern "C" fn(Desc, c_int, c_int, c_int, c_int, c_int, c_int, c_int, c_int) -> Status,
    set_group_count: unsafe extern "C" fn(Desc, c_int) -> Status,
    set_math_type: unsafe extern "C" fn(Desc, c_int) -> Status,
    #[allow(clippy::type_complexity)]
    output_dim: unsafe extern "C" fn(Desc, Desc, Desc, *mut c_int, *mut c_int, *mut c_int, *mut c_int) -> Status,
    #[allow(clippy::type_complexity)]
    algorithm_v7: unsafe extern "C" fn(Handle, Desc, Desc, Desc, Desc, c_int, *mut c_int, *mut AlgoPerf) -> Status,
    workspace_size: unsafe extern "C" fn(Handle, Desc, Desc, Desc, Desc, c_int, *mut usize) -> Status,
    #[allow(clippy::type_complexity)]
    forward: unsafe extern "C" fn(
        Handle,
        *const c_void,
        Desc,
        *const c_void,
        Desc,
        *const c_void,
        Desc,
        c_int,
        *mut c_void,
        usize,
        *const c_void,
        Desc,
        *mut c_void,
    ) -> Status,
}

fn api() -> std::result::Result<&'static Api, String> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> std::result::Result<Api, String> {
    let mut tried = Vec::new();
    for name in LIBRARIES {
        // SAFETY: libcudnn's initialisers only set up its own state.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => return bind(lib).map_err(|e| format!("{name}: {e}")),
            Err(e) => tried.push(format!("{name}: {e}")),
        }
    }
    Err(format!(
        "cuDNN not found ({}): hwcov runs convolutions on CUDA through cuDNN, as torch does; add the folder \
         holding libcudnn.so.9 (pip's nvidia-cudnn-cu13 wheel, site-packages/nvidia/cudnn/lib, which torch \
         installs) to LD_LIBRARY_PATH",
        tried.join("; ")
    ))
}

fn bind(lib: libloading::Library) -> std::result::Result<Api, libloading::Error> {
    // SAFETY: each symbol is given the signature of cuDNN 9's header (cudnn_graph.h, cudnn_ops.h,
    // cudnn_cnn.h), whose legacy functions kept their signatures since cuDNN 7.
    unsafe {
        Ok(Api {
            get_version: *lib.get(b"cudnnGetVersion\0")?,
            get_error_string: *lib.get(b"cudnnGetErrorString\0")?,
            create: *lib.get(b"cudnnCreate\0")?,
            set_stream: *lib.get(b"cudnnSetStream\0")?,
            create_tensor: *lib.get(b"cudnnCreateTensorDescriptor\0")?,
            destroy_tensor: *lib.get(b"cudnnDestroyTensorDescriptor\0")?,
            set_tensor_4d: *lib.get(b"cudnnSetTensor4dDescriptor\0")?,
            create_filter: *lib.get(b"cudnnCreateFilterDescriptor\0")?,
            destroy_filter: *lib.get(b"cudnnDestroyFilterDescriptor\0")?,
            set_filter_4d: *lib.get(b"cudnnSetFilter4dDescriptor\0")?,
            create_conv: *lib.get(b"cudnnCreateConvolutionDescriptor\0")?,
            destroy_conv: *lib.get(b"cudnnDestroyConvolutionDescriptor\0")?,
            set_conv_2d: *lib.get(b"cudnnSetConvolution2dDescriptor\0")?,
            set_group_count: *lib.get(b"cudnnSetConvolutionGroupCount\0")?,
            set_math_type: *lib.get(b"cudnnSetConvolutionMathType\0")?,
            output_dim: *lib.get(b"cudnnGetConvolution2dForwardOutputDim\0")?,
            algorithm_v7: *lib.get(b"cudnnGetConvolutionForwardAlgorithm_v7\0")?,
            workspace_size: *lib.get(b"cudnnGetConvolutionForwardWorkspaceSize\0")?,
            forward: *lib.get(b"cudnnConvolutionForward\0")?,
            _lib: lib,
        })
    }
}

impl Api {
    /// `Ok` for CUDNN_STATUS_SUCCESS, else an error naming the call and cuDNN's words for the status.
    fn check(&self, status: Status, call: &str, conv: &Conv) -> Result<()> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: cudnnGetErrorString returns a static NUL-terminated string for any status.
        let text = unsafe { CStr::from_ptr((self.get_error_string)(status)) }.to_string_lossy();
        Err(candle_core::Error::Cuda(
            format!(
                "cuDNN {call} for a {:?} convolution of input {:?} with weights {:?} ({:?}): {text}",
                conv.dtype, conv.x, conv.w, conv.geometry
            )
            .into(),
        ))
    }
}

/// The descriptors of one convolution and the algorithm cuDNN's heuristics rank first for it.
struct Plan {
    x: Desc,
    w: Desc,
    y: Desc,
    conv: Desc,
    algo: c_int,
    workspace: usize,
    out: [c_int; 4],
}

impl Plan {
    fn new(api: &'static Api, handle: Handle, c: &Conv) -> Result<Self> {
        let dt = match c.dtype {
            DType::F16 => DATA_HALF,
            DType::BF16 => DATA_BFLOAT16,
            _ => DATA_FLOAT,
        };
        let mut plan = Plan {
            x: std::ptr::null_mut(),
            w: std::ptr::null_mut(),
            y: std::ptr::null_mut(),
            conv: std::ptr::null_mut(),
            algo: 0,
            workspace: 0,
            out: [0; 4],
        };
        let g = c.geometry;
        let int = |v: usize| c_int::try_from(v).map_err(|_| candle_core::Error::Msg(format!("{c:?}: too large")));
        let [n, ch, h, wd] = c.x;
        let [k, kc, r, s] = c.w;
        // SAFETY: each call gets descriptors that cuDNN made (a null one is never passed on: the
        // create call that would fill it returns an error first) and values of its documented types.
        unsafe {
            api.check((api.create_tensor)(&mut plan.x), "cudnnCreateTensorDescriptor", c)?;
            api.check((api.create_tensor)(&mut plan.y), "cudnnCreateTensorDescriptor", c)?;
            api.check((api.create_filter)(&mut plan.w), "cudnnCreateFilterDescriptor", c)?;
            api.check((api.create_conv)(&mut plan.conv), "cudnnCreateConvolutionDescriptor", c)?;
            api.check(
                (api.set_tensor_4d)(plan.x, FORMAT_NCHW, dt, n, ch, h, wd),
                "input descriptor",
                c,
            )?;
            api.check(
                (api.set_filter_4d)(plan.w, dt, FORMAT_NCHW, k, kc, r, s),
                "weight descriptor",
                c,
            )?;
            // f32 accumulation at every precision, as torch sets it for half and bfloat16.
            let set_conv = (api.set_conv_2d)(
                plan.conv,
                int(g.padding[0])?,
                int(g.padding[1])?,
                int(g.stride[0])?,
                int(g.stride[1])?,
                int(g.dilation[0])?,
                int(g.dilation[1])?,
                CROSS_CORRELATION,
                DATA_FLOAT,
            );
            api.check(set_conv, "convolution descriptor", c)?;
            api.check((api.set_group_count)(plan.conv, int(g.groups)?), "group count", c)?;
            let math = if c.dtype == DType::F32 {
                FMA_MATH
            } else {
                TENSOR_OP_MATH
            };
            api.check((api.set_math_type)(plan.conv, math), "math type", c)?;
            let [on, oc, oh, ow] = &mut plan.out;
            api.check(
                (api.output_dim)(plan.conv, plan.x, plan.w, on, oc, oh, ow),
                "output shape",
                c,
            )?;
            let [on, oc, oh, ow] = plan.out;
            api.check(
                (api.set_tensor_4d)(plan.y, FORMAT_NCHW, dt, on, oc, oh, ow),
                "output descriptor",
                c,
            )?;
            let mut perfs = [AlgoPerf::default(); 16];
            let mut count = 0;
            let ranked = (api.algorithm_v7)(
                handle,
                plan.x,
                plan.w,
                plan.conv,
                plan.y,
                16,
                &mut count,
                perfs.as_mut_ptr(),
            );
            api.check(ranked, "cudnnGetConvolutionForwardAlgorithm_v7", c)?;
            let Some(first) = perfs.iter().take(count.max(0) as usize).find(|p| p.status == 0) else {
                return Err(candle_core::Error::Cuda(
                    format!("cuDNN has no algorithm for the convolution {c:?}").into(),
                ));
            };
            plan.algo = first.algo;
            if c.dtype != DType::F32 {
                api.check((api.set_math_type)(plan.conv, first.math_type), "math type", c)?;
            }
            let size = (api.workspace_size)(
                handle,
                plan.x,
                plan.w,
                plan.conv,
                plan.y,
                plan.algo,
                &mut plan.workspace,
            );
            api.check(size, "cudnnGetConvolutionForwardWorkspaceSize", c)?;
        }
        Ok(plan)
    }
}

impl Drop for Plan {
    fn drop(&mut self) {
        let Ok(api) = api() else { return };
        // SAFETY: each descriptor was made by cuDNN and is destroyed once; a null one was never made.
        unsafe {
            for (desc, destroy) in [
                (self.x, api.destroy_tensor),
                (self.y, api.destroy_tensor),
                (self.w, api.destroy_filter),
                (self.conv, api.destroy_conv),
            ] {
                if !desc.is_null() {
                    destroy(desc);
                }
            }
        }
    }
}

/// Plans kept per device before they are dropped and made again (inputs of many lengths).
const MAX_PLANS: usize = 1024;

struct DeviceCudnn {
    handle: Handle,
    plans: HashMap<Conv, Plan>,
}

// SAFETY: the handle and descriptors are only used under DEVICES' lock.
unsafe impl Send for DeviceCudnn {}

static DEVICES: OnceLock<Mutex<HashMap<DeviceId, DeviceCudnn>>> = OnceLock::new();

/// Runs one convolution on `x`'s device and stream, its plan made at the first one of its shape.
fn convolve<T: CudaDType + DeviceRepr + WithDType>(
    c: &Conv,
    (xs, xl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let api = api().map_err(|e| candle_core::Error::Cuda(e.into()))?;
    let dev: &CudaDevice = xs.device();
    let stream = dev.cuda_stream();
    let mut devices = DEVICES
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| candle_core::Error::Msg("cuDNN state lost after a panic".into()))?;
    let state = match devices.entry(dev.id()) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => {
            let mut handle = std::ptr::null_mut();
            // SAFETY: cudnnCreate fills the handle; it is used on this device only.
            api.check(unsafe { (api.create)(&mut handle) }, "cudnnCreate", c)?;
            e.insert(DeviceCudnn {
                handle,
                plans: HashMap::new(),
            })
        }
    };
    if state.plans.len() >= MAX_PLANS && !state.plans.contains_key(c) {
        state.plans.clear();
    }
    let plan = match state.plans.entry(*c) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e.insert(Plan::new(api, state.handle, c)?),
    };
    let [on, oc, oh, ow] = plan.out.map(|d| d.max(0) as usize);
    let (x, w) = (input::<T>(xs, xl)?, input::<T>(ws, wl)?);
    // SAFETY: the convolution writes every output element.
    let mut y = unsafe { dev.alloc::<T>(on * oc * oh * ow)? };
    // SAFETY: cuDNN only writes the workspace.
    let mut workspace = unsafe { dev.alloc::<u8>(plan.workspace.max(1))? };
    let (xp, _x) = x.device_ptr(&stream);
    let (wp, _w) = w.device_ptr(&stream);
    let (yp, _y) = y.device_ptr_mut(&stream);
    let (wsp, _ws) = workspace.device_ptr_mut(&stream);
    let (alpha, beta) = (1.0f32, 0.0f32);
    // SAFETY: the descriptors were made for these shapes and this dtype; every pointer is a live
    // device allocation of the size they describe, on the stream the handle is set to.
    unsafe {
        let set = (api.set_stream)(state.handle, stream.cu_stream() as *mut c_void);
        api.check(set, "cudnnSetStream", c)?;
        let status = (api.forward)(
            state.handle,
            (&alpha) as *const f32 as *const c_void,
            plan.x,
            xp as *const c_void,
            plan.w,
            wp as *const c_void,
            plan.conv,
            plan.algo,
            wsp as *mut c_void,
            plan.workspace,
            (&beta) as *const f32 as *const c_void,
            plan.y,
            yp as *mut c_void,
        );
        api.check(status, "cudnnConvolutionForward", c)?;
    }
    drop((_x, _w, _y, _ws));
    Ok((
        CudaStorage::wrap_cuda_slice(y, dev.clone()),
        Shape::from((on, oc, oh, ow)),
    ))
}

impl Kernel for Conv {
    fn name(&self) -> &'static str {
        "cudnn_conv2d"
    }

    fn run2(&self, xs: &CudaStorage, xl: &Layout, ws: &CudaStorage, wl: &Layout) -> Result<(CudaStorage, Shape)> {
        by_dtype!(xs, convolve(self, (xs, xl), (ws, wl)))
    }
}
