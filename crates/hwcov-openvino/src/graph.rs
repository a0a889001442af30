//! One graph compiled by OpenVINO: named host tensors in, named host tensors out.

use std::path::{Path, PathBuf};

use hwcov_core::{Error, HostTensor, LoadOptions, NamedTensors, Precision, Result, TensorData};
use hwcov_onnx::handler::{Fate, GraphSession};
use hwcov_onnx::host_session;
use hwcov_onnx::{GraphFile, GraphFormat};
use openvino::{Core, DeviceType, ElementType, RwPropertyKey, Shape, Tensor};

use crate::runtime::{devices, ov_error};

/// An input of the compiled graph: its name and element type.
struct Port {
    name: String,
    element: ElementType,
}

pub struct Graph {
    request: openvino::InferRequest,
    inputs: Vec<Port>,
    outputs: Vec<String>,
    /// The input shapes the ONNX file declares (none for IR).
    declared: Vec<hwcov_onnx::ValueInfo>,
    path: PathBuf,
    // The compiled model must outlive its request.
    _compiled: openvino::CompiledModel,
}

impl Graph {
    /// Reads and compiles a graph for the device and precision of `opts`.
    pub fn compile(graph: &GraphFile, opts: &LoadOptions) -> Result<Self> {
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
        // The inference precision: on CPUs with AMX or avx512_bf16 OpenVINO's default is bf16.
        let hint = match opts.precision {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::BF16 => "bf16",
        };
        // Verification holds OpenVINO to the precision asked for; a benchmark without one lets it keep
        // its own default.
        if opts.pin_precision || opts.precision != Precision::F32 {
            core.set_property(&device, &RwPropertyKey::HintInferencePrecision, hint)
                .map_err(ov_error("setting INFERENCE_PRECISION_HINT"))?;
        }
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
        let onnx_name =
            |list: Option<&Vec<hwcov_onnx::ValueInfo>>, i: usize| list.and_then(|l| l.get(i)).map(|v| v.name.clone());
        let mut inputs = Vec::new();
        for i in 0..compiled.get_input_size().map_err(ov_error(&shown))? {
            let node = compiled.get_input_by_index(i).map_err(ov_error(&shown))?;
            let name = match onnx_name(onnx.as_ref().map(|g| &g.inputs), i) {
                Some(n) => n,
                None => node.get_name().map_err(ov_error(&shown))?,
            };
            inputs.push(Port {
                name,
                element: node.get_element_type().map_err(ov_error(&shown))?,
            });
        }
        let mut outputs = Vec::new();
        for i in 0..compiled.get_output_size().map_err(ov_error(&shown))? {
            outputs.push(match onnx_name(onnx.as_ref().map(|g| &g.outputs), i) {
                Some(n) => n,
                None => compiled
                    .get_output_by_index(i)
                    .and_then(|n| n.get_name())
                    .map_err(ov_error(&shown))?,
            });
        }
        let request = compiled.create_infer_request().map_err(ov_error(&shown))?;
        Ok(Graph {
            request,
            inputs,
            outputs,
            declared: onnx.map(|g| g.inputs).unwrap_or_default(),
            path: graph.path.clone(),
            _compiled: compiled,
        })
    }
}

impl GraphSession for Graph {
    /// OpenVINO's inputs come from host memory: the cache is kept as host tensors.
    type Resident = HostTensor;

    fn run_resident(
        &mut self,
        inputs: &NamedTensors,
        resident: &std::collections::BTreeMap<String, HostTensor>,
        fate: &dyn Fn(&str) -> Fate,
    ) -> Result<(NamedTensors, std::collections::BTreeMap<String, HostTensor>)> {
        host_session::run_resident(|all| self.run(all), inputs, resident, fate)
    }

    fn shift_caches(&mut self, caches: Vec<HostTensor>, front: isize) -> Result<Vec<HostTensor>> {
        host_session::shift_caches(caches, front)
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn input_names(&self) -> Vec<String> {
        self.inputs.iter().map(|p| p.name.clone()).collect()
    }

    fn output_names(&self) -> Vec<String> {
        self.outputs.clone()
    }

    fn input_shape(&self, name: &str) -> Option<Vec<hwcov_onnx::Dim>> {
        self.declared
            .iter()
            .find(|i| i.name == name)
            .and_then(|i| i.shape.clone())
    }

    fn run(&mut self, given: &NamedTensors) -> Result<NamedTensors> {
        for (i, port) in self.inputs.iter().enumerate() {
            let host = given.get(&port.name).ok_or_else(|| {
                Error::tensor(
                    port.name.clone(),
                    format!("missing input: the graph {} needs it", self.path.display()),
                )
            })?;
            let tensor = to_ov(&port.name, host, port.element)?;
            self.request
                .set_input_tensor_by_index(i, &tensor)
                .map_err(|e| Error::tensor(port.name.clone(), format!("rejected by {}: {e}", self.path.display())))?;
        }
        let shown = self.path.display().to_string();
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
