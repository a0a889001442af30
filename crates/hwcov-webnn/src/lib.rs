//! The webnn platform: a model's ONNX graphs specialized by the graph layer (hwcov-onnx), lowered to
//! WebNN's MLGraphBuilder calls (`lower`), and built and run in a headless Chromium (hwcov-browser)
//! with a WebNN backend (npm `@sparticuz/chromium`: `cargo xtask setup --platform webnn`; Debian's
//! chromium has none). WebNN runs on its CPU device there. A step WebNN cannot express makes the
//! cell unsupported by name: there is no JavaScript or WASM fallback.

pub mod lower;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hwcov_browser::{Browser, FLAGS};
use hwcov_core::{
    Availability, DType, Error, Handler, HostTensor, LoadOptions, ModelClass, ModelFiles, NamedTensors, Platform,
    PlatformId, Precision, Result, Support, TensorData,
};
use hwcov_onnx::handler::{Fate, GraphHandler, GraphSession};
use hwcov_onnx::ir::ValueType;
use hwcov_onnx::{GraphFormat, Operand, Plan, Program, Progress};

/// The ONNX ops this platform claims: each lowers to WebNN for the dtypes WebNN has (the ONNX
/// backend node tests of each run in `tests/onnx_node_tests.rs`; docs/platforms/webnn-node-tests.md).
/// Softplus lowers but is not claimed: the node tests' Mish case needs exp(-10) closer than
/// Chromium's WebNN computes it (2.6e-3 off, relative).
pub const OPS: &[&str] = &[
    "Abs",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "CastLike",
    "Ceil",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Cos",
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
    "Identity",
    "InstanceNormalization",
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
    "Mul",
    "Neg",
    "NonZero",
    "Not",
    "Or",
    "Pad",
    "Pow",
    "PRelu",
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
    "Shape",
    "Sigmoid",
    "Sign",
    "Sin",
    "Size",
    "Slice",
    "Softmax",
    "Softsign",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tan",
    "Tanh",
    "Tile",
    "Transpose",
    "Trilu",
    "Unsqueeze",
    "Where",
    "Xor",
];

/// Starting the browser and opening the context.
const START: Duration = Duration::from_secs(90);
/// Building a graph (constants fetched, the backend's compilation) or running it.
const WORK: Duration = Duration::from_secs(600);

/// The page: the interpreter of lowered programs.
fn page() -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>hwcov webnn</title></head><body><script>{}</script></body></html>",
        include_str!("page.js")
    )
}

/// The Chromium with WebNN: `HWCOV_CHROMIUM`, else the one `cargo xtask setup --platform webnn`
/// unpacked into .hwcov/webnn/chromium.
pub fn chromium() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("HWCOV_CHROMIUM") {
        return Ok(PathBuf::from(p));
    }
    hwcov_core::library::local(&[".hwcov/webnn/chromium"], "chromium").ok_or_else(|| Error::Unavailable {
        platform: "webnn".into(),
        reason: "no Chromium with WebNN: run `cargo xtask setup --platform webnn` (npm @sparticuz/chromium \
                 into .hwcov/webnn), or set HWCOV_CHROMIUM to one"
            .into(),
    })
}

/// The process's browser and what its context is, started on first use and again after it failed.
struct Running {
    browser: Browser,
    device: String,
}

static BROWSER: Mutex<Option<Running>> = Mutex::new(None);

/// Runs `f` on the browser (started if needed); a browser that failed is dropped (killed), so the
/// next call starts a new one.
fn with_browser<T>(f: impl FnOnce(&mut Browser) -> Result<T>) -> Result<T> {
    let mut slot = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        let binary = chromium()?;
        let mut browser = Browser::launch(&binary, FLAGS, page(), START)?;
        let version = browser.version()?;
        browser.eval("hwcov.open()", START)?;
        *slot = Some(Running {
            browser,
            device: format!("{} WebNN (cpu device)", version.replace("HeadlessChrome/", "Chromium ")),
        });
    }
    let Some(running) = slot.as_mut() else {
        return Err(Error::runtime("webnn", "no browser"));
    };
    let out = f(&mut running.browser);
    if out.is_err() && running.browser.eval("1", Duration::from_secs(5)).is_err() {
        *slot = None;
    }
    out
}

fn device() -> Result<String> {
    with_browser(|_| Ok(()))?;
    let slot = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    Ok(slot.as_ref().map(|r| r.device.clone()).unwrap_or_default())
}

pub struct WebNnPlatform;

impl Platform for WebNnPlatform {
    fn id(&self) -> PlatformId {
        PlatformId::Webnn
    }

