//! Layers whose candle-nn versions are slow on CUDA, with the same numbers.
//!
//! candle's CUDA kernel for a broadcast add computes every element's source index with a 64-bit
//! division per dimension; profiled on an H100 (docs/benchmarks.md), the bias add after each Linear
//! and the attention-mask add took over half of BERT-base's GPU time at batch 32. `add_broadcast`
//! does those two shapes with one 32-bit index computation per element: a row vector added to every
//! row (a bias), and a per-batch row added to every row of that batch (an attention mask). Elsewhere,
//! and on the CPU, it is `broadcast_add`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `nn.Linear`: y = x W^T + b, as candle-nn's Linear (same weight names, same matmul), with the bias
/// added by `add_broadcast`.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // candle's CUDA matmul refuses strided inputs (a pooled [CLS] row, say) that its CPU matmul takes.
        let x = if x.is_contiguous() { x.clone() } else { x.contiguous()? };
        let y = candle_nn::Linear::new(self.weight.clone(), None).forward(&x)?;
        match &self.bias {
            Some(b) => add_broadcast(&y, b),
            None => Ok(y),
        }
    }
}

pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    linear_b(in_dim, out_dim, true, vb)
}

pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    linear_b(in_dim, out_dim, false, vb)
}

pub fn linear_b(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
    Ok(Linear { weight, bias })
}

/// `x + b` with `b` broadcast to `x`'s shape.
pub fn add_broadcast(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(plan) = cuda::plan(x, b) {
        return x.apply_op2_no_bwd(b, &plan);
    }
    x.broadcast_add(b)
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::OnceLock;

    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
    use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp2, DType, Layout, Shape, Tensor};

    /// y[i] = x[i] + b[(i / group) * inner + i % inner], in f32, rounded once to the dtype.
    const SOURCE: &str = r#"
__device__ __forceinline__ float bf16_to_f32(unsigned short h) { return __uint_as_float(((unsigned int)h) << 16); }
__device__ __forceinline__ unsigned short f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ float f16_to_f32(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short f32_to_f16(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }

#define ADD_BROADCAST(NAME, T, LOAD, STORE) \
extern "C" __global__ void NAME(const T* x, const T* b, T* y, unsigned int n, unsigned int group, unsigned int inner) { \
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) { \
        unsigned int j = (i / group) * inner + i % inner; \
        y[i] = STORE(LOAD(x[i]) + LOAD(b[j])); \
    } \
}
#define ID(v) (v)
ADD_BROADCAST(add_broadcast_f32, float, ID, ID)
ADD_BROADCAST(add_broadcast_bf16, unsigned short, bf16_to_f32, f32_to_bf16)
ADD_BROADCAST(add_broadcast_f16, unsigned short, f16_to_f32, f32_to_f16)
"#;

    fn ptx() -> candle_core::Result<&'static str> {
        static PTX: OnceLock<Result<String, String>> = OnceLock::new();
        PTX.get_or_init(|| {
            candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(SOURCE)
                .map(|p| p.to_src())
                .map_err(|e| e.to_string())
        })
        .as_deref()
        .map_err(|e| candle_core::Error::Cuda(format!("compiling add_broadcast: {e}").into()))
    }

    /// The launch of one add: `b` repeats every `inner` elements within a group of `group`.
    pub struct Plan {
        group: u32,
        inner: u32,
    }

    /// A plan when `b` repeats along `x`'s leading dimensions: its trailing dimensions equal `x`'s
    /// (`inner` elements), and before them it has only ones, or the batch and then ones. That is a
    /// bias (`[out]`, `[1, 1, out]`) or an attention mask (`[batch, 1, q_len, kv_len]` on
    /// `[batch, heads, q_len, kv_len]`). `None` for anything else, for other dtypes, and for
    /// non-contiguous tensors or more than 2^32 elements.
    pub fn plan(x: &Tensor, b: &Tensor) -> Option<Plan> {
        if !x.device().is_cuda() || x.dtype() != b.dtype() || !x.is_contiguous() || !b.is_contiguous() {
            return None;
        }
        if !matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16) {
            return None;
        }
        let (xd, bd) = (x.dims(), b.dims());
        let n = u32::try_from(x.elem_count()).ok()?;
        if bd.len() > xd.len() || n == 0 {
            return None;
        }
        let matching = bd.iter().rev().zip(xd.iter().rev()).take_while(|(b, x)| b == x).count();
        if matching == 0 {
            return None;
        }
        let inner: usize = xd[xd.len() - matching..].iter().product();
        let lead = &bd[..bd.len() - matching];
        let ones = |s: &[usize]| s.iter().all(|&d| d == 1);
        let group = if ones(lead) {
            n
        } else if bd.len() == xd.len() && lead[0] == xd[0] && ones(&lead[1..]) {
            n / xd[0] as u32
        } else {
            return None;
        };
        Some(Plan {
            group,
            inner: inner as u32,
        })
    }

    impl Plan {
        fn launch<T: DeviceRepr>(
            &self,
            dev: &CudaDevice,
            name: &str,
            x: &CudaSlice<T>,
            xl: &Layout,
            b: &CudaSlice<T>,
            bl: &Layout,
        ) -> candle_core::Result<CudaSlice<T>> {
            let n = xl.shape().elem_count();
            let (x, b) = (x.slice(xl.start_offset()..), b.slice(bl.start_offset()..));
            // SAFETY: the kernel writes every one of the n elements.
            let y = unsafe { dev.alloc::<T>(n)? };
            let f = dev.get_or_load_custom_func(name, "hwcov_add_broadcast", ptx()?)?;
            let mut builder = f.builder();
            let n32 = n as u32;
            builder
                .arg(&x)
                .arg(&b)
                .arg(&y)
                .arg(&n32)
                .arg(&self.group)
                .arg(&self.inner);
            // SAFETY: the arguments match the kernel's signature, and n bounds every access.
            unsafe { builder.launch(LaunchConfig::for_num_elems(n32)) }.w()?;
            Ok(y)
        }
    }

    impl CustomOp2 for Plan {
        fn name(&self) -> &'static str {
            "add_broadcast"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            // `plan` only returns a plan for CUDA tensors.
            Err(candle_core::Error::Msg(
                "add_broadcast runs on CUDA tensors only".into(),
            ))
        }

        fn cuda_fwd(
            &self,
            xs: &CudaStorage,
            xl: &Layout,
            bs: &CudaStorage,
            bl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let dev = xs.device().clone();
            let slice = match (&xs.slice, &bs.slice) {
                (CudaStorageSlice::F32(x), CudaStorageSlice::F32(b)) => {
                    CudaStorageSlice::F32(self.launch(&dev, "add_broadcast_f32", x, xl, b, bl)?)
                }
                (CudaStorageSlice::BF16(x), CudaStorageSlice::BF16(b)) => {
                    CudaStorageSlice::BF16(self.launch(&dev, "add_broadcast_bf16", x, xl, b, bl)?)
                }
                (CudaStorageSlice::F16(x), CudaStorageSlice::F16(b)) => {
                    CudaStorageSlice::F16(self.launch(&dev, "add_broadcast_f16", x, xl, b, bl)?)
                }
                _ => return Err(candle_core::Error::Msg("add_broadcast: unsupported dtypes".into())),
            };
            Ok((CudaStorage { slice, device: dev }, xl.shape().clone()))
        }
    }
}
