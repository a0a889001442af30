//! sentence-transformers folders: `modules.json` names the modules `SentenceTransformer.encode`
//! runs in order, a Transformer (the model of the folder, run on the platform), then Pooling, Dense
//! and Normalize, which run here on the host as sentence_transformers/models/{Pooling,Dense,
//! Normalize}.py compute them. `config_sentence_transformers.json` gives the prompts and the
//! similarity function.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hwcov_core::error::read_json;
use hwcov_core::{Error, Result};
use serde_json::Value;

/// One way of pooling token states into a sentence embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The first attended token (the [CLS] token where nothing is excluded).
    Cls,
    Max,
    Mean,
    MeanSqrtLen,
    /// Positions weigh 1, 2, 3, ... from the first token that is not padding.
    WeightedMean,
    /// The last attended token.
    LastToken,
}

const LEGACY_FLAGS: [(&str, Mode); 6] = [
    ("pooling_mode_cls_token", Mode::Cls),
    ("pooling_mode_max_tokens", Mode::Max),
    ("pooling_mode_mean_tokens", Mode::Mean),
    ("pooling_mode_mean_sqrt_len_tokens", Mode::MeanSqrtLen),
    ("pooling_mode_weightedmean_tokens", Mode::WeightedMean),
    ("pooling_mode_lasttoken", Mode::LastToken),
];

/// The Pooling module (1_Pooling/config.json): its modes, concatenated in order, and whether the
/// prompt's tokens count.
#[derive(Debug, Clone, PartialEq)]
pub struct Pooling {
    pub modes: Vec<Mode>,
    pub include_prompt: bool,
}

/// A module after the pooling.
#[derive(Debug, Clone)]
enum Module {
    /// `activation(x W^T + b)`, plus `x` (or `x R^T` where the sizes differ) with `use_residual`.
    Dense {
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
        inputs: usize,
        outputs: usize,
        activation: Activation,
        residual: Residual,
    },
    /// `x / max(|x|, 1e-12)`.
    Normalize,
}

#[derive(Debug, Clone, PartialEq)]
enum Residual {
    None,
    Input,
    Projected(Vec<f32>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Activation {
    Identity,
    Tanh,
    Relu,
    Sigmoid,
}

/// How two embeddings compare (`similarity_fn_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Similarity {
    Cosine,
    Dot,
    /// The negative euclidean distance.
    Euclidean,
    /// The negative manhattan distance.
    Manhattan,
}

/// The modules of a sentence-transformers folder.
#[derive(Debug, Clone)]
pub struct SentenceTransformer {
    /// The folder of the Transformer module (the model the platform runs).
    pub transformer: PathBuf,
    /// sentence_bert_config.json's `max_seq_length`: the most tokens of a text.
    pub max_seq_length: Option<usize>,
    pub do_lower_case: bool,
    pub pooling: Pooling,
    after: Vec<Module>,
    pub prompts: BTreeMap<String, String>,
    pub default_prompt_name: Option<String>,
    pub similarity: Similarity,
}

fn flag(json: &Value, key: &str) -> bool {
    json.get(key).and_then(Value::as_bool).unwrap_or(false)
}

impl SentenceTransformer {
    /// The modules of `dir`, or None when it has no modules.json (a plain transformers folder).
    pub fn from_dir(dir: &Path) -> Result<Option<Self>> {
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(None);
        }
        let modules = read_json(&modules_path)?;
        let list = modules
            .as_array()
            .ok_or_else(|| Error::config(&modules_path, "(top level)", "expected a list of modules"))?;
        let mut transformer = None;
        let mut pooling = None;
        let mut after = Vec::new();
        for m in list {
            let kind = m.get("type").and_then(Value::as_str).unwrap_or_default();
            let path = m.get("path").and_then(Value::as_str).unwrap_or_default();
            let folder = module_folder(dir, path, &modules_path)?;
            match kind.rsplit('.').next().unwrap_or_default() {
                "Transformer" if transformer.is_none() => transformer = Some(folder),
                "Pooling" if pooling.is_none() && transformer.is_some() => pooling = Some(read_pooling(&folder)?),
                "Dense" if pooling.is_some() => after.push(read_dense(&folder)?),
                "Normalize" if pooling.is_some() => after.push(Module::Normalize),
                _ => {
                    return Err(Error::config(
                        &modules_path,
                        "type",
                        format!(
                            "module `{kind}` (path `{path}`) is not one hwcov runs here (a Transformer, then Pooling, then Dense and Normalize)"
                        ),
                    ));
                }
            }
        }
        let transformer = transformer.ok_or_else(|| {
            Error::config(
                &modules_path,
                "type",
                "no sentence_transformers.models.Transformer module",
            )
        })?;
        let pooling = pooling
            .ok_or_else(|| Error::config(&modules_path, "type", "no sentence_transformers.models.Pooling module"))?;
        let bert_config = transformer.join("sentence_bert_config.json");
        let (max_seq_length, do_lower_case) = if bert_config.is_file() {
            let c = read_json(&bert_config)?;
            (
                c.get("max_seq_length").and_then(Value::as_u64).map(|v| v as usize),
                flag(&c, "do_lower_case"),
            )
        } else {
            (None, false)
        };
        let st_config = dir.join("config_sentence_transformers.json");
        let (mut prompts, mut default_prompt_name, mut similarity) = (BTreeMap::new(), None, Similarity::Cosine);
        if st_config.is_file() {
            let c = read_json(&st_config)?;
            if let Some(p) = c.get("prompts").and_then(Value::as_object) {
                for (name, text) in p {
                    let text = text.as_str().ok_or_else(|| {
                        Error::config(&st_config, "prompts", format!("prompt `{name}` is not a string"))
                    })?;
                    prompts.insert(name.clone(), text.to_string());
                }
            }
            default_prompt_name = c.get("default_prompt_name").and_then(Value::as_str).map(str::to_string);
            similarity = match c.get("similarity_fn_name").and_then(Value::as_str) {
                None | Some("cosine") => Similarity::Cosine,
                Some("dot") => Similarity::Dot,
                Some("euclidean") => Similarity::Euclidean,
                Some("manhattan") => Similarity::Manhattan,
                Some(other) => {
                    return Err(Error::config(
                        &st_config,
                        "similarity_fn_name",
                        format!("`{other}` is not one hwcov computes (cosine, dot, euclidean, manhattan)"),
                    ));
                }
            };
        }
        Ok(Some(SentenceTransformer {
            transformer,
            max_seq_length,
            do_lower_case,
            pooling,
            after,
            prompts,
            default_prompt_name,
            similarity,
        }))
    }

