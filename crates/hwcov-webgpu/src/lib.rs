//! hwcov-webgpu: the WebGPU platform. A model folder's ONNX graph, specialized by the graph layer
//! (hwcov-onnx) for the shapes of each call, runs on hwcov's own WGSL kernels through wgpu, on a
//! Vulkan, Metal or DX12 adapter. An op or dtype without a kernel is refused by name; nothing
//! runs anywhere else.

pub mod exec;
mod fuse;
pub mod gpu;
pub mod kernels;
mod profile;

use std::path::Path;

use hwcov_core::{
    Availability, Handler, LoadOptions, ModelClass, ModelFiles, NamedTensors, Platform, PlatformId, Precision, Result,
    Support,
};
use hwcov_onnx::GraphFormat;
use hwcov_onnx::handler::{GraphHandler, GraphSession};

pub use exec::Session;

/// The ONNX ops this platform runs: those with WGSL kernels, and those the graph layer resolves
/// before the device (Shape, Reshape and the other views, constants). The ONNX backend node tests
/// of each run in `tests/onnx_node_tests.rs`; their counts are in docs/platforms/webgpu-node-tests.md.
pub const OPS: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "AveragePool",
    "BatchNormalization",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Cos",
    "Cosh",
    "CumSum",
    "Div",
    "Dropout",
    "Einsum",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "Identity",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "MatMul",
    "Max",
    "MaxPool",
    "Mean",
    "Min",
    "Mish",
    "Mod",
    "Mul",
    "Neg",
    "NonZero",
    "Not",
    "OneHot",
    "Or",
    "Pad",
    "Pow",
    "PRelu",
    "Range",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "Round",
    "ScatterElements",
    "ScatterND",
    "Selu",
    "Shape",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Size",
    "Slice",
    "Softmax",
    "Softplus",
    "Softsign",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Tile",
    "Transpose",
    "Trilu",
    "Unsqueeze",
    "Where",
    "Xor",
];

pub struct WebGpuPlatform;

impl Platform for WebGpuPlatform {
    fn id(&self) -> PlatformId {
        PlatformId::Webgpu
    }

    fn probe(&self) -> Availability {
        Availability::from_probe(gpu::gpu().map(|g| g.describe()))
    }

    /// Every class runs from its ONNX graph; an op without a kernel fails the cell by name.
    fn support(&self, _class: ModelClass) -> Support {
        Support::Implemented
    }

    fn load(&self, model: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Handler>> {
        let g = gpu::gpu()?;
        // f16 keeps the weights in f16 (`kernels::Weights`); WGSL has no bf16.
        let weights_f16 = match opts.precision {
            Precision::F32 => false,
            Precision::F16 if g.features.contains(wgpu::Features::SHADER_F16) => true,
            Precision::F16 => {
                return Err(hwcov_core::Error::Unsupported {
                    platform: "webgpu".into(),
                    what: "precision f16".into(),
                    reason: format!("{} has no shader-f16", g.info.name),
                });
            }
            Precision::BF16 => {
                return Err(hwcov_core::Error::Unsupported {
                    platform: "webgpu".into(),
                    what: "precision bf16".into(),
                    reason: "WGSL has no bf16 type".into(),
                });
            }
        };
        Ok(Box::new(GraphHandler::load(model, |file| {
            if file.format != GraphFormat::Onnx {
                return Err(hwcov_core::Error::Unsupported {
                    platform: "webgpu".into(),
                    what: format!("the graph {}", file.path.display()),
                    reason: "WebGPU runs ONNX graphs, not OpenVINO IR".into(),
                });
            }
            let mut session = Session::open(g.clone(), &file.path)?;
            session.weights_f16 = weights_f16;
            Ok(Graph(session))
        })?))
    }
}

/// One ONNX graph of a model folder on the device.
pub struct Graph(pub Session);

impl GraphSession for Graph {
    /// The KV cache stays in device buffers between decoding steps.
    type Resident = exec::DeviceTensor;

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn input_names(&self) -> Vec<String> {
        self.0
            .program
            .model
            .graph
            .inputs
            .iter()
            .map(|i| i.name.clone())
            .collect()
    }

    fn output_names(&self) -> Vec<String> {
        self.0
            .program
            .model
            .graph
            .outputs
            .iter()
            .map(|o| o.name.clone())
            .collect()
    }

    fn input_shape(&self, name: &str) -> Option<Vec<hwcov_onnx::Dim>> {
        let graph = &self.0.program.model.graph;
        graph
            .inputs
            .iter()
            .find(|i| i.name == name)
            .and_then(|i| i.shape.clone())
    }

    fn run(&mut self, inputs: &NamedTensors) -> Result<NamedTensors> {
        self.0.run(inputs)
    }

    fn run_resident(
        &mut self,
        inputs: &NamedTensors,
        resident: &std::collections::BTreeMap<String, exec::DeviceTensor>,
        fate: &dyn Fn(&str) -> hwcov_onnx::handler::Fate,
    ) -> Result<(NamedTensors, std::collections::BTreeMap<String, exec::DeviceTensor>)> {
        self.0.run_resident(inputs, resident, fate)
    }

    fn shift_caches(&mut self, caches: Vec<exec::DeviceTensor>, front: isize) -> Result<Vec<exec::DeviceTensor>> {
        self.0.shift_caches(caches, front)
    }

    fn expect_growth(&mut self, growth: &[(String, usize)]) {
        self.0.expect_growth(growth);
    }

    fn dispatches(&self) -> Option<u64> {
        Some(self.0.total_dispatches)
    }
}
