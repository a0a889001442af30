//! The Handler of every graph platform over a model folder's graphs: one graph of the whole
//! forward(), or optimum's split into an encoder and a decoder graph; and token-by-token decoding by
//! re-running the graph that produces the logits. A platform supplies `GraphSession`: one graph
//! compiled for its runtime.

use std::path::Path;

use hwcov_core::{Decoder, Error, Handler, HostTensor, ModelFiles, NamedTensors, Result};

use crate::{GraphFile, Layout};

/// One graph of a model folder, ready on a platform's runtime.
pub trait GraphSession: Send {
    /// The graph file, for errors.
    fn path(&self) -> &Path;
    fn input_names(&self) -> Vec<String>;
    fn output_names(&self) -> Vec<String>;
    /// Runs the graph on the named inputs it declares (others are ignored).
    fn run(&mut self, inputs: &NamedTensors) -> Result<NamedTensors>;

    fn has_input(&self, name: &str) -> bool {
        self.input_names().iter().any(|n| n == name)
    }

    fn has_output(&self, name: &str) -> bool {
        self.output_names().iter().any(|n| n == name)
    }
}

enum Graphs<Graph> {
    Single(Graph),
    /// optimum's seq2seq export: the encoder (`input_ids` + `attention_mask`, or `input_features`
    /// -> `last_hidden_state`) and the decoder (`input_ids` + `encoder_hidden_states`
    /// [+ `encoder_attention_mask`] -> `logits`).
    Split {
        encoder: Graph,
        decoder: Graph,
    },
}

pub struct GraphHandler<Graph> {
    graphs: Graphs<Graph>,
    /// The inputs of the graph that makes the logits, for the sequence being decoded.
    decoding: Option<NamedTensors>,
}

/// Appends one value per row to a (batch, sequence) integer tensor.
fn append_column(name: &str, t: &HostTensor, values: &[i64]) -> Result<HostTensor> {
    let [b, l] = t.shape() else {
        return Err(Error::tensor(
            name,
            format!("has shape {:?}; (batch, sequence) is needed", t.shape()),
        ));
    };
    let (b, l) = (*b, *l);
    if values.len() != b {
        return Err(Error::tensor(name, format!("{} new tokens for {b} rows", values.len())));
    }
    let old = t
        .to_i64_vec()
        .ok_or_else(|| Error::tensor(name, "is not an integer tensor"))?;
    let mut grown = Vec::with_capacity(b * (l + 1));
    for (row, v) in old.chunks(l.max(1)).take(b).zip(values) {
        grown.extend_from_slice(&row[..l]);
        grown.push(*v);
    }
    HostTensor::i64(vec![b, l + 1], grown)
}