    fn probe(&self) -> Availability {
        Availability::from_probe(device())
    }

    /// Every class runs from its ONNX graph; a step without a WebNN equivalent fails the cell by name.
    fn support(&self, _class: ModelClass) -> Support {
        Support::Implemented
    }

    fn load(&self, model: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Handler>> {
        if opts.precision != Precision::F32 {
            return Err(Error::Unsupported {
                platform: "webnn".into(),
                what: format!("precision {}", opts.precision),
                reason: "hwcov's webnn platform runs float32 graphs".into(),
            });
        }
        device()?;
        Ok(Box::new(GraphHandler::load(model, |file| {
            if file.format != GraphFormat::Onnx {
                return Err(Error::Unsupported {
                    platform: "webnn".into(),
                    what: format!("the graph {}", file.path.display()),
                    reason: "WebNN runs ONNX graphs, not OpenVINO IR".into(),
                });
            }
            Graph::open(&file.path)
        })?))
    }
}

/// A plan built in the page: its key there, what it was made for, and its outputs.
struct Built {
    key: u64,
    /// Whether its shapes came from a NonZero's count, which depends on the inputs' values: then
    /// it serves one run.
    counted: bool,
    /// Whether the page holds a graph for it (not where every output is a constant or empty).
    computed: bool,
    /// The graph inputs the page's graph takes (those it reads and that are not empty).
    inputs: Vec<String>,
    types: Vec<ValueType>,
    values: Vec<(String, HostTensor)>,
    plan: Arc<Plan>,
}

/// One ONNX graph of a model folder, built in the page once per set of input shapes.
pub struct Graph {
    program: Arc<Program>,
    built: Vec<Built>,
}

/// Plans kept built per graph.
const BUILT_PLANS: usize = 4;

static NEXT_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Graph {
    pub fn open(path: &Path) -> Result<Graph> {
        Ok(Graph {
            program: Arc::new(Program::load(path)?),
            built: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        self.program.path()
    }

    /// Runs the graph on its declared inputs, taken from `given` by name.
    pub fn run(&mut self, given: &NamedTensors) -> Result<NamedTensors> {
        let mut feeds = NamedTensors::new();
        for (name, dtype) in self.program.input_types()? {
            let t = given.get(&name).ok_or_else(|| {
                Error::tensor(
                    &name,
                    format!("missing input: the graph {} needs it", self.path().display()),
                )
            })?;
            feeds.insert(name.clone(), hwcov_onnx::feed::convert_input(&name, t, dtype)?);
        }
        let types: Vec<(String, ValueType)> = feeds
            .iter()
            .map(|(n, t)| (n.clone(), ValueType::new(t.dtype(), t.shape().to_vec())))
            .collect();
        let i = match self.find(&types, &feeds) {
            Some(i) => i,
            None => self.build(&types, &feeds)?,
        };
        let built = &self.built[i];
        let (key, plan, counted) = (built.key, built.plan.clone(), built.counted);
        let mut out = NamedTensors::new();
        let mut computed = Vec::new();
        for (name, o) in &plan.outputs {
            match host_output(&plan, name, *o) {
                Some(t) => {
                    out.insert(name.clone(), t?);
                }
                None => computed.push((name.clone(), plan.ty(*o))),
            }
        }
        let in_page = built.computed;
        let ran = if in_page {
            let inputs = built.inputs.clone();
            let what = format!("running {} in WebNN", self.path().display());
            with_browser(|b| dispatch(b, key, &inputs, &feeds, &computed, &what))
        } else {
            Ok(NamedTensors::new())
        };
        // A plan made for one NonZero count serves one run.
        if counted {
            self.built.remove(i);
            if in_page {
                let _ = with_browser(|b| b.eval(&format!("hwcov.forget({key})"), WORK));
            }
        }
        out.extend(ran?);
        Ok(out)
    }

    fn find(&self, types: &[(String, ValueType)], feeds: &NamedTensors) -> Option<usize> {
        self.built.iter().position(|b| {
            !b.counted
                && b.types.len() == types.len()
                && b.types.iter().zip(types).all(|(a, (_, t))| a == t)
                && b.values.iter().all(|(n, v)| feeds.get(n) == Some(v))
        })
    }

    /// Specializes, lowers and builds the plan for these inputs; its index in `built`.
    fn build(&mut self, types: &[(String, ValueType)], feeds: &NamedTensors) -> Result<usize> {
        let mut spec = self.program.specializer_with_values(types, feeds).map_err(as_webnn)?;
        // A NonZero's count decides the shapes after it: the steps before it, and the count, run
        // first in a graph of their own; the plan built then holds for these inputs' values only.
        let mut counted = false;
        while let Progress::NeedsCount { step } = spec.advance().map_err(as_webnn)? {
            let count = self.count(spec.plan(), step, feeds)?;
            spec.resolve(count);
            counted = true;
        }
        let plan = Arc::new(spec.finish());
        let lowered = lower::lower(&plan)?;
        let key = NEXT_KEY.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = self.path().to_path_buf();
        // Outputs that are all constants or empty need no graph in the page.
        let computed = lowered.program["outputs"].as_array().is_some_and(|o| !o.is_empty());
        if computed {
            with_browser(|b| build_in_page(b, key, &lowered, &plan, &path))?;
        }
        let used = plan
            .shape_inputs
            .iter()
            .filter_map(|n| feeds.get(n).map(|v| (n.clone(), v.clone())))
            .collect();
        if self.built.len() >= BUILT_PLANS {
            let old = self.built.remove(0);
            if old.computed {
                let _ = with_browser(|b| b.eval(&format!("hwcov.forget({})", old.key), WORK));
            }
        }
        self.built.push(Built {
            key,
            computed,
            inputs: lowered.input_names(),
            counted,
            types: types.iter().map(|(_, t)| t.clone()).collect(),
            values: used,
            plan,
        });
        Ok(self.built.len() - 1)
    }

    /// The count of non-zero elements NonZero step `step` of the paused `plan` finds, computed in
    /// WebNN by the steps before it (`lower::lower_count`).
    fn count(&self, plan: &Plan, step: usize, feeds: &NamedTensors) -> Result<usize> {
        let lowered = lower::lower_count(plan, step)?;
        let key = NEXT_KEY.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = self.path().to_path_buf();
        let what = format!("counting for NonZero in {} in WebNN", path.display());
        let count = ValueType::new(DType::F32, vec![]);
        let out = with_browser(|b| {
            build_in_page(b, key, &lowered, plan, &path)?;
            let out = dispatch(b, key, &lowered.input_names(), feeds, &[("count".into(), count)], &what);
            let _ = b.eval(&format!("hwcov.forget({key})"), WORK);
            out
        })?;
        Ok(out["count"].to_f64_vec()[0] as usize)
    }
}

/// Builds `lowered` (a program of `plan`) in the page as graph `key`: the program and its
/// constants sent as blobs. A graph WebNN refuses is unsupported, with WebNN's reason.
fn build_in_page(b: &mut Browser, key: u64, lowered: &lower::Lowered, plan: &Plan, path: &Path) -> Result<()> {
    let program = b.server.blob(lowered.program.to_string().into_bytes());
    let mut blobs = Vec::new();
    for c in &lowered.constants {
        let bytes = match c {
            lower::ConstantData::Plan(c) => {
                let k = &plan.constants[*c];
                let name = k.initializer.clone().unwrap_or_else(|| format!("constant {c}"));
                bytes_of(&name, &k.tensor)?
            }
            lower::ConstantData::Made(bytes) => bytes.clone(),
        };
        blobs.push(b.server.blob(bytes));
    }
    let r = b.eval(
        &format!("hwcov.build({key}, {program}, {})", serde_json::json!(blobs)),
        WORK,
    );
    b.server.forget(program);
    for id in blobs {
        b.server.forget(id);
    }
    r.map(|_| ()).map_err(|e| match e {
        Error::Runtime { message, .. } => Error::Unsupported {
            platform: "webnn".into(),
            what: format!("the graph {}", path.display()),
            reason: format!("WebNN refused to build it: {message}"),
        },
        other => other,
    })
}

/// An output the page does not compute: a constant, or a tensor with no elements.
fn host_output(plan: &Plan, name: &str, o: Operand) -> Option<Result<HostTensor>> {
    match o {
        Operand::Const(c) => Some(Ok((*plan.constants[c].tensor).clone())),
        Operand::Value(v) if plan.values[v].numel() == 0 => Some(tensor_of(name, &plan.values[v], &[])),
        Operand::Value(_) => None,
    }
}

/// Runs graph `key` in the page: each of `inputs` sent from `feeds` as a blob, each of `outputs`
/// taken back as bytes. `what` names the run in errors.
fn dispatch(
    b: &mut Browser,
    key: u64,
    inputs: &[String],
    feeds: &NamedTensors,
    outputs: &[(String, ValueType)],
    what: &str,
) -> Result<NamedTensors> {
    let mut sent = serde_json::Map::new();
    let mut blobs = Vec::new();
    for name in inputs {
        let t = feeds
            .get(name)
            .ok_or_else(|| Error::tensor(name, format!("missing input, {what}")))?;
        let id = b.server.blob(bytes_of(name, t)?);
        blobs.push(id);
        sent.insert(name.clone(), id.into());
    }
    let mut uploads = serde_json::Map::new();
    let ids: Vec<u64> = outputs
        .iter()
        .map(|(name, _)| {
            let id = b.server.upload_id();
            uploads.insert(name.clone(), id.into());
            id
        })
        .collect();
    let r = b.eval(
        &format!(
            "hwcov.run({key}, {}, {})",
            serde_json::Value::Object(sent),
            serde_json::Value::Object(uploads)
        ),
        WORK,
    );
    for id in blobs {
        b.server.forget(id);
    }
    r.map_err(|e| Error::runtime(what, e))?;
    let mut out = NamedTensors::new();
    for ((name, ty), id) in outputs.iter().zip(ids) {
        let bytes = b
            .server
            .take_upload(id)
            .ok_or_else(|| Error::tensor(name, "the page sent no bytes for this output"))?;
        out.insert(name.clone(), tensor_of(name, ty, &bytes)?);
    }
    Ok(out)
}

/// A tensor's elements as WebNN reads them (little-endian; bool as one byte).
fn bytes_of(name: &str, t: &HostTensor) -> Result<Vec<u8>> {
    Ok(match t.data() {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::U8(v) => v.clone(),
        TensorData::Bool(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::F64(_) | TensorData::BF16(_) => {
            return Err(Error::Unsupported {
                platform: "webnn".into(),
                what: format!("tensor `{name}`"),
                reason: format!("WebNN has no {} tensors", t.dtype()),
            });
        }
    })
}

/// An output's bytes as a tensor of its type.
fn tensor_of(name: &str, ty: &ValueType, bytes: &[u8]) -> Result<HostTensor> {
    let n = ty.numel();
    let size = match ty.dtype {
        DType::F32 | DType::I32 => 4,
        DType::I64 => 8,
        DType::F16 => 2,
        DType::U8 | DType::Bool => 1,
        other => return Err(Error::tensor(name, format!("no {other} outputs on WebNN"))),
    };
    if bytes.len() != n * size {
        return Err(Error::tensor(
            name,
            format!("{} bytes came back for {n} elements of {}", bytes.len(), ty.dtype),
        ));
    }
    let words = |k: usize| bytes.chunks_exact(k);
    let data = match ty.dtype {
        DType::F32 => TensorData::F32(words(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        DType::I32 => TensorData::I32(words(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        DType::I64 => TensorData::I64(
            words(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
        DType::F16 => TensorData::F16(
            words(2)
                .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        DType::U8 => TensorData::U8(bytes.to_vec()),
        _ => TensorData::Bool(bytes.iter().map(|&x| x != 0).collect()),
    };
    HostTensor::new(ty.shape.clone(), data).map_err(|e| Error::tensor(name, e))
}

/// The graph layer names unsupported ops for any platform; here they are WebNN's.
fn as_webnn(e: Error) -> Error {
    match e {
        Error::Unsupported { platform, what, reason } if platform == "graph" => Error::Unsupported {
            platform: "webnn".into(),
            what,
            reason,
        },
        other => other,
    }
}

impl GraphSession for Graph {
    /// The page's tensors live in the browser: the cache is kept as host tensors between runs.
    type Resident = HostTensor;

    fn path(&self) -> &Path {
        self.program.path()
    }

    fn input_names(&self) -> Vec<String> {
        self.program.model.graph.inputs.iter().map(|i| i.name.clone()).collect()
    }

    fn output_names(&self) -> Vec<String> {
        self.program
            .model
            .graph
            .outputs
            .iter()
            .map(|o| o.name.clone())
            .collect()
    }

    fn input_shape(&self, name: &str) -> Option<Vec<hwcov_onnx::Dim>> {
        let graph = &self.program.model.graph;
        graph
            .inputs
            .iter()
            .find(|i| i.name == name)
            .and_then(|i| i.shape.clone())
    }

    fn run(&mut self, inputs: &NamedTensors) -> Result<NamedTensors> {
        Graph::run(self, inputs)
    }

    fn run_resident(
        &mut self,
        inputs: &NamedTensors,
        resident: &BTreeMap<String, HostTensor>,
        fate: &dyn Fn(&str) -> Fate,
    ) -> Result<(NamedTensors, BTreeMap<String, HostTensor>)> {
        hwcov_onnx::host_session::run_resident(|all| Graph::run(self, all), inputs, resident, fate)
    }

    fn shift_caches(&mut self, caches: Vec<HostTensor>, front: isize) -> Result<Vec<HostTensor>> {
        hwcov_onnx::host_session::shift_caches(caches, front)
    }
}
