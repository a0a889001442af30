//! hwcov-onnx: the graph layer of the graph platforms (OpenVINO, WebGPU, WebNN, ROCm).
//!
//! - `locate`: where the graphs of a model folder are, in the layouts Hub repositories use.
//! - `model`: an ONNX file as nodes, attributes and initializers (embedded or external data, the
//!   latter confined to the model's folder), decoded by `proto`.
//! - `plan`: specialization for concrete input shapes: static shapes and dtypes (`lower`, one rule
//!   per op and opset), constant folding of the shape arithmetic (`eval`), dead-node removal. What
//!   is left is a list of steps in the ops of `ir`, the tensor work a device runs.

pub mod conformance;
pub mod eval;
pub mod feed;
pub mod handler;
pub mod host_session;
pub mod ir;
mod lower;
pub mod model;
pub mod plan;
pub mod proto;
pub mod resize;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hwcov_core::{Error, Result};

pub use lower::{broadcast, unsupported};
pub use model::{Dim, Model, ValueInfo, dtype_of, dtype_size, elem_type_name, elem_type_of};
pub use plan::{Constant, Operand, Plan, Program, Progress, Specializer, Step, ValueId};

/// How a graph is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    Onnx,
    /// OpenVINO IR: an `.xml` topology and its `.bin` weights.
    OpenVinoIr,
}

/// One graph file of a model folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphFile {
    pub path: PathBuf,
    pub format: GraphFormat,
    /// The `.bin` of an IR graph.
    pub weights: Option<PathBuf>,
}

/// The graphs of a model folder, as Hub repositories lay them out (optimum, transformers.js,
/// optimum-intel). Each role is looked for at the top of the folder, then under `onnx/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// One graph of the whole forward(): `model.onnx`, `openvino_model.xml`. A decoder-only
    /// export with past key values (`past_key_values.N.key` inputs) serves every step; a
    /// vision-language one its first step (the prompt and the image).
    pub model: Option<GraphFile>,
    /// optimum's seq2seq encoder: `encoder_model.onnx`.
    pub encoder: Option<GraphFile>,
    /// The decoder's first step: `decoder_model.onnx` (with `present.*` outputs where exported
    /// with the cache).
    pub decoder: Option<GraphFile>,
    /// The decoder's later steps, reading the cache: `decoder_with_past_model.onnx`.
    pub decoder_with_past: Option<GraphFile>,
    /// Both decoders in one graph, chosen by the `use_cache_branch` input: `decoder_model_merged.onnx`.
    pub decoder_merged: Option<GraphFile>,
}

/// The ONNX graph files of each role, as `locate` looks for them: at the top of the folder, then
/// under `onnx/` (the transformers.js layout, whose f32 graphs are these names; `model_fp16.onnx`
/// and the other variants are not read).
const ONNX_ROLES: [&str; 5] = [
    "model.onnx",
    "encoder_model.onnx",
    "decoder_model.onnx",
    "decoder_with_past_model.onnx",
    "decoder_model_merged.onnx",
];

/// optimum-intel's OpenVINO IR files of the first four roles (each beside its `.bin`).
const IR_ROLES: [&str; 4] = [
    "openvino_model.xml",
    "openvino_encoder_model.xml",
    "openvino_decoder_model.xml",
    "openvino_decoder_with_past_model.xml",
];

/// The graph of each role (model, encoder, decoder, decoder with past, merged decoder) as a path
/// relative to the folder, given which files the folder has: ONNX first, then OpenVINO IR.
fn role_names(has: &dyn Fn(&str) -> bool) -> (GraphFormat, [Option<String>; 5]) {
    let onnx = ONNX_ROLES.map(|name| [name.to_string(), format!("onnx/{name}")].into_iter().find(|p| has(p)));
    if onnx[0].is_some() || onnx[1].is_some() {
        return (GraphFormat::Onnx, onnx);
    }
    let mut ir = [None, None, None, None, None];
    for (slot, name) in ir.iter_mut().zip(IR_ROLES) {
        *slot = has(name).then(|| name.to_string());
    }
    (GraphFormat::OpenVinoIr, ir)
}

/// The graph files `locate` would read in a folder holding `files` (paths relative to it, `/`
/// between folders), IR weights included: what a download for a graph platform fetches, before the
/// external data the graphs name.
pub fn graph_files(files: &[&str]) -> Vec<String> {
    let (format, names) = role_names(&|p| files.contains(&p));
    let mut out = Vec::new();
    for name in names.into_iter().flatten() {
        if format == GraphFormat::OpenVinoIr {
            out.push(Path::new(&name).with_extension("bin").display().to_string());
        }
        out.push(name);
    }
    out
}

fn graph_file(dir: &Path, name: Option<String>, format: GraphFormat) -> Result<Option<GraphFile>> {
    let Some(name) = name else {
        return Ok(None);
    };
    let path = dir.join(name);
    if format == GraphFormat::Onnx {
        return Ok(Some(GraphFile {
            path,
            format,
            weights: None,
        }));
    }
    let weights = path.with_extension("bin");
    if !weights.is_file() {
        return Err(Error::io(
            &weights,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("the IR graph {} has no weights file", path.display()),
            ),
        ));
    }
    Ok(Some(GraphFile {
        path,
        format,
        weights: Some(weights),
    }))
}