/// The logits of each row's last position, (batch, vocab), from (batch, sequence, vocab).
fn last_logits(out: &NamedTensors) -> Result<HostTensor> {
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

fn pick<Graph: GraphSession>(given: &NamedTensors, graph: &Graph) -> NamedTensors {
    given
        .iter()
        .filter(|(k, _)| graph.has_input(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl<Graph: GraphSession> GraphHandler<Graph> {
    /// Finds the folder's graphs and opens each with `open`.
    pub fn load(files: &ModelFiles, mut open: impl FnMut(&GraphFile) -> Result<Graph>) -> Result<Self> {
        let graphs = match crate::locate(&files.dir)? {
            Layout::Single(g) => Graphs::Single(open(&g)?),
            Layout::EncoderDecoder { encoder, decoder, .. } => Graphs::Split {
                encoder: open(&encoder)?,
                decoder: open(&decoder)?,
            },
        };
        Ok(GraphHandler { graphs, decoding: None })
    }

    pub fn input_names(&self) -> Vec<String> {
        match &self.graphs {
            Graphs::Single(g) => g.input_names(),
            Graphs::Split { encoder, .. } => {
                let mut names = encoder.input_names();
                names.push("decoder_input_ids".to_string());
                names
            }
        }
    }

    pub fn output_names(&self) -> Vec<String> {
        match &self.graphs {
            Graphs::Single(g) => g.output_names(),
            Graphs::Split { .. } => vec!["logits".to_string(), "encoder_last_hidden_state".to_string()],
        }
    }

    /// Whether the graphs can decode: a logits output and an input that grows by one token a step.
    pub fn can_decode(&self) -> bool {
        match &self.graphs {
            Graphs::Single(g) => {
                g.has_output("logits") && (g.has_input("decoder_input_ids") || g.has_input("input_ids"))
            }
            Graphs::Split { decoder, .. } => decoder.has_output("logits") && decoder.has_input("input_ids"),
        }
    }

    /// The decoder graph's inputs for the split layout: the decoder ids under the decoder graph's
    /// name `input_ids`, the encoder's states, and the encoder's mask where the graph takes it.
    fn split_decoder_inputs(
        encoder: &mut Graph,
        decoder: &Graph,
        given: &NamedTensors,
    ) -> Result<(NamedTensors, HostTensor)> {
        let encoded = encoder.run(&pick(given, encoder))?;
        let states = encoded.get("last_hidden_state").cloned().ok_or_else(|| {
            Error::tensor(
                "last_hidden_state",
                format!("not produced by the encoder graph {}", encoder.path().display()),
            )
        })?;
        let ids = given
            .get("decoder_input_ids")
            .ok_or_else(|| Error::tensor("decoder_input_ids", "missing input: the decoder graph needs it"))?;
        let mut inputs = NamedTensors::new();
        inputs.insert("input_ids".into(), ids.clone());
        inputs.insert("encoder_hidden_states".into(), states.clone());
        if decoder.has_input("encoder_attention_mask") {
            let mask = given.get("attention_mask").ok_or_else(|| {
                Error::tensor(
                    "attention_mask",
                    "missing input: the decoder graph takes the encoder's mask",
                )
            })?;
            inputs.insert("encoder_attention_mask".into(), mask.clone());
        }
        Ok((inputs, states))
    }

    pub fn run(&mut self, given: &NamedTensors) -> Result<NamedTensors> {
        match &mut self.graphs {
            Graphs::Single(g) => g.run(given),
            Graphs::Split { encoder, decoder } => {
                let (inputs, states) = Self::split_decoder_inputs(encoder, decoder, given)?;
                let mut out = decoder.run(&inputs)?;
                out.insert("encoder_last_hidden_state".into(), states);
                Ok(out)
            }
        }
    }

    /// Runs the logits graph on the current decoding inputs; the next-token logits of each row.
    fn next_logits(&mut self) -> Result<HostTensor> {
        let inputs = self
            .decoding
            .as_ref()
            .ok_or_else(|| Error::runtime("decoding", "step() before start()"))?;
        let out = match &mut self.graphs {
            Graphs::Single(g) => g.run(inputs)?,
            Graphs::Split { decoder, .. } => decoder.run(inputs)?,
        };
        last_logits(&out)
    }

    pub fn start_decoding(&mut self, given: &NamedTensors) -> Result<HostTensor> {
        self.decoding = Some(match &mut self.graphs {
            Graphs::Single(g) => pick(given, g),
            Graphs::Split { encoder, decoder } => Self::split_decoder_inputs(encoder, decoder, given)?.0,
        });
        self.next_logits()
    }

    /// Appends one token per row (and a 1 to the matching attention mask) and re-runs the graph.
    pub fn step_decoding(&mut self, tokens: &[u32]) -> Result<HostTensor> {
        let (seq, mask) = match &self.graphs {
            Graphs::Single(g) if g.has_input("decoder_input_ids") => ("decoder_input_ids", "decoder_attention_mask"),
            _ => ("input_ids", "attention_mask"),
        };
        let inputs = self
            .decoding
            .as_mut()
            .ok_or_else(|| Error::runtime("decoding", "step() before start()"))?;
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let grown = append_column(seq, inputs.get(seq).ok_or_else(|| Error::tensor(seq, "missing"))?, &ids)?;
        inputs.insert(seq.to_string(), grown);
        if let Some(m) = inputs.get(mask) {
            let grown = append_column(mask, m, &vec![1; tokens.len()])?;
            inputs.insert(mask.to_string(), grown);
        }
        self.next_logits()
    }
}

impl<Graph: GraphSession> Handler for GraphHandler<Graph> {
    fn forward(&mut self, inputs: &NamedTensors) -> Result<NamedTensors> {
        self.run(inputs)
    }

    fn input_names(&self) -> Vec<String> {
        GraphHandler::input_names(self)
    }

    fn output_names(&self) -> Vec<String> {
        GraphHandler::output_names(self)
    }

    fn decoder(&mut self) -> Option<&mut dyn Decoder> {
        if self.can_decode() { Some(self) } else { None }
    }
}

/// Token-by-token decoding by re-running the graph that makes the logits.
impl<Graph: GraphSession> Decoder for GraphHandler<Graph> {
    fn start(&mut self, inputs: &NamedTensors) -> Result<HostTensor> {
        self.start_decoding(inputs)
    }

    fn step(&mut self, tokens: &[u32]) -> Result<HostTensor> {
        self.step_decoding(tokens)
    }
}
