//! hwcov's WGSL kernels: for each op of a plan step, the dispatches that compute it.
//!
//! Every kernel binds a uniform block of parameters at binding 0 (shapes, strides, scalars; the
//! same shader serves every shape) and its storage buffers from binding 1 on, in the order of
//! `Dispatch::args`. Tensors live on the device as f32 or i32 (int64, int32, uint8 and bool as
//! i32; int64 values are checked to fit when they cross from the host). An op or dtype without a
//! kernel is refused by name, never run elsewhere.

mod conv;
mod einsum;
mod index;
pub mod map;
pub mod math;
mod matmul;
mod reduce;
mod resize;

use hwcov_core::{DType, Error, HostTensor, Result};
use hwcov_onnx::Step;
use hwcov_onnx::ir::{Op, ValueType};

/// Threads per workgroup of the one-dimensional kernels.
pub const WG: u32 = 256;
/// Parameter words per dispatch (512 bytes, a multiple of the uniform offset alignment).
pub const PARAM_WORDS: usize = 128;
/// The most axes a kernel indexes.
pub const MAX_RANK: usize = 8;

/// The WGSL element type a tensor is stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scalar {
    F32,
    I32,
}

impl Scalar {
    pub fn wgsl(self) -> &'static str {
        match self {
            Scalar::F32 => "f32",
            Scalar::I32 => "i32",
        }
    }
}

/// How a dtype is stored on the device; `None` where there is no kernel for it.
pub fn scalar(dtype: DType) -> Option<Scalar> {
    match dtype {
        DType::F32 => Some(Scalar::F32),
        DType::I64 | DType::I32 | DType::U8 | DType::Bool => Some(Scalar::I32),
        DType::F16 | DType::BF16 | DType::F64 => None,
    }
}

/// How a weight operand (a product's B, a convolution's W, an embedding table) is stored. At f16
/// the session keeps these initializers in f16 (`Session::weights_f16`, where the adapter has
/// shader-f16); the kernels widen each load to f32, and activations and sums stay f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    F32,
    F16,
}

impl Weights {
    /// How input `i` of the step is stored; refused unless f32 or f16.
    pub fn of(io: &StepIo, i: usize) -> Result<Weights> {
        match io.ins[i].dtype {
            DType::F16 => Ok(Weights::F16),
            DType::F32 => Ok(Weights::F32),
            d => Err(io.refuse(format!("a weight of {d}"))),
        }
    }

    pub fn wgsl(self) -> &'static str {
        match self {
            Weights::F32 => "f32",
            Weights::F16 => "f16",
        }
    }

    /// The directive a shader reading f16 starts with.
    pub fn enable(self) -> String {
        match self {
            Weights::F32 => String::new(),
            Weights::F16 => "enable f16;\n".to_string(),
        }
    }
}

/// A buffer a dispatch binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// The step's input at this index.
    In(usize),
    /// The step's output at this index.
    Out(usize),
    /// A scratch buffer of the step (bytes given in `Kernels::scratch`).
    Scratch(usize),
    /// A table the host computed for the step (`Kernels::tables`).
    Table(usize),
    /// The plan's status word: kernels that find a bad index store their step's number there.
    Status,
    /// A value or constant of the plan (a fused group's operands, which belong to its members).
    Plan(hwcov_onnx::Operand),
}

/// One compute dispatch.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub source: String,
    pub args: Vec<Arg>,
    pub params: Vec<u32>,
    pub groups: [u32; 3],
}

/// What a step needs on the device.
#[derive(Debug, Default)]
pub struct Kernels {
    pub dispatches: Vec<Dispatch>,
    /// Bytes of each scratch buffer.
    pub scratch: Vec<u64>,
    /// Words of each table.
    pub tables: Vec<Vec<u32>>,
    /// The output is a view of input 0 (Reshape): no dispatch, no buffer of its own.
    pub alias: bool,
}

/// A step as the kernels see it: the types of its operands and outputs, the host values of its
/// constant operands, and its number in the plan (for the status word).
pub struct StepIo<'a> {
    pub step: &'a Step,
    pub index: u32,
    pub ins: Vec<ValueType>,
    pub outs: Vec<ValueType>,
    pub consts: Vec<Option<&'a HostTensor>>,
}

impl StepIo<'_> {
    pub fn scalar_in(&self, i: usize) -> Result<Scalar> {
        scalar(self.ins[i].dtype).ok_or_else(|| self.refuse(format!("{} tensors", self.ins[i].dtype)))
    }

    pub fn scalar_out(&self, i: usize) -> Result<Scalar> {
        scalar(self.outs[i].dtype).ok_or_else(|| self.refuse(format!("{} tensors", self.outs[i].dtype)))
    }

    /// "unsupported: <op> (node <name>)" with what is missing.
    pub fn refuse(&self, what: impl std::fmt::Display) -> Error {
        Error::Unsupported {
            platform: "webgpu".into(),
            what: format!("op {} (node {})", self.step.onnx_op, self.step.node),
            reason: format!("no WGSL kernel for {what}"),
        }
    }

    pub fn check_rank(&self, shape: &[usize]) -> Result<()> {
        if shape.len() > MAX_RANK {
            return Err(self.refuse(format!("rank {} (at most {MAX_RANK})", shape.len())));
        }
        Ok(())
    }
}

