//! One ONNX graph in an ONNX Runtime session on one execution provider: named host tensors in, named
//! host tensors out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hwcov_core::{Error, HostTensor, NamedTensors, Precision, Result, TensorData};
use hwcov_onnx::handler::{Fate, GraphSession};
use hwcov_onnx::{GraphFile, GraphFormat, host_session};
use ort::ep::ExecutionProviderDispatch;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, Tensor, TensorElementType};

use crate::runtime;

/// The execution provider a session runs on. Every node runs on it: ONNX Runtime's fallback of
/// nodes to its CPU provider is switched off for the GPU ones, so a session either runs wholly on
/// the provider named or is refused when it is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// ONNX Runtime's CPU provider: what CI runs the session code on.
    Cpu,
    /// AMD GPUs through MIGraphX.
    MiGraphX { device_id: i32 },
}

impl Provider {
    /// The name ONNX Runtime gives the provider (in its profiles, and in its list of providers).
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "CPUExecutionProvider",
            Provider::MiGraphX { .. } => "MIGraphXExecutionProvider",
        }
    }

    fn dispatch(self, precision: Precision) -> ExecutionProviderDispatch {
        match self {
            Provider::Cpu => ort::ep::CPU::default().build().error_on_failure(),
            Provider::MiGraphX { device_id } => ort::ep::MIGraphX::default()
                .with_device_id(device_id)
                .with_fp16(precision == Precision::F16)
                .build()
                .error_on_failure(),
        }
    }
}

/// An input of the session: its name and element type.
struct Port {
    name: String,
    element: TensorElementType,
}

pub struct Graph {
    session: Session,
    provider: Provider,
    inputs: Vec<Port>,
    outputs: Vec<String>,
    /// The input shapes the ONNX file declares.
    declared: Vec<hwcov_onnx::ValueInfo>,
    path: PathBuf,
    /// Where ONNX Runtime writes its profile, when one was asked for.
    profile: Option<PathBuf>,
}

impl Graph {
    /// Reads `graph` and makes a session for it on `provider`. With `profile`, ONNX Runtime records
    /// every node it runs into a file under that prefix ([`Graph::providers_that_ran`] reads it).
    pub fn open(graph: &GraphFile, provider: Provider, precision: Precision, profile: Option<&Path>) -> Result<Self> {
        if graph.format != GraphFormat::Onnx {
            return Err(Error::format(
                &graph.path,
                "an OpenVINO IR: ONNX Runtime runs ONNX graphs (use --platform openvino)",
            ));
        }
        match (provider, precision) {
            (_, Precision::F32) | (Provider::MiGraphX { .. }, Precision::F16) => {}
            (p, other) => {
                return Err(Error::Unsupported {
                    platform: "rocm".to_string(),
                    what: format!("--precision {other}"),
                    reason: format!(
                        "{} runs ONNX graphs at f32{}",
                        p.name(),
                        if p == Provider::Cpu { "" } else { " or f16" }
                    ),
                });
            }
        }
        // Reading the graph ourselves first gives a clear error for a corrupt file or external data
        // outside the folder, and the declared input shapes.
        let onnx = hwcov_onnx::OnnxGraph::read(&graph.path)?;
        let shown = graph.path.display().to_string();
        let failed = |what: &str| {
            let shown = shown.clone();
            let what = what.to_string();
            move |e: ort::Error| Error::runtime(format!("{what} for {shown}"), format!("ONNX Runtime: {e}"))
        };
        let mut builder = Session::builder(runtime::environment()?)
            .map_err(failed("making a session"))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| failed("setting the optimization level")(e.into()))?
            .with_execution_providers([provider.dispatch(precision)])
            .map_err(|e| Error::Unavailable {
                platform: "rocm".to_string(),
                reason: format!("{} cannot start: {e}", provider.name()),
            })?;
        if provider != Provider::Cpu {
            builder = builder
                .with_disable_cpu_fallback()
                .map_err(|e| failed("switching off the CPU fallback")(e.into()))?;
        }
        if let Some(prefix) = profile {
            builder = builder
                .with_profiling(prefix)
                .map_err(|e| failed("starting the profile")(e.into()))?;
        }
        let session = builder.commit_from_file(&graph.path).map_err(|e| {
            Error::format(
                &graph.path,
                format!("ONNX Runtime cannot make a session on {}: {e}", provider.name()),
            )
        })?;
        let mut inputs = Vec::new();
        for outlet in session.inputs() {
            let element = outlet
                .dtype()
                .tensor_type()
                .ok_or_else(|| Error::format(&graph.path, format!("input `{}` is not a tensor", outlet.name())))?;
            inputs.push(Port {
                name: outlet.name().to_string(),
                element,
            });
        }
        let outputs = session.outputs().iter().map(|o| o.name().to_string()).collect();
        Ok(Graph {
            session,
            provider,
            inputs,
            outputs,
            declared: onnx.inputs,
            path: graph.path.clone(),
            profile: profile.map(Path::to_path_buf),
        })
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The providers that ran the graph's nodes so far, from ONNX Runtime's own profile (the session
    /// must have been opened with one); ends the profile.
    pub fn providers_that_ran(&mut self) -> Result<Vec<String>> {
        if self.profile.is_none() {
            return Err(Error::Usage("the session was opened without a profile".to_string()));
        }
        let file = self
            .session
            .end_profiling()
            .map_err(|e| Error::runtime("ending the profile", format!("ONNX Runtime: {e}")))?;
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(Path::new(&file), e))?;
        providers_in_profile(&text).map_err(|e| Error::format(Path::new(&file), e))
    }
}

