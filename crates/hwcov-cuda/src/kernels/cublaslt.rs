//! `nn.Linear` on CUDA through cuBLASLt, as torch runs it: `x W^T + b` in one kernel, rounded once to
//! the dtype. torch's `addmm` adds the bias of an input of more than one row in cuBLASLt's epilogue;
//! a single row (a decoding step) it hands to `cublasGemmEx` with the bias copied into the output and
//! beta 1. Here a single row's bias is the product's C with beta 1, the same sum, without the copy.
//! cuBLASLt's heuristic also picks faster kernels for these shapes than the strided-batched cuBLAS
//! call behind candle's matmul, and a decoding step's single rows took less time this way than
//! through candle's matmul and a bias kernel (docs/benchmarks.md, items 5 and 10).
//!
//! A product's descriptors and the heuristic's kernel are made once per shape, dtype and pointer
//! alignment, and kept per device. Half-precision products get torch's 1 MiB workspace: given 32 MiB,
//! the heuristic picks other kernels for small biased products (40 rows, 37 columns), whose f32 sums
//! come out in another order than torch's and part from its bf16 results (measured on an H100,
//! docs/platforms/cuda.md). f32 products, checked against f32 references within 1e-4 and not to the
//! bit, get 32 MiB, where the heuristic finds kernels 3-14% faster for the large ones.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ffi::c_void;
use std::mem::size_of;
use std::sync::{Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublas::sys::cublasOperation_t;
use candle_core::cuda_backend::cudarc::cublaslt::{result as lt, sys};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, DeviceId};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape, Tensor, WithDType};

use super::launch::{Kernel, OnCuda, by_dtype, input, not_cuda};

/// The workspace a product of `dtype` may use.
fn workspace_bytes(dtype: DType) -> usize {
    match dtype {
        DType::F32 => F32_WORKSPACE_BYTES,
        _ => 1 << 20,
    }
}

/// The largest workspace, allocated once per device.
const F32_WORKSPACE_BYTES: usize = 32 << 20;

/// `x W^T + b` for `x` (..., k) and `weight` (n, k) of one float dtype on CUDA, or `None` where the
/// tensors are not plain CUDA matrices.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    let Some(product) = Product::plan(x, weight, bias) else {
        return Ok(None);
    };
    let x2 = x.reshape((product.m, product.k))?;
    let y = match bias {
        Some(b) => x2.apply_op3_no_bwd(weight, b, &OnCuda(&product))?,
        None => x2.apply_op2_no_bwd(weight, &OnCuda(&product))?,
    };
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = product.n;
    }
    Ok(Some(y.reshape(dims)?))
}

/// One product: y (m, n) = x (m, k) W^T (W is (n, k)), plus the bias where there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Product {
    dtype: DType,
    m: usize,
    n: usize,
    k: usize,
    bias: bool,
}

impl Product {
    fn plan(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Option<Self> {
        let float = matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16);
        let (n, k) = w.dims2().ok()?;
        let m = x.elem_count() / k.max(1);
        let plain = |t: &Tensor| t.device().is_cuda() && t.is_contiguous() && t.dtype() == x.dtype();
        let bias_fits = b.is_none_or(|b| plain(b) && b.dims() == [n]);
        let fits = float && plain(x) && plain(w) && bias_fits && x.dims().last() == Some(&k);
        (fits && m > 0 && n > 0 && k > 0).then_some(Product {
            dtype: x.dtype(),
            m,
            n,
            k,
            bias: b.is_some(),
        })
    }

    /// A single row's bias goes in as the product's C (beta 1) rather than the epilogue's bias.
    fn bias_in_c(&self) -> bool {
        self.bias && self.m == 1
    }
}