    /// The prompt `name` asks for (else the folder's default prompt), if any.
    pub fn prompt(&self, name: Option<&str>) -> Result<Option<&str>> {
        match name.or(self.default_prompt_name.as_deref()) {
            None => Ok(None),
            Some(n) => self.prompts.get(n).map(|p| Some(p.as_str())).ok_or_else(|| {
                let known: Vec<&str> = self.prompts.keys().map(String::as_str).collect();
                Error::Usage(format!(
                    "the folder has no prompt `{n}` (config_sentence_transformers.json has: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            }),
        }
    }

    /// The sentence embeddings of token states `tokens` (batch, seq, hidden) under `mask`
    /// (batch, seq): the pooling, then the modules after it. `prompt_length` masks the first tokens
    /// out of the pooling where the folder excludes the prompt.
    pub fn embed(
        &self,
        tokens: &[f32],
        shape: [usize; 3],
        mask: &[i64],
        prompt_length: Option<usize>,
    ) -> Result<Vec<Vec<f32>>> {
        let seq = shape[1];
        let first: Vec<usize> = mask
            .chunks(seq.max(1))
            .map(|row| row.iter().position(|&m| m != 0).unwrap_or(0))
            .collect();
        let mut mask = mask.to_vec();
        if let Some(n) = prompt_length.filter(|&n| n > 0 && !self.pooling.include_prompt) {
            // The prompt follows any left padding.
            for (row, first) in mask.chunks_mut(seq.max(1)).zip(&first) {
                row[..(first + n).min(seq)].iter_mut().for_each(|m| *m = 0);
            }
        }
        let mut out = pool(&self.pooling, tokens, shape, &mask, &first);
        for m in &self.after {
            for v in out.iter_mut() {
                *v = apply(m, v)?;
            }
        }
        Ok(out)
    }

    /// The similarity of every pair of embeddings, by the folder's function.
    pub fn similarity(&self, e: &[Vec<f32>]) -> Vec<Vec<f32>> {
        self.similarity.matrix(e)
    }
}

impl Similarity {
    /// The similarity of every pair of embeddings, as sentence-transformers' `util` functions
    /// compute it (cosine: each embedding normalized once, then dot products).
    pub fn matrix(self, e: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let normalized: Vec<Vec<f32>>;
        let e = if self == Similarity::Cosine {
            normalized = e.iter().map(|v| normalize(v)).collect();
            &normalized[..]
        } else {
            e
        };
        let pair = |a: &[f32], b: &[f32]| match self {
            Similarity::Cosine | Similarity::Dot => dot(a, b),
            Similarity::Euclidean => -a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt(),
            Similarity::Manhattan => -a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>(),
        };
        e.iter().map(|a| e.iter().map(|b| pair(a, b)).collect()).collect()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The folder of a module: `path` inside `dir` (empty: `dir` itself), never outside it.
fn module_folder(dir: &Path, path: &str, modules_path: &Path) -> Result<PathBuf> {
    let rel = Path::new(path);
    if rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(Error::config(
            modules_path,
            "path",
            format!("`{path}` leaves the model folder"),
        ));
    }
    Ok(dir.join(rel))
}

/// sentence-transformers 6's `pooling_mode` (a mode or a list, in order), or the `pooling_mode_*`
/// flags earlier versions wrote (in their fixed order); mean where none is set.
fn read_pooling(folder: &Path) -> Result<Pooling> {
    let path = folder.join("config.json");
    let c = read_json(&path)?;
    let mode = |name: &str| -> Result<Mode> {
        Ok(match name {
            "cls" => Mode::Cls,
            "max" => Mode::Max,
            "mean" => Mode::Mean,
            "mean_sqrt_len_tokens" => Mode::MeanSqrtLen,
            "weightedmean" => Mode::WeightedMean,
            "lasttoken" => Mode::LastToken,
            other => return Err(Error::config(&path, "pooling_mode", format!("unknown mode `{other}`"))),
        })
    };
    let mut modes = match c.get("pooling_mode") {
        Some(Value::String(m)) => vec![mode(m)?],
        Some(Value::Array(list)) => list
            .iter()
            .map(|m| mode(m.as_str().unwrap_or_default()))
            .collect::<Result<Vec<_>>>()?,
        Some(other) => {
            return Err(Error::config(
                &path,
                "pooling_mode",
                format!("expected a mode or a list, got {other}"),
            ));
        }
        None => LEGACY_FLAGS
            .iter()
            .filter(|(key, _)| flag(&c, key))
            .map(|(_, m)| *m)
            .collect(),
    };
    if modes.is_empty() {
        modes.push(Mode::Mean);
    }
    Ok(Pooling {
        modes,
        include_prompt: c.get("include_prompt").and_then(Value::as_bool).unwrap_or(true),
    })
}

fn read_dense(folder: &Path) -> Result<Module> {
    let path = folder.join("config.json");
    let c = read_json(&path)?;
    let size = |key: &str| -> Result<usize> {
        c.get(key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| Error::config(&path, key, "missing or not a count"))
    };
    let (inputs, outputs) = (size("in_features")?, size("out_features")?);
    let activation = match c
        .get("activation_function")
        .and_then(Value::as_str)
        .unwrap_or("torch.nn.modules.linear.Identity")
    {
        a if a.ends_with(".Identity") => Activation::Identity,
        a if a.ends_with(".Tanh") => Activation::Tanh,
        a if a.ends_with(".ReLU") => Activation::Relu,
        a if a.ends_with(".Sigmoid") => Activation::Sigmoid,
        other => {
            return Err(Error::config(
                &path,
                "activation_function",
                format!("`{other}` is not one hwcov computes (Identity, Tanh, ReLU, Sigmoid)"),
            ));
        }
    };
    let weights = folder.join("model.safetensors");
    let tensors = hwcov_core::tensor::read_safetensors(&weights)?;
    let get = |name: &str| tensors.get(name);
    let weight = get("linear.weight").ok_or_else(|| Error::tensor_in("linear.weight", &weights, "missing"))?;
    if weight.shape() != [outputs, inputs] {
        return Err(Error::tensor_in(
            "linear.weight",
            &weights,
            format!("shape {:?}, but config.json says {outputs} x {inputs}", weight.shape()),
        ));
    }
    let bias = match get("linear.bias") {
        Some(b) if b.shape() == [outputs] => Some(b.to_f64_vec().into_iter().map(|x| x as f32).collect()),
        Some(b) => {
            return Err(Error::tensor_in(
                "linear.bias",
                &weights,
                format!("shape {:?}, expected [{outputs}]", b.shape()),
            ));
        }
        None if flag(&c, "bias") => {
            return Err(Error::tensor_in(
                "linear.bias",
                &weights,
                "missing, though config.json says bias",
            ));
        }
        None => None,
    };
    let residual = if !flag(&c, "use_residual") {
        Residual::None
    } else if inputs == outputs {
        Residual::Input
    } else {
        let r = get("residual.weight").ok_or_else(|| {
            Error::tensor_in(
                "residual.weight",
                &weights,
                "missing, though config.json says use_residual",
            )
        })?;
        if r.shape() != [outputs, inputs] {
            return Err(Error::tensor_in(
                "residual.weight",
                &weights,
                format!("shape {:?}, expected [{outputs}, {inputs}]", r.shape()),
            ));
        }
        Residual::Projected(r.to_f64_vec().into_iter().map(|x| x as f32).collect())
    };
    Ok(Module::Dense {
        weight: weight.to_f64_vec().into_iter().map(|x| x as f32).collect(),
        bias,
        inputs,
        outputs,
        activation,
        residual,
    })
}

fn normalize(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / norm).collect()
}

fn apply(m: &Module, v: &[f32]) -> Result<Vec<f32>> {
    Ok(match m {
        Module::Normalize => normalize(v),
        Module::Dense {
            weight,
            bias,
            inputs,
            outputs,
            activation,
            residual,
        } => {
            if v.len() != *inputs {
                return Err(Error::tensor(
                    "sentence_embedding",
                    format!("{} values reach a Dense module of {inputs} inputs", v.len()),
                ));
            }
            (0..*outputs)
                .map(|o| {
                    let row = &weight[o * inputs..(o + 1) * inputs];
                    let y = dot(row, v) + bias.as_ref().map_or(0.0, |b| b[o]);
                    let y = match activation {
                        Activation::Identity => y,
                        Activation::Tanh => y.tanh(),
                        Activation::Relu => y.max(0.0),
                        Activation::Sigmoid => 1.0 / (1.0 + (-y).exp()),
                    };
                    y + match residual {
                        Residual::None => 0.0,
                        Residual::Input => v[o],
                        Residual::Projected(r) => dot(&r[o * inputs..(o + 1) * inputs], v),
                    }
                })
                .collect()
        }
    })
}

/// sentence-transformers' `Pooling.forward` over one batch; `mask` has the prompt excluded,
/// `first` is each row's first position that is not padding.
fn pool(p: &Pooling, tokens: &[f32], [batch, seq, hidden]: [usize; 3], mask: &[i64], first: &[usize]) -> Vec<Vec<f32>> {
    (0..batch)
        .map(|b| {
            let state = |t: usize| &tokens[(b * seq + t) * hidden..(b * seq + t + 1) * hidden];
            let on = |t: usize| mask[b * seq + t] != 0;
            let mut out = Vec::new();
            for mode in &p.modes {
                match mode {
                    // torch's argmax of an all-zero mask is 0.
                    Mode::Cls => out.extend_from_slice(state((0..seq).find(|&t| on(t)).unwrap_or(0))),
                    Mode::Max => out.extend((0..hidden).map(|h| {
                        (0..seq)
                            .map(|t| if on(t) { state(t)[h] } else { f32::NEG_INFINITY })
                            .fold(f32::NEG_INFINITY, f32::max)
                    })),
                    Mode::Mean | Mode::MeanSqrtLen => {
                        let count = ((0..seq).filter(|&t| on(t)).count() as f32).max(1e-9);
                        let denominator = if *mode == Mode::Mean { count } else { count.sqrt() };
                        out.extend(
                            (0..hidden)
                                .map(|h| (0..seq).filter(|&t| on(t)).map(|t| state(t)[h]).sum::<f32>() / denominator),
                        );
                    }
                    Mode::WeightedMean => {
                        let weight = |t: usize| if on(t) { (t + 1) as f32 - first[b] as f32 } else { 0.0 };
                        let total = (0..seq).map(weight).sum::<f32>().max(1e-9);
                        out.extend((0..hidden).map(|h| (0..seq).map(|t| state(t)[h] * weight(t)).sum::<f32>() / total));
                    }
                    // A row with no attended position takes the last one, masked to zeros.
                    Mode::LastToken => match (0..seq).rev().find(|&t| on(t)) {
                        Some(t) => out.extend_from_slice(state(t)),
                        None => out.extend(std::iter::repeat_n(0.0, hidden)),
                    },
                }
            }
            out
        })
        .collect()
}