/// The distinct `args.provider` of the node events of an ONNX Runtime profile (a JSON array of
/// Chrome trace events).
pub fn providers_in_profile(text: &str) -> std::result::Result<Vec<String>, String> {
    let events: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("not an ONNX Runtime profile: {e}"))?;
    let mut providers: Vec<String> = events
        .iter()
        .filter(|e| e["cat"] == "Node")
        .filter_map(|e| e["args"]["provider"].as_str().map(str::to_string))
        .collect();
    providers.sort();
    providers.dedup();
    Ok(providers)
}

impl GraphSession for Graph {
    /// Sessions here take their inputs from host memory: the cache is kept as host tensors.
    type Resident = HostTensor;

    fn run_resident(
        &mut self,
        inputs: &NamedTensors,
        resident: &BTreeMap<String, HostTensor>,
        fate: &dyn Fn(&str) -> Fate,
    ) -> Result<(NamedTensors, BTreeMap<String, HostTensor>)> {
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
        let mut feed: Vec<(String, DynValue)> = Vec::with_capacity(self.inputs.len());
        for port in &self.inputs {
            let host = given.get(&port.name).ok_or_else(|| {
                Error::tensor(
                    port.name.clone(),
                    format!("missing input: the graph {} needs it", self.path.display()),
                )
            })?;
            feed.push((port.name.clone(), to_ort(&port.name, host, port.element)?));
        }
        let shown = self.path.display().to_string();
        let outputs = self.session.run(feed).map_err(|e| {
            Error::runtime(
                format!("running {shown}"),
                format!("ONNX Runtime ({}): {e}", self.provider.name()),
            )
        })?;
        let mut out = NamedTensors::new();
        for (name, value) in outputs.iter() {
            out.insert(name.to_string(), from_ort(name, &value)?);
        }
        Ok(out)
    }
}