/// Finds the graphs of a model folder: ONNX first (at the top, then under `onnx/`), then
/// OpenVINO IR (`openvino_model.xml`, `openvino_encoder_model.xml` + `openvino_decoder_model.xml`).
pub fn locate(dir: &Path) -> Result<Layout> {
    let (format, [model, encoder, decoder, decoder_with_past, decoder_merged]) = role_names(&|p| dir.join(p).is_file());
    let layout = Layout {
        model: graph_file(dir, model, format)?,
        encoder: graph_file(dir, encoder, format)?,
        decoder: graph_file(dir, decoder, format)?,
        decoder_with_past: graph_file(dir, decoder_with_past, format)?,
        decoder_merged: graph_file(dir, decoder_merged, format)?,
    };
    let split = layout.encoder.is_some() && (layout.decoder.is_some() || layout.decoder_merged.is_some());
    if layout.model.is_none() && !split {
        return Err(Error::io(
            dir.join("model.onnx"),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no graph in the model folder (looked for model.onnx, onnx/model.onnx, encoder_model.onnx + \
                 decoder_model.onnx, openvino_model.xml + .bin, openvino_encoder_model.xml + openvino_decoder_model.xml)",
            ),
        ));
    }
    Ok(layout)
}

/// What an ONNX graph holds.
#[derive(Debug, Clone)]
pub struct OnnxGraph {
    pub path: PathBuf,
    pub ir_version: i64,
    pub producer: String,
    pub opsets: Vec<(String, i64)>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    /// Node count per op type, subgraphs included.
    pub ops: BTreeMap<String, usize>,
    /// External data files, resolved next to the graph (each checked to exist).
    pub external_data: Vec<PathBuf>,
}

impl OnnxGraph {
    /// Reads the structure of an ONNX file, checking that its external data files lie inside its
    /// folder and exist.
    pub fn read(path: &Path) -> Result<Self> {
        Ok(Self::of(&Model::load(path)?))
    }

    /// The structure of a model already read.
    pub fn of(model: &Model) -> Self {
        let mut ops = BTreeMap::new();
        model.graph.op_counts(&mut ops);
        OnnxGraph {
            path: model.path.clone(),
            ir_version: model.ir_version,
            producer: model.producer.clone(),
            opsets: model.opsets.clone(),
            inputs: model.graph.inputs.clone(),
            outputs: model.graph.outputs.clone(),
            ops,
            external_data: model.external_files(),
        }
    }

    /// The opset of the default domain.
    pub fn opset(&self) -> Option<i64> {
        self.opsets
            .iter()
            .find(|(d, _)| d.is_empty() || d == "ai.onnx")
            .map(|(_, v)| *v)
    }

    pub fn input(&self, name: &str) -> Option<&ValueInfo> {
        self.inputs.iter().find(|i| i.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name)
    }

    #[test]
    fn reads_the_bert_export() {
        let g = locate(&fixture("bert")).unwrap().model.expect("bert has one graph");
        let graph = OnnxGraph::read(&g.path).unwrap();
        let names: Vec<_> = graph.inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["input_ids", "attention_mask", "token_type_ids"]);
        let outs: Vec<_> = graph.outputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(outs, ["last_hidden_state", "pooler_output"]);
        assert_eq!(graph.inputs[0].elem_type, 7);
        assert_eq!(
            graph.inputs[0].shape.as_deref(),
            Some(&[Dim::Symbolic("batch".into()), Dim::Symbolic("sequence".into())][..])
        );
        assert_eq!(graph.opset(), Some(17));
        assert!(
            graph.ops.contains_key("MatMul") && graph.ops.contains_key("Softmax"),
            "{:?}",
            graph.ops
        );
        assert!(graph.external_data.is_empty());
    }

    #[test]
    fn every_fixture_export_parses() {
        for entry in std::fs::read_dir(fixture("")).unwrap() {
            let dir = entry.unwrap().path();
            if !dir.join("model.onnx").is_file() {
                continue;
            }
            let g = OnnxGraph::read(&dir.join("model.onnx")).unwrap();
            assert!(!g.inputs.is_empty() && !g.outputs.is_empty(), "{}", dir.display());
            assert!(g.ops.values().sum::<usize>() > 10, "{}", dir.display());
        }
    }

    #[test]
    fn truncated_or_missing_graphs_name_the_file() {
        let dir = std::env::temp_dir().join(format!("hwcov-onnx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes = std::fs::read(fixture("vit").join("model.onnx")).unwrap();
        std::fs::write(dir.join("model.onnx"), &bytes[..bytes.len() / 3]).unwrap();
        let err = OnnxGraph::read(&dir.join("model.onnx")).unwrap_err().to_string();
        assert!(
            err.contains("model.onnx") && err.contains("not a valid ONNX model"),
            "{err}"
        );
        std::fs::remove_file(dir.join("model.onnx")).unwrap();
        let err = locate(&dir).unwrap_err().to_string();
        assert!(err.contains("no graph in the model folder"), "{err}");
        std::fs::write(dir.join("openvino_model.xml"), "<net/>").unwrap();
        let err = locate(&dir).unwrap_err().to_string();
        assert!(err.contains("openvino_model.bin"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
