//! The graph layer's ops: what a device runs once an ONNX node is lowered for concrete input
//! shapes. Attributes are resolved (opset rules applied, negative axes made positive, constant
//! inputs such as Slice's starts read), so a device implements each op without reading ONNX.
//! Shape-only nodes (Reshape, Flatten, Squeeze, Unsqueeze, Identity) become `Reshape`, a view.

use hwcov_core::DType;

/// The dtype and static shape of a value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ValueType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl ValueType {
    pub fn new(dtype: DType, shape: Vec<usize>) -> Self {
        ValueType { dtype, shape }
    }

    /// The element count, saturating at usize::MAX (the planner refuses values whose count
    /// overflows, see [`ValueType::checked_numel`]).
    pub fn numel(&self) -> usize {
        self.shape.iter().fold(1usize, |a, &d| a.saturating_mul(d))
    }

    /// The element count, `None` where it overflows usize.
    pub fn checked_numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

impl std::fmt::Display for ValueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.dtype, self.shape)
    }
}

/// Elementwise functions of one operand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Abs,
    Neg,
    Sqrt,
    Reciprocal,
    Exp,
    Log,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    Tanh,
    Erf,
    Sigmoid,
    Relu,
    Floor,
    Ceil,
    /// Round half to even.
    Round,
    Sign,
    Softplus,
    Softsign,
    Not,
    IsNaN,
    IsInf {
        positive: bool,
        negative: bool,
    },
    LeakyRelu {
        alpha: f32,
    },
    Elu {
        alpha: f32,
    },
    Celu {
        alpha: f32,
    },
    Selu {
        alpha: f32,
        gamma: f32,
    },
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    ThresholdedRelu {
        alpha: f32,
    },
    Mish,
    /// GELU, exact (erf) or the tanh approximation.
    Gelu {
        tanh: bool,
    },
    Shrink {
        bias: f32,
        lambd: f32,
    },
    Clip {
        min: Option<f64>,
        max: Option<f64>,
    },
}

/// Elementwise functions of two operands, broadcast as numpy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// Integer Mod with the sign of the divisor (fmod = 0), or C's fmod (fmod = 1).
    Mod {
        fmod: bool,
    },
    Min,
    Max,
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
    Xor,
    /// PRelu: x where x >= 0, slope * x elsewhere.
    PRelu,
    BitShiftLeft,
    BitShiftRight,
    BitwiseAnd,
    BitwiseOr,
    BitwiseXor,
}