/// Runs one product on `x`'s device and stream, its plan made at the first product of its shape.
fn product<T: CudaDType + DeviceRepr + WithDType>(
    p: &Product,
    (xs, xl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
    bias: Option<(&CudaStorage, &Layout)>,
) -> Result<CudaStorage> {
    let dev = xs.device();
    let stream = dev.cuda_stream();
    let (x, w) = (input::<T>(xs, xl)?, input::<T>(ws, wl)?);
    let b = bias.map(|(bs, bl)| input::<T>(bs, bl)).transpose()?;
    // SAFETY: the product writes all m * n elements.
    let mut y = unsafe { dev.alloc::<T>(p.m * p.n)? };
    let (xp, _x) = x.device_ptr(&stream);
    let (wp, _w) = w.device_ptr(&stream);
    let (yp, _y) = y.device_ptr_mut(&stream);
    let bp = b.as_ref().map(|b| b.device_ptr(&stream));
    // C is the bias where it goes in as C, else the output itself (read with beta 0: not at all).
    let (cp, beta) = match &bp {
        Some((bp, _)) if p.bias_in_c() => (*bp, 1.0f32),
        _ => (yp, 0.0f32),
    };
    let key = Key {
        device: dev.id(),
        product: *p,
        align: [alignment(wp), alignment(xp), alignment(yp), alignment(cp)],
    };
    let err = |what: &str, e: lt::CublasError| {
        candle_core::Error::Cuda(
            format!(
                "cuBLASLt {what} for a {:?} Linear ({} rows, {} in, {} out): {e}",
                p.dtype, p.m, p.k, p.n
            )
            .into(),
        )
    };
    let mut devices = DEVICES.get_or_init(Default::default).lock().map_err(|_| poisoned())?;
    let state = match devices.entry(key.device) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e.insert(DeviceLt::new(dev).map_err(|e| err("setup", e))?),
    };
    if !state.plans.contains_key(&key) {
        if state.plans.len() >= MAX_PLANS {
            state.plans.clear();
        }
        let plan = Plan::new(state.handle, &key).map_err(|e| err("heuristic", e))?;
        state.plans.insert(key, plan);
    }
    let plan = state.plans.get(&key).ok_or_else(poisoned)?;
    let alpha = 1.0f32;
    let (workspace, _ws) = state.workspace.device_ptr(&stream);
    // SAFETY: the descriptors were made for these shapes, types and alignments; every pointer is a
    // live device allocation of the size the layouts describe, on the stream the product runs on.
    unsafe {
        if let (Some((bp, _)), false) = (&bp, p.bias_in_c()) {
            set_desc(
                plan.desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                bp,
            )
            .map_err(|e| err("bias", e))?;
        }
        lt::matmul(
            state.handle,
            plan.desc,
            (&alpha) as *const f32 as *const c_void,
            (&beta) as *const f32 as *const c_void,
            wp as *const c_void,
            plan.a,
            xp as *const c_void,
            plan.b,
            cp as *const c_void,
            plan.c,
            yp as *mut c_void,
            plan.c,
            &plan.algo,
            workspace as *mut c_void,
            workspace_bytes(p.dtype),
            stream.cu_stream() as sys::cudaStream_t,
        )
        .map_err(|e| err("matmul", e))?;
    }
    drop((_x, _w, _y, _ws));
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

/// The largest power of two up to 256 that divides a device address, as cuBLASLt's heuristic asks.
fn alignment(ptr: u64) -> u32 {
    1u32 << ptr.trailing_zeros().min(8)
}

fn poisoned() -> candle_core::Error {
    candle_core::Error::Msg("cuBLASLt state lost after a panic".into())
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    device: DeviceId,
    product: Product,
    /// Of W, x, y and C, in bytes.
    align: [u32; 4],
}

/// Plans kept per device before they are dropped and made again (prompts of many lengths).
const MAX_PLANS: usize = 1024;

struct DeviceLt {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    plans: HashMap<Key, Plan>,
}

// SAFETY: the handle and descriptors are only used under DEVICES' lock.
unsafe impl Send for DeviceLt {}

static DEVICES: OnceLock<Mutex<HashMap<DeviceId, DeviceLt>>> = OnceLock::new();

impl DeviceLt {
    fn new(dev: &CudaDevice) -> std::result::Result<Self, lt::CublasError> {
        let handle = lt::create_handle()?;
        // SAFETY: cuBLASLt only writes the workspace.
        let workspace = unsafe { dev.alloc::<u8>(F32_WORKSPACE_BYTES) }
            .map_err(|_| lt::CublasError(sys::cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED))?;
        Ok(DeviceLt {
            handle,
            workspace,
            plans: HashMap::new(),
        })
    }
}

/// The descriptors of one product and the kernel cuBLASLt's heuristic chose for it. cuBLASLt is
/// column-major: y^T (n, m) = W (stored k x n, transposed) times x^T (stored k x m).
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    c: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Plan {
    fn new(handle: sys::cublasLtHandle_t, key: &Key) -> std::result::Result<Self, lt::CublasError> {
        let Product { dtype, m, n, k, .. } = key.product;
        let ty = match dtype {
            DType::BF16 => sys::cudaDataType_t::CUDA_R_16BF,
            DType::F16 => sys::cudaDataType_t::CUDA_R_16F,
            _ => sys::cudaDataType_t::CUDA_R_32F,
        };
        // f32 products stay in f32 (no TF32), as torch's default.
        let desc = lt::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType_t::CUDA_R_32F,
        )?;
        let mut plan = Plan {
            desc,
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            c: std::ptr::null_mut(),
            algo: sys::cublasLtMatmulAlgo_t { data: [0; 8] },
        };
        let (m, n, k) = (m as u64, n as u64, k as u64);
        plan.a = lt::create_matrix_layout(ty, k, n, k as i64)?;
        plan.b = lt::create_matrix_layout(ty, k, m, k as i64)?;
        plan.c = lt::create_matrix_layout(ty, n, m, n as i64)?;
        let epilogue = if key.product.bias && !key.product.bias_in_c() {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS
        } else {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT
        };
        let pref = Pref(lt::create_matmul_pref()?);
        // SAFETY: each attribute gets a value of its documented type.
        unsafe {
            use sys::cublasLtMatmulDescAttributes_t as D;
            use sys::cublasLtMatmulPreferenceAttributes_t as P;
            set_desc(desc, D::CUBLASLT_MATMUL_DESC_TRANSA, &cublasOperation_t::CUBLAS_OP_T)?;
            set_desc(desc, D::CUBLASLT_MATMUL_DESC_TRANSB, &cublasOperation_t::CUBLAS_OP_N)?;
            set_desc(desc, D::CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue)?;
            set_pref(
                pref.0,
                P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &(workspace_bytes(dtype) as u64),
            )?;
            let [wa, xa, ya, ca] = key.align;
            set_pref(pref.0, P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &wa)?;
            set_pref(pref.0, P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &xa)?;
            set_pref(pref.0, P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ca)?;
            set_pref(pref.0, P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ya)?;
            let heuristic = lt::get_matmul_algo_heuristic(handle, desc, plan.a, plan.b, plan.c, plan.c, pref.0)?;
            plan.algo = heuristic.algo;
        }
        Ok(plan)
    }
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: each descriptor was made by cuBLASLt and is dropped once; a null one was never made.
        unsafe {
            for layout in [self.a, self.b, self.c] {
                if !layout.is_null() {
                    let _ = lt::destroy_matrix_layout(layout);
                }
            }
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

struct Pref(sys::cublasLtMatmulPreference_t);

impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: made by cuBLASLt, dropped once.
        let _ = unsafe { lt::destroy_matmul_pref(self.0) };
    }
}