/// The dispatches of one step.
pub fn kernels(io: &StepIo) -> Result<Kernels> {
    for t in io.ins.iter().chain(&io.outs) {
        io.check_rank(&t.shape)?;
    }
    match &io.step.op {
        Op::Reshape => Ok(Kernels {
            alias: true,
            ..Default::default()
        }),
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast | Op::Expand | Op::BatchNorm { .. } | Op::Range => {
            map::elementwise(io)
        }
        Op::Transpose { .. } | Op::Slice { .. } | Op::Tile | Op::Concat { .. } | Op::Split { .. } => map::layout(io),
        Op::Pad { .. } => map::pad(io),
        Op::Trilu { .. } => map::trilu(io),
        Op::MatMul | Op::Gemm { .. } => matmul::matmul(io),
        Op::Softmax { .. } | Op::Hardmax { .. } => reduce::softmax(io),
        Op::LayerNorm { .. } | Op::InstanceNorm { .. } => reduce::norm(io),
        Op::Reduce { .. } => reduce::reduce(io),
        Op::ArgReduce { .. } => reduce::arg_reduce(io),
        Op::CumSum { .. } => reduce::cumsum(io),
        Op::Conv { .. } => conv::conv(io),
        Op::MaxPool { .. } | Op::AveragePool { .. } => conv::pool(io),
        Op::Gather { .. } | Op::GatherElements { .. } | Op::GatherND { .. } => index::gather(io),
        Op::OneHot { .. } => index::one_hot(io),
        Op::ScatterND { .. } | Op::ScatterElements { .. } => index::scatter(io),
        Op::Resize(_) => resize::resize(io),
        Op::Einsum { .. } => einsum::einsum(io),
        Op::NonZero => Err(io.refuse("this op")),
    }
}

/// Workgroups for `n` threads of `WG`, spread over x and y past the 65535 limit of one dimension.
pub fn grid(n: usize) -> [u32; 3] {
    let groups = n.div_ceil(WG as usize).max(1);
    let x = groups.min(65535);
    let y = groups.div_ceil(x);
    [x as u32, y as u32, 1]
}

/// The WGSL that every kernel starts with: the parameter block and its accessors.
/// The parameter block every kernel reads, and `inf_f()` and `nan_f()`: infinity and NaN read from
/// private variables, since a constant one (`bitcast<f32>(0x7f800000u)`) is a compile error in
/// Chromium's Tint.
pub fn prelude() -> String {
    format!(
        "struct Params {{ v: array<vec4<u32>, {} > }}\n\
         @group(0) @binding(0) var<uniform> P: Params;\n\
         fn p(i: u32) -> u32 {{ return P.v[i >> 2u][i & 3u]; }}\n\
         fn pi(i: u32) -> i32 {{ return bitcast<i32>(p(i)); }}\n\
         fn pf(i: u32) -> f32 {{ return bitcast<f32>(p(i)); }}\n\
         var<private> INF_BITS: u32 = 0x7f800000u;\n\
         var<private> NAN_BITS: u32 = 0x7fc00000u;\n\
         fn inf_f() -> f32 {{ return bitcast<f32>(INF_BITS); }}\n\
         fn nan_f() -> f32 {{ return bitcast<f32>(NAN_BITS); }}\n",
        PARAM_WORDS / 4
    )
}

/// A storage binding declaration.
pub fn binding(index: usize, name: &str, scalar: Scalar, writable: bool) -> String {
    let access = if writable { "read_write" } else { "read" };
    format!(
        "@group(0) @binding({index}) var<storage, {access}> {name}: array<{}>;\n",
        scalar.wgsl()
    )
}

/// The status word's binding.
pub fn status_binding(index: usize) -> String {
    format!("@group(0) @binding({index}) var<storage, read_write> status: array<atomic<u32>>;\n")
}

/// The entry point of a one-dimensional kernel: `i` is the thread's element; threads past `p(0)` return.
pub const ENTRY_1D: &str = "@compute @workgroup_size(256)\n\
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {\n\
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;\n\
    if (i >= p(0u)) { return; }\n";

/// Row-major strides.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    hwcov_onnx::eval::strides(shape)
}

/// A value as a parameter word.
pub fn word(v: usize) -> u32 {
    v as u32
}

/// A signed value as a parameter word.
pub fn iword(v: i64) -> u32 {
    (v as i32) as u32
}

/// An f32 as a parameter word.
pub fn fword(v: f32) -> u32 {
    v.to_bits()
}

/// Pads a list of words to `n` with zeros.
pub fn padded(mut v: Vec<u32>, n: usize) -> Vec<u32> {
    v.resize(v.len().max(n), 0);
    v
}

/// The kernels of a step that is one one-dimensional dispatch over its output, reading input 0.
pub fn one_to_one(io: &StepIo, source: String, params: Vec<u32>) -> Kernels {
    Kernels {
        dispatches: vec![dispatch_1d(
            source,
            vec![Arg::In(0), Arg::Out(0)],
            io.outs[0].numel(),
            params,
        )],
        ..Default::default()
    }
}

/// A dispatch of a one-dimensional kernel over `n` elements (p(0) = n is prepended to `params`).
pub fn dispatch_1d(source: String, args: Vec<Arg>, n: usize, params: Vec<u32>) -> Dispatch {
    let mut all = vec![word(n)];
    all.extend(params);
    Dispatch {
        source,
        args,
        params: all,
        groups: grid(n),
    }
}