impl Binary {
    /// Comparisons and logic give bool.
    pub fn gives_bool(self) -> bool {
        matches!(
            self,
            Binary::Equal
                | Binary::Less
                | Binary::LessOrEqual
                | Binary::Greater
                | Binary::GreaterOrEqual
                | Binary::And
                | Binary::Or
                | Binary::Xor
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    SumSquare,
    LogSum,
    LogSumExp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScatterReduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    Nearest,
    Linear,
    Cubic,
}

/// How Resize maps an output coordinate to an input coordinate (coordinate_transformation_mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinateTransform {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

/// How nearest Resize rounds a coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resize {
    pub mode: ResizeMode,
    pub transform: CoordinateTransform,
    pub nearest: NearestMode,
    pub cubic_coeff_a: f32,
    pub exclude_outside: bool,
    pub extrapolation_value: f32,
    pub antialias: bool,
    /// Scale per axis (output over input), as the coordinate transform uses it.
    pub scales: Vec<f64>,
    /// Region of interest per axis (start, end), for tf_crop_and_resize.
    pub roi: Vec<(f64, f64)>,
}

/// One op of a plan. The comment of each says its operands, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// [x]
    Unary(Unary),
    /// [a, b]
    Binary(Binary),
    /// [condition, x, y]
    Where,
    /// [x]; the target dtype is the output's.
    Cast,
    /// [x]: the same elements under the output's shape.
    Reshape,
    /// [x]
    Transpose { perm: Vec<usize> },
    /// [x]: per input axis, the first index taken and the step (the output's shape gives the count).
    Slice { starts: Vec<usize>, steps: Vec<i64> },
    /// [x]: broadcast to the output's shape.
    Expand,
    /// [x]: repeated along each axis to the output's shape.
    Tile,
    /// [x0, x1, ...]
    Concat { axis: usize },
    /// [x] -> one output per part, along `axis`.
    Split { axis: usize },
    /// [x]: `pads` is (begin, end) per axis, negative to crop.
    Pad {
        pads: Vec<(i64, i64)>,
        mode: PadMode,
        value: f64,
    },
    /// [data, indices]
    Gather { axis: usize },
    /// [data, indices]
    GatherElements { axis: usize },
    /// [data, indices]
    GatherND { batch_dims: usize },
    /// [data, indices, updates]
    ScatterND { reduction: ScatterReduction },
    /// [data, indices, updates]
    ScatterElements { axis: usize, reduction: ScatterReduction },
    /// [x] -> int64 (rank, count): the indices of the non-zero elements; its shape depends on the data.
    NonZero,
    /// [x]
    CumSum {
        axis: usize,
        exclusive: bool,
        reverse: bool,
    },
    /// [x]: keeps the lower (upper = false) or upper triangle of the last two axes from diagonal k.
    Trilu { upper: bool, k: i64 },
    /// [a, b]: numpy matmul of operands of rank 2 or more, batch axes broadcast.
    MatMul,
    /// [a, b] or [a, b, c]: alpha * op(a) @ op(b) + beta * c, c broadcast to (M, N).
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    /// [x]: over one axis; `log` gives LogSoftmax.
    Softmax { axis: usize, log: bool },
    /// [x]: 1 at the first maximum along the axis, 0 elsewhere.
    Hardmax { axis: usize },
    /// [x, scale] or [x, scale, bias]: normalizes over the axes from `axis` to the last.
    LayerNorm { axis: usize, epsilon: f32 },
    /// [x, scale, bias]: per sample and channel over the spatial axes.
    InstanceNorm { epsilon: f32 },
    /// [x, scale, bias, mean, var]: inference mode, channels on axis 1.
    BatchNorm { epsilon: f32 },
    /// [x]
    Reduce {
        kind: ReduceKind,
        axes: Vec<usize>,
        keepdims: bool,
    },
    /// [x] -> int64 indices
    ArgReduce {
        max: bool,
        axis: usize,
        keepdims: bool,
        select_last: bool,
    },
    /// [x, w] or [x, w, b]: channels first; pads are (begin, end) per spatial axis.
    Conv {
        strides: Vec<usize>,
        pads: Vec<(usize, usize)>,
        dilations: Vec<usize>,
        group: usize,
    },
    /// [x] -> y, or y and the int64 indices of each maximum in the flattened input (spatial axes
    /// row-major, or column-major with `column_major`): channels first.
    MaxPool {
        kernel: Vec<usize>,
        strides: Vec<usize>,
        pads: Vec<(usize, usize)>,
        dilations: Vec<usize>,
        column_major: bool,
    },
    /// [x]: channels first.
    AveragePool {
        kernel: Vec<usize>,
        strides: Vec<usize>,
        pads: Vec<(usize, usize)>,
        dilations: Vec<usize>,
        count_include_pad: bool,
    },
    /// [x]
    Resize(Resize),
    /// [x0, x1, ...]: one subscript string per operand and one for the output, no ellipsis.
    Einsum { inputs: Vec<Vec<u8>>, output: Vec<u8> },
    /// [x]: indices below `depth` become one-hot rows (on, off values), negative indices wrap.
    OneHot {
        axis: usize,
        depth: usize,
        off: f64,
        on: f64,
    },
    /// [start, limit, delta] of a range whose length is known (the output's).
    Range,
}

impl Op {
    /// The op's name, as errors and support tables show it.
    pub fn name(&self) -> String {
        match self {
            Op::Unary(u) => format!("{u:?}").split([' ', '{']).next().unwrap_or("Unary").to_string(),
            Op::Binary(b) => format!("{b:?}")
                .split([' ', '{'])
                .next()
                .unwrap_or("Binary")
                .to_string(),
            other => format!("{other:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap_or("Op")
                .to_string(),
        }
    }
}
