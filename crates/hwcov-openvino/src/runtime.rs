//! Finding and loading the OpenVINO runtime, and running a graph with it.

use std::path::{Path, PathBuf};

use hwcov_core::{Error, HostTensor, LoadOptions, ModelFiles, NamedTensors, Precision, Result, TensorData};
use hwcov_onnx::{GraphFile, GraphFormat, Layout};
use openvino::{Core, DeviceType, ElementType, PropertyKey, RwPropertyKey, Shape, Tensor};

const SETUP_HINT: &str = "run `cargo xtask setup --platform openvino` (installs the pip wheel openvino==2026.4.1 \
     into .hwcov/openvino), or set OPENVINO_LIB to libopenvino_c.so";

/// `libopenvino_c.so*` in a folder (pip wheels ship only versioned names such as
/// `libopenvino_c.so.2641`).
fn c_library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libopenvino_c.so"))
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Where the runtime library is, or why none was found.
pub fn find_library() -> std::result::Result<PathBuf, String> {
    if let Ok(v) = std::env::var("OPENVINO_LIB") {
        let p = PathBuf::from(&v);
        if p.is_file() {
            return Ok(p);
        }
        return c_library_in(&p)
            .ok_or_else(|| format!("OPENVINO_LIB={v} is neither libopenvino_c.so nor a folder holding it"));
    }
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    for start in starts {
        for dir in start.ancestors() {
            if let Some(p) = c_library_in(&dir.join(".hwcov/openvino/openvino/libs")) {
                return Ok(p);
            }
        }
    }
    openvino_sys::library::find().ok_or_else(|| format!("the OpenVINO runtime is not installed: {SETUP_HINT}"))
}

/// Loads the runtime library into the process.
pub fn load() -> std::result::Result<PathBuf, String> {
    let lib = find_library()?;
    openvino_sys::library::load_from(&lib).map_err(|e| format!("cannot load {}: {e}", lib.display()))?;
    Ok(lib)
}

/// The runtime's version, as it reports it ("2026.4.1-...").
pub fn runtime_version() -> Option<String> {
    let core = Core::new().ok()?;
    let versions = core.versions("CPU").ok()?;
    versions.first().map(|(_, v)| v.build_number.clone())
}

fn ov_error(context: &str) -> impl Fn(openvino::InferenceError) -> Error + '_ {
    move |e| Error::runtime(context, format!("OpenVINO: {e}"))
}

/// The devices OpenVINO reports, CPU first.
fn devices(core: &Core) -> Result<Vec<String>> {
    let mut names: Vec<String> = core
        .available_devices()
        .map_err(ov_error("listing OpenVINO devices"))?
        .iter()
        .map(|d| d.as_ref().to_string())
        .collect();
    names.sort_by_key(|n| n != "CPU");
    Ok(names)
}

/// "OpenVINO 2026.4.1 CPU: Intel Xeon ... (libopenvino_c.so.2641)"
pub fn describe(lib: &Path, index: usize) -> Result<String> {
    let core = Core::new().map_err(|e| Error::runtime("starting OpenVINO", e))?;
    let names = devices(&core)?;
    let name = names.get(index).ok_or_else(|| Error::Unavailable {
        platform: "openvino".to_string(),
        reason: format!("no OpenVINO device {index} (it reports {})", names.join(", ")),
    })?;
    let device = DeviceType::from(name.as_str());
    let full = core
        .get_property(&device, &PropertyKey::DeviceFullName)
        .unwrap_or_default();
    let version = runtime_version().unwrap_or_else(|| "?".to_string());
    let file = lib
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(format!("OpenVINO {version} {name}: {full} ({file})"))
}

/// An input of the compiled graph: its name and element type.
struct Port {
    name: String,
    element: ElementType,
}

/// A compiled graph and its infer request.
pub struct GraphHandler {
    request: openvino::InferRequest,
    inputs: Vec<Port>,
    outputs: Vec<String>,
    graph: PathBuf,
    /// The inputs of the sequence being decoded: the graph has no KV cache, so every step re-runs
    /// the whole sequence.
    decoding: Option<NamedTensors>,
    // The compiled model must outlive its request.
    _compiled: openvino::CompiledModel,
}