/// # Safety
/// `T` must be the attribute's documented type.
unsafe fn set_desc<T>(
    desc: sys::cublasLtMatmulDesc_t,
    attr: sys::cublasLtMatmulDescAttributes_t,
    value: &T,
) -> std::result::Result<(), lt::CublasError> {
    // SAFETY: as the caller promises.
    unsafe { lt::set_matmul_desc_attribute(desc, attr, value as *const T as *const c_void, size_of::<T>()) }
}

/// # Safety
/// `T` must be the attribute's documented type.
unsafe fn set_pref<T>(
    pref: sys::cublasLtMatmulPreference_t,
    attr: sys::cublasLtMatmulPreferenceAttributes_t,
    value: &T,
) -> std::result::Result<(), lt::CublasError> {
    // SAFETY: as the caller promises.
    unsafe { lt::set_matmul_pref_attribute(pref, attr, value as *const T as *const c_void, size_of::<T>()) }
}

fn run_by_dtype(
    p: &Product,
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    b: Option<(&CudaStorage, &Layout)>,
) -> Result<(CudaStorage, Shape)> {
    Ok((by_dtype!(x.0, product(p, x, w, b))?, Shape::from((p.m, p.n))))
}

impl Kernel for Product {
    fn name(&self) -> &'static str {
        "cublaslt_linear"
    }

    fn run2(&self, xs: &CudaStorage, xl: &Layout, ws: &CudaStorage, wl: &Layout) -> Result<(CudaStorage, Shape)> {
        run_by_dtype(self, (xs, xl), (ws, wl), None)
    }

    fn run3(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        run_by_dtype(self, (xs, xl), (ws, wl), Some((bs, bl)))
    }
}