/// A host tensor as an ONNX Runtime tensor of the element type the graph expects.
fn to_ort(name: &str, host: &HostTensor, element: TensorElementType) -> Result<DynValue> {
    let shape: Vec<i64> = host.shape().iter().map(|&d| d as i64).collect();
    let wrong = || {
        Error::tensor(
            name,
            format!("dtype {} cannot feed a graph input of type {element:?}", host.dtype()),
        )
    };
    let made = |r: ort::Result<DynValue>| r.map_err(|e| Error::tensor(name, format!("ONNX Runtime: {e}")));
    match element {
        TensorElementType::Float32 => {
            if !host.dtype().is_float() {
                return Err(wrong());
            }
            let values: Vec<f32> = match host.data() {
                TensorData::F32(v) => v.clone(),
                _ => host.to_f64_vec().into_iter().map(|x| x as f32).collect(),
            };
            made(Tensor::from_array((shape, values)).map(|t| t.into_dyn()))
        }
        TensorElementType::Int64 => {
            let values = host.to_i64_vec().ok_or_else(wrong)?;
            made(Tensor::from_array((shape, values)).map(|t| t.into_dyn()))
        }
        TensorElementType::Int32 => {
            let values = host
                .to_i64_vec()
                .ok_or_else(wrong)?
                .into_iter()
                .map(|s| i32::try_from(s).map_err(|_| Error::tensor(name, format!("value {s} does not fit int32"))))
                .collect::<Result<Vec<i32>>>()?;
            made(Tensor::from_array((shape, values)).map(|t| t.into_dyn()))
        }
        TensorElementType::Bool => {
            let values: Vec<bool> = host
                .to_i64_vec()
                .ok_or_else(wrong)?
                .into_iter()
                .map(|s| s != 0)
                .collect();
            made(Tensor::from_array((shape, values)).map(|t| t.into_dyn()))
        }
        other => Err(Error::tensor(
            name,
            format!("graph inputs of type {other:?} are not supported"),
        )),
    }
}

/// An ONNX Runtime output as a host tensor (floats as f32, integers and booleans as i64).
fn from_ort(name: &str, value: &ort::value::DynValueRef<'_>) -> Result<HostTensor> {
    let bad = |e: ort::Error| Error::tensor(name, format!("ONNX Runtime: {e}"));
    let element = value
        .dtype()
        .tensor_type()
        .ok_or_else(|| Error::tensor(name, "the output is not a tensor"))?;
    let dims = |shape: &ort::value::Shape| shape.iter().map(|&d| d as usize).collect::<Vec<_>>();
    let (shape, data) = match element {
        TensorElementType::Float32 => {
            let (s, v) = value.try_extract_tensor::<f32>().map_err(bad)?;
            (dims(s), TensorData::F32(v.to_vec()))
        }
        TensorElementType::Int64 => {
            let (s, v) = value.try_extract_tensor::<i64>().map_err(bad)?;
            (dims(s), TensorData::I64(v.to_vec()))
        }
        TensorElementType::Int32 => {
            let (s, v) = value.try_extract_tensor::<i32>().map_err(bad)?;
            (dims(s), TensorData::I64(v.iter().map(|&x| x as i64).collect()))
        }
        TensorElementType::Bool => {
            let (s, v) = value.try_extract_tensor::<bool>().map_err(bad)?;
            (dims(s), TensorData::I64(v.iter().map(|&x| x as i64).collect()))
        }
        other => {
            return Err(Error::tensor(
                name,
                format!("graph outputs of type {other:?} are not supported"),
            ));
        }
    };
    HostTensor::new(shape, data).map_err(|e| Error::tensor(name, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_names_each_provider_that_ran_a_node_once() {
        let profile = r#"[
            {"cat": "Session", "name": "model_loading_uri", "args": {}},
            {"cat": "Node", "name": "MatMul_kernel_time", "args": {"provider": "MIGraphXExecutionProvider"}},
            {"cat": "Node", "name": "Add_kernel_time", "args": {"provider": "CPUExecutionProvider"}},
            {"cat": "Node", "name": "Gelu_kernel_time", "args": {"provider": "MIGraphXExecutionProvider"}}
        ]"#;
        assert_eq!(
            providers_in_profile(profile).expect("a profile"),
            ["CPUExecutionProvider", "MIGraphXExecutionProvider"]
        );
        assert!(providers_in_profile("{ not json").is_err());
    }
}
