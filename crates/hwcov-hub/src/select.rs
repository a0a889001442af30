//! Which files of a repository a platform needs: the configs and processor files every platform
//! reads, then the weights of its family: safetensors for the eager platforms (one file, or the
//! shards an index names), the ONNX or OpenVINO IR graphs hwcov-onnx's `locate` reads for the graph
//! platforms. Never a pickle.

use std::path::{Component, Path};

/// What a platform reads of a model besides its configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// safetensors weights (cpu, cuda, mps).
    Safetensors,
    /// ONNX or OpenVINO IR graphs (openvino, rocm, webgpu, webnn).
    Graph,
    /// Only the processor files (`hwcov features`).
    Processor,
}

/// The configs and processor files hwcov reads where a repository has them.
const PROCESSING: [&str; 15] = [
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    "config_sentence_transformers.json",
];

/// The index of a sharded safetensors checkpoint.
pub const SHARD_INDEX: &str = "model.safetensors.index.json";

/// The files of a repository holding `files` that a platform needing `need` reads (the shards of
/// an index and the external data the graphs name come after, from the files themselves). `Err`
/// says what the repository lacks.
pub fn files(files: &[&str], need: Need) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = PROCESSING
        .iter()
        .filter(|n| files.contains(n))
        .map(|n| n.to_string())
        .collect();
    if !files.contains(&"config.json") {
        return Err("has no config.json (hwcov reads transformers' save_pretrained layout)".to_string());
    }
    match need {
        Need::Processor => {}
        Need::Safetensors => {
            if files.contains(&"model.safetensors") {
                out.push("model.safetensors".to_string());
            } else if files.contains(&SHARD_INDEX) {
                out.push(SHARD_INDEX.to_string());
            } else {
                let pickles = files
                    .iter()
                    .any(|f| f.ends_with(".bin") || f.ends_with(".pt") || f.ends_with(".pth"));
                return Err(if pickles {
                    "has no safetensors weights, only pickled ones (pytorch_model.bin), which hwcov never reads"
                        .to_string()
                } else {
                    format!("has no safetensors weights (model.safetensors or {SHARD_INDEX})")
                });
            }
        }
        Need::Graph => {
            let graphs = hwcov_onnx::graph_files(files);
            if graphs.is_empty() {
                return Err(
                    "has no graph a graph platform reads (model.onnx, onnx/model.onnx, encoder_model.onnx + decoder_model.onnx, openvino_model.xml + .bin)"
                        .to_string(),
                );
            }
            for graph in graphs {
                // External data is saved beside its graph as `<graph>_data` or `<graph>.data`
                // (torch.onnx, optimum, transformers.js), split as `<graph>_data_1`, ...
                let data = files.iter().filter(|f| {
                    f.strip_prefix(graph.as_str())
                        .is_some_and(|rest| rest == "_data" || rest == ".data" || rest.starts_with("_data_"))
                });
                out.extend(data.map(|f| f.to_string()));
                out.push(graph);
            }
        }
    }
    Ok(out)
}

/// The shards `index` (a `model.safetensors.index.json`) names, each once, in order; each must be a
/// safetensors file of the repository.
pub fn shards(index: &Path) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for n in hwcov_core::tensor::shard_names(index).map_err(|e| e.to_string())? {
        let name = repo_path(Path::new(&n)).ok_or_else(|| {
            format!(
                "{}: field `weight_map` names {n}, not a file of the repository",
                index.display()
            )
        })?;
        if !name.ends_with(".safetensors") {
            return Err(format!(
                "{}: field `weight_map` names {name}, not a safetensors file",
                index.display()
            ));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// `path` as a repository path (`/` between folders) where it stays inside the repository: no
/// `..`, no absolute path, nothing empty.
pub fn repo_path(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BERT: [&str; 7] = [
        ".gitattributes",
        "config.json",
        "model.safetensors",
        "pytorch_model.bin",
        "tokenizer.json",
        "onnx/model.onnx",
        "onnx/model_fp16.onnx",
    ];

    #[test]
    fn eager_platforms_get_safetensors_never_pickles() {
        let got = files(&BERT, Need::Safetensors).unwrap();
        assert_eq!(got, ["config.json", "tokenizer.json", "model.safetensors"]);
        let sharded = ["config.json", "model-00001-of-00002.safetensors", SHARD_INDEX];
        assert_eq!(
            files(&sharded, Need::Safetensors).unwrap(),
            ["config.json", SHARD_INDEX]
        );
        let e = files(&["config.json", "pytorch_model.bin"], Need::Safetensors).unwrap_err();
        assert!(e.contains("pickled"), "{e}");
        assert!(
            files(&["model.safetensors"], Need::Safetensors)
                .unwrap_err()
                .contains("config.json")
        );
    }

    #[test]
    fn graph_platforms_get_the_f32_graph_and_its_data() {
        assert_eq!(
            files(&BERT, Need::Graph).unwrap(),
            ["config.json", "tokenizer.json", "onnx/model.onnx"]
        );
        let split = [
            "config.json",
            "encoder_model.onnx",
            "encoder_model.onnx_data",
            "decoder_model.onnx",
            "decoder_with_past_model.onnx",
            "decoder_model.onnx.data",
            "model.safetensors",
        ];
        assert_eq!(
            files(&split, Need::Graph).unwrap(),
            [
                "config.json",
                "encoder_model.onnx_data",
                "encoder_model.onnx",
                "decoder_model.onnx.data",
                "decoder_model.onnx",
                "decoder_with_past_model.onnx"
            ]
        );
        let ir = ["config.json", "openvino_model.xml", "openvino_model.bin"];
        assert_eq!(
            files(&ir, Need::Graph).unwrap(),
            ["config.json", "openvino_model.bin", "openvino_model.xml"]
        );
        assert!(
            files(&["config.json", "model.safetensors"], Need::Graph)
                .unwrap_err()
                .contains("no graph")
        );
    }

    #[test]
    fn processor_only() {
        let got = files(
            &["config.json", "preprocessor_config.json", "model.safetensors"],
            Need::Processor,
        )
        .unwrap();
        assert_eq!(got, ["config.json", "preprocessor_config.json"]);
    }

    #[test]
    fn repository_paths_stay_inside() {
        assert_eq!(
            repo_path(Path::new("onnx/./model.onnx")).as_deref(),
            Some("onnx/model.onnx")
        );
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            assert_eq!(repo_path(Path::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn shard_index() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join(SHARD_INDEX);
        std::fs::write(
            &index,
            r#"{"weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors", "c": "m-1.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(shards(&index).unwrap(), ["m-1.safetensors", "m-2.safetensors"]);
        std::fs::write(&index, r#"{"weight_map": {"a": "../../secret.safetensors"}}"#).unwrap();
        assert!(shards(&index).unwrap_err().contains("weight_map"));
        std::fs::write(&index, r#"{"weight_map": {"a": "pytorch_model.bin"}}"#).unwrap();
        assert!(shards(&index).unwrap_err().contains("not a safetensors"));
    }
}