fn single_graph(files: &ModelFiles) -> Result<GraphFile> {
    match hwcov_onnx::locate(&files.dir)? {
        Layout::Single(g) => Ok(g),
        Layout::EncoderDecoder { encoder, .. } => Err(Error::NotImplemented {
            platform: "openvino".to_string(),
            reason: format!(
                "separate encoder and decoder graphs ({} ...) are not wired yet; export one graph of the whole forward()",
                encoder.path.display()
            ),
        }),
    }
}

impl GraphHandler {
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        let graph = single_graph(files)?;
        let shown = graph.path.display().to_string();
        // Reading an ONNX graph ourselves first gives a clear error for a corrupt file or missing
        // external data, and the input and output names as the exporter wrote them (OpenVINO may
        // name a port after a tensor it merged with, such as a Cast right after the input).
        let onnx = match graph.format {
            GraphFormat::Onnx => Some(hwcov_onnx::OnnxGraph::read(&graph.path)?),
            GraphFormat::OpenVinoIr => None,
        };
        let mut core = Core::new().map_err(|e| Error::runtime("starting OpenVINO", e))?;
        let names = devices(&core)?;
        let name = names
            .get(opts.device_index)
            .cloned()
            .ok_or_else(|| Error::Unavailable {
                platform: "openvino".to_string(),
                reason: format!(
                    "no OpenVINO device {} (it reports {})",
                    opts.device_index,
                    names.join(", ")
                ),
            })?;
        let device = DeviceType::from(name.as_str());
        // Pin the inference precision: on CPUs with AMX or avx512_bf16 the default is bf16.
        let hint = match opts.precision {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::BF16 => "bf16",
        };
        core.set_property(&device, &RwPropertyKey::HintInferencePrecision, hint)
            .map_err(ov_error("setting INFERENCE_PRECISION_HINT"))?;
        let weights = graph
            .weights
            .as_ref()
            .map(|w| w.display().to_string())
            .unwrap_or_default();
        let model = core
            .read_model_from_file(&shown, &weights)
            .map_err(|e| Error::format(&graph.path, format!("OpenVINO cannot read the graph: {e}")))?;
        let mut compiled = core.compile_model(&model, device).map_err(|e| {
            Error::format(
                &graph.path,
                format!("OpenVINO cannot compile the graph for {name}: {e}"),
            )
        })?;
        // OpenVINO keeps the ONNX order of inputs and outputs.
        let mut inputs = Vec::new();
        for i in 0..compiled.get_input_size().map_err(ov_error(&shown))? {
            let node = compiled.get_input_by_index(i).map_err(ov_error(&shown))?;
            let name = match &onnx {
                Some(g) => g.inputs.get(i).map(|v| v.name.clone()),
                None => None,
            };
            inputs.push(Port {
                name: match name {
                    Some(n) => n,
                    None => node.get_name().map_err(ov_error(&shown))?,
                },
                element: node.get_element_type().map_err(ov_error(&shown))?,
            });
        }
        let mut outputs = Vec::new();
        for i in 0..compiled.get_output_size().map_err(ov_error(&shown))? {
            let name = match &onnx {
                Some(g) => g.outputs.get(i).map(|v| v.name.clone()),
                None => None,
            };
            outputs.push(match name {
                Some(n) => n,
                None => compiled
                    .get_output_by_index(i)
                    .and_then(|n| n.get_name())
                    .map_err(ov_error(&shown))?,
            });
        }
        let request = compiled.create_infer_request().map_err(ov_error(&shown))?;
        Ok(GraphHandler {
            request,
            inputs,
            outputs,
            graph: graph.path,
            decoding: None,
            _compiled: compiled,
        })
    }

    /// The input that grows by one token per step: the decoder's ids for an encoder-decoder graph,
    /// else the prompt's ids; `None` when the graph cannot decode (no such input, no logits).
    pub fn sequence_input(&self) -> Option<&'static str> {
        if !self.outputs.iter().any(|o| o == "logits") {
            return None;
        }
        ["decoder_input_ids", "input_ids"]
            .into_iter()
            .find(|n| self.inputs.iter().any(|p| p.name == *n))
    }

    fn has_input(&self, name: &str) -> bool {
        self.inputs.iter().any(|p| p.name == name)
    }

    /// Runs the current decoding inputs and returns the logits of each row's last position.
    fn next_logits(&mut self) -> Result<HostTensor> {
        let inputs = self
            .decoding
            .clone()
            .ok_or_else(|| Error::runtime("decoding", "step() before start()"))?;
        let out = self.run(&inputs)?;
        let logits = out
            .get("logits")
            .ok_or_else(|| Error::tensor("logits", "the graph produced no logits"))?;
        let [b, l, v] = logits.shape() else {
            return Err(Error::tensor(
                "logits",
                format!("has shape {:?}; (batch, sequence, vocab) is needed", logits.shape()),
            ));
        };
        let (b, l, v) = (*b, *l, *v);
        let all = logits.to_f64_vec();
        let last: Vec<f32> = (0..b)
            .flat_map(|i| all[(i * l + l - 1) * v..(i * l + l) * v].iter().map(|&x| x as f32))
            .collect();
        HostTensor::f32(vec![b, v], last)
    }

    pub fn start_decoding(&mut self, inputs: &NamedTensors) -> Result<HostTensor> {
        self.decoding = Some(
            inputs
                .iter()
                .filter(|(k, _)| self.has_input(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        self.next_logits()
    }

    /// Appends one token per row (and a 1 to the matching attention mask) and re-runs the graph.
    pub fn step_decoding(&mut self, tokens: &[u32]) -> Result<HostTensor> {
        let seq = self
            .sequence_input()
            .ok_or_else(|| Error::runtime("decoding", "the graph cannot decode"))?;
        let mask = if seq == "input_ids" {
            "attention_mask"
        } else {
            "decoder_attention_mask"
        };
        let inputs = self
            .decoding
            .as_mut()
            .ok_or_else(|| Error::runtime("decoding", "step() before start()"))?;
        for (name, value) in [(seq, None), (mask, Some(1i64))] {
            let Some(t) = inputs.get(name) else { continue };
            let [b, l] = t.shape() else {
                return Err(Error::tensor(
                    name,
                    format!("has shape {:?}; (batch, sequence) is needed", t.shape()),
                ));
            };
            let (b, l) = (*b, *l);
            if tokens.len() != b {
                return Err(Error::tensor(name, format!("{} new tokens for {b} rows", tokens.len())));
            }
            let old = t
                .to_i64_vec()
                .ok_or_else(|| Error::tensor(name, "is not an integer tensor"))?;
            let mut grown = Vec::with_capacity(b * (l + 1));
            for i in 0..b {
                grown.extend_from_slice(&old[i * l..(i + 1) * l]);
                grown.push(value.unwrap_or(tokens[i] as i64));
            }
            inputs.insert(name.to_string(), HostTensor::i64(vec![b, l + 1], grown)?);
        }
        self.next_logits()
    }

    pub fn input_names(&self) -> Vec<String> {
        self.inputs.iter().map(|p| p.name.clone()).collect()
    }

    pub fn output_names(&self) -> Vec<String> {
        self.outputs.clone()
    }

    pub fn run(&mut self, given: &NamedTensors) -> Result<NamedTensors> {
        for (i, port) in self.inputs.iter().enumerate() {
            let host = given.get(&port.name).ok_or_else(|| {
                Error::tensor(
                    port.name.clone(),
                    format!("missing input: the graph {} needs it", self.graph.display()),
                )
            })?;
            let tensor = to_ov(&port.name, host, port.element)?;
            self.request
                .set_input_tensor_by_index(i, &tensor)
                .map_err(|e| Error::tensor(port.name.clone(), format!("rejected by {}: {e}", self.graph.display())))?;
        }
        let shown = self.graph.display().to_string();
        self.request
            .infer()
            .map_err(|e| Error::runtime(format!("running {shown}"), format!("OpenVINO: {e}")))?;
        let mut out = NamedTensors::new();
        for (i, name) in self.outputs.iter().enumerate() {
            let t = self.request.get_output_tensor_by_index(i).map_err(ov_error(&shown))?;
            out.insert(name.clone(), from_ov(name, &t)?);
        }
        Ok(out)
    }
}

/// A host tensor as an OpenVINO tensor of the element type the graph expects.
fn to_ov(name: &str, host: &HostTensor, element: ElementType) -> Result<Tensor> {
    let dims: Vec<i64> = host.shape().iter().map(|&d| d as i64).collect();
    let shape = Shape::new(&dims).map_err(|e| Error::tensor(name, e))?;
    let mut t = Tensor::new(element, &shape).map_err(|e| Error::tensor(name, e))?;
    let wrong = || {
        Error::tensor(
            name,
            format!("dtype {} cannot feed a graph input of type {element:?}", host.dtype()),
        )
    };
    match element {
        ElementType::F32 => {
            if !host.dtype().is_float() {
                return Err(wrong());
            }
            let src: Vec<f32> = host.to_f64_vec().into_iter().map(|x| x as f32).collect();
            t.get_data_mut::<f32>()
                .map_err(|e| Error::tensor(name, e))?
                .copy_from_slice(&src);
        }
        ElementType::I64 => {
            let src = host.to_i64_vec().ok_or_else(wrong)?;
            t.get_data_mut::<i64>()
                .map_err(|e| Error::tensor(name, e))?
                .copy_from_slice(&src);
        }
        ElementType::I32 => {
            let src = host.to_i64_vec().ok_or_else(wrong)?;
            let dst = t.get_data_mut::<i32>().map_err(|e| Error::tensor(name, e))?;
            for (d, s) in dst.iter_mut().zip(src) {
                *d = i32::try_from(s).map_err(|_| Error::tensor(name, format!("value {s} does not fit int32")))?;
            }
        }
        ElementType::Boolean | ElementType::U8 => {
            let src = host.to_i64_vec().ok_or_else(wrong)?;
            let dst = t.get_data_mut::<u8>().map_err(|e| Error::tensor(name, e))?;
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s as u8;
            }
        }
        other => {
            return Err(Error::tensor(
                name,
                format!("graph inputs of type {other:?} are not supported"),
            ));
        }
    }
    Ok(t)
}

/// An OpenVINO output as a host tensor (floats as f32, integers as i64).
fn from_ov(name: &str, t: &Tensor) -> Result<HostTensor> {
    let shape: Vec<usize> = t
        .get_shape()
        .map_err(|e| Error::tensor(name, e))?
        .get_dimensions()
        .iter()
        .map(|&d| d as usize)
        .collect();
    let element = t.get_element_type().map_err(|e| Error::tensor(name, e))?;
    let data = match element {
        ElementType::F32 => TensorData::F32(t.get_data::<f32>().map_err(|e| Error::tensor(name, e))?.to_vec()),
        ElementType::I64 => TensorData::I64(t.get_data::<i64>().map_err(|e| Error::tensor(name, e))?.to_vec()),
        ElementType::I32 => TensorData::I64(
            t.get_data::<i32>()
                .map_err(|e| Error::tensor(name, e))?
                .iter()
                .map(|&x| x as i64)
                .collect(),
        ),
        ElementType::Boolean | ElementType::U8 => TensorData::I64(
            t.get_data::<u8>()
                .map_err(|e| Error::tensor(name, e))?
                .iter()
                .map(|&x| x as i64)
                .collect(),
        ),
        other => {
            return Err(Error::tensor(
                name,
                format!("graph outputs of type {other:?} are not supported"),
            ));
        }
    };
    HostTensor::new(shape, data).map_err(|e| Error::tensor(name, e))
}
