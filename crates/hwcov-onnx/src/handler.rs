//! The Handler of every graph platform over a model folder's graphs (see `Layout`), and its
//! token-by-token decoding:
//!
//! - with the KV cache where the exports carry it: a decoder-only graph with `past_key_values.N.*`
//!   inputs and `present.N.*` outputs (the first step over the prompt with an empty past, then one
//!   token a step); a vision-language prefill graph followed by `decoder_with_past_model.onnx`; an
//!   encoder, then `decoder_model.onnx` with presents, then `decoder_with_past_model.onnx`;
//! - else by re-running the graph that makes the logits over the whole sequence, one token longer
//!   each step.
//!
//! Position ids and empty past tensors are filled in as transformers fills them: `forward()` counts
//! positions from 0 (what the model does when given none), generation from the attention mask
//! (what `generate()` passes). A platform supplies `GraphSession`: one graph on its runtime.

use std::collections::BTreeMap;
use std::path::Path;

use hwcov_core::{Decoder, Error, Handler, HostTensor, ModelFiles, NamedTensors, Result, TensorData};

use crate::{Dim, GraphFile};

/// Where an output of `GraphSession::run_resident` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Back to the host, whole.
    Host,
    /// Kept where the runtime holds it, for a later run (the cache).
    Keep,
    /// Back to the host as each row's last position, (batch, features) of a (batch, sequence,
    /// features) tensor (`last_positions`): the logits a decoding step needs, without reading a
    /// prefill's sequence x vocabulary per row.
    LastPositions,
}

/// One graph of a model folder, ready on a platform's runtime.
pub trait GraphSession: Send {
    /// A tensor kept where the runtime holds it between runs (the KV cache): a device buffer, or
    /// the host tensor itself for a runtime that reads host memory.
    type Resident: Send;

    /// The graph file, for errors.
    fn path(&self) -> &Path;
    fn input_names(&self) -> Vec<String>;
    fn output_names(&self) -> Vec<String>;
    /// The declared shape of an input, where the graph declares one.
    fn input_shape(&self, _name: &str) -> Option<Vec<Dim>> {
        None
    }
    /// Runs the graph on the named inputs it declares (others are ignored).
    fn run(&mut self, inputs: &NamedTensors) -> Result<NamedTensors>;

    /// Runs the graph on host inputs and on tensors earlier runs kept (by input name); each output
    /// goes where `fate` says: kept where it is, back to the host, or back as its rows' last
    /// positions.
    fn run_resident(
        &mut self,
        inputs: &NamedTensors,
        resident: &BTreeMap<String, Self::Resident>,
        fate: &dyn Fn(&str) -> Fate,
    ) -> Result<(NamedTensors, BTreeMap<String, Self::Resident>)>;

    /// Each cache tensor (batch, heads, length, head_dim) with `front` rows of zeros added before
    /// its first along the length axis, or with its first `-front` rows dropped.
    fn shift_caches(&mut self, caches: Vec<Self::Resident>, front: isize) -> Result<Vec<Self::Resident>>;

    /// Says that the run after the coming one takes the coming one's inputs with each (input,
    /// axis) of `growth` one longer (a decoding step's cache): a runtime may ready that run while
    /// the device works on the coming one. Only a hint: the inputs given to that run decide.
    fn expect_growth(&mut self, _growth: &[(String, usize)]) {}

    /// Device kernels dispatched since the graph was opened, where the runtime counts them.
    fn dispatches(&self) -> Option<u64> {
        None
    }

    fn has_input(&self, name: &str) -> bool {
        self.input_names().iter().any(|n| n == name)
    }

    fn has_output(&self, name: &str) -> bool {
        self.output_names().iter().any(|n| n == name)
    }
}

/// How the handler decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoding {
    /// The model graph, then (where there is one) the with-past decoder, through the cache.
    DecoderCache,
    /// Encoder, first decoder, with-past decoder, through the cache.
    Seq2SeqCache,
    /// Re-running the logits graph over the whole sequence.
    Rerun,
    None,
}

/// What decoding carries from one step to the next.
struct State<R> {
    /// The host inputs of the next step besides its tokens: attention masks, encoder states (or,
    /// re-running, the whole inputs of the logits graph).
    inputs: NamedTensors,
    /// The cache, kept where the runtime holds it: `past_key_values.*` by name.
    pasts: BTreeMap<String, R>,
    /// Leading cache slots that are padding (masked for every row), in a bucketed cache.
    pad: usize,
}

impl<R> State<R> {
    fn new(inputs: NamedTensors) -> Self {
        State {
            inputs,
            pasts: BTreeMap::new(),
            pad: 0,
        }
    }
}

/// Slots a bucketed cache grows by at once.
const BUCKET: usize = 64;

/// `mask` (batch, length) with `front` zero columns added before the first, or its first `-front`
/// columns dropped.
fn shift_mask(mask: &HostTensor, front: isize) -> Result<HostTensor> {
    let (b, l) = rows("attention_mask", mask)?;
    let m = mask
        .to_i64_vec()
        .ok_or_else(|| Error::tensor("attention_mask", "is not an integer tensor"))?;
    let new_l = (l as isize + front).max(0) as usize;
    let mut out = Vec::with_capacity(b * new_l);
    for row in m.chunks(l.max(1)).take(b) {
        if front >= 0 {
            out.extend(std::iter::repeat_n(0, front as usize));
            out.extend_from_slice(row);
        } else {
            out.extend_from_slice(&row[(-front) as usize..]);
        }
    }
    HostTensor::i64(vec![b, new_l], out)
}

pub struct GraphHandler<Graph: GraphSession> {
    model: Option<Graph>,
    encoder: Option<Graph>,
    decoder: Option<Graph>,
    decoder_with_past: Option<Graph>,
    decoding: Decoding,
    state: Option<State<Graph::Resident>>,
}

const PAST: &str = "past_key_values.";
const PRESENT: &str = "present.";

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

/// The logits of each row's last position, (batch, vocab): as a decoding run returned them
/// (`decoding_fate`), or from the whole (batch, sequence, vocab).
fn last_logits(out: &NamedTensors) -> Result<HostTensor> {
    let logits = out
        .get(LOGITS)
        .ok_or_else(|| Error::tensor(LOGITS, "the graph produced no logits"))?;
    match logits.shape().len() {
        2 => Ok(logits.clone()),
        _ => last_positions(LOGITS, logits),
    }
}

const LOGITS: &str = "logits";

/// Where a decoding run's outputs go: the cache stays with the runtime; of the logits only each
/// row's last position comes back.
fn decoding_fate(name: &str) -> Fate {
    if is_present(name) {
        Fate::Keep
    } else if name == LOGITS {
        Fate::LastPositions
    } else {
        Fate::Host
    }
}

/// The element ranges of each row's last position in a (batch, sequence, features) tensor of
/// `shape`, and the (batch, features) shape they make.
pub fn last_position_ranges(name: &str, shape: &[usize]) -> Result<(Vec<std::ops::Range<usize>>, Vec<usize>)> {
    let &[b, l, v] = shape else {
        return Err(Error::tensor(
            name,
            format!("has shape {shape:?}; (batch, sequence, features) is needed"),
        ));
    };
    if l == 0 {
        return Err(Error::tensor(name, "has no positions"));
    }
    Ok((
        (0..b).map(|i| (i * l + l - 1) * v..(i * l + l) * v).collect(),
        vec![b, v],
    ))
}

/// Each row's last position of a (batch, sequence, features) host tensor, as f32 (batch, features).
pub fn last_positions(name: &str, t: &HostTensor) -> Result<HostTensor> {
    let (rows, shape) = last_position_ranges(name, t.shape())?;
    let last: Vec<f32> = match t.data() {
        TensorData::F32(all) => rows.into_iter().flat_map(|r| all[r].iter().copied()).collect(),
        _ => {
            let all = t.to_f64_vec();
            rows.into_iter()
                .flat_map(|r| all[r].iter().map(|&x| x as f32).collect::<Vec<_>>())
                .collect()
        }
    };
    HostTensor::f32(shape, last)
}

/// (batch, sequence) of an integer input.
fn rows(name: &str, t: &HostTensor) -> Result<(usize, usize)> {
    match t.shape() {
        [b, l] => Ok((*b, *l)),
        s => Err(Error::tensor(
            name,
            format!("has shape {s:?}; (batch, sequence) is needed"),
        )),
    }
}

/// Positions as transformers' forward() counts them when given none: from `past` on, every row.
fn positions_from(past: usize, batch: usize, len: usize) -> Result<HostTensor> {
    let v: Vec<i64> = (0..batch).flat_map(|_| (past..past + len).map(|p| p as i64)).collect();
    HostTensor::i64(vec![batch, len], v)
}

/// Positions as generate() derives them (transformers 5.17, `_prepare_position_ids_for_generation`):
/// the running count of attended tokens minus one, and 0 where the mask is 0; the last `len` of
/// each row.
fn positions_from_mask(mask: &HostTensor, len: usize) -> Result<HostTensor> {
    let (b, l) = rows("attention_mask", mask)?;
    let m = mask
        .to_i64_vec()
        .ok_or_else(|| Error::tensor("attention_mask", "is not an integer tensor"))?;
    let mut out = Vec::with_capacity(b * len);
    for row in m.chunks(l.max(1)).take(b) {
        let mut count = 0i64;
        let pos: Vec<i64> = row
            .iter()
            .map(|&x| {
                count += x;
                if x == 0 { 0 } else { count - 1 }
            })
            .collect();
        out.extend_from_slice(&pos[l - len.min(l)..]);
    }
    HostTensor::i64(vec![b, len.min(l)], out)
}

/// The inputs `graph` declares, from `given`.
fn pick<Graph: GraphSession>(given: &NamedTensors, graph: &Graph) -> NamedTensors {
    given
        .iter()
        .filter(|(k, _)| graph.has_input(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Empty past tensors (batch, heads, 0, head_dim) for every past input of `graph` not given: the
/// first step over a prompt. Heads and head size come from the graph's declared shapes.
fn empty_pasts<Graph: GraphSession>(graph: &Graph, given: &mut NamedTensors, batch: usize) -> Result<()> {
    for name in graph.input_names() {
        if !name.starts_with(PAST) || given.contains_key(&name) {
            continue;
        }
        let shape = graph.input_shape(&name).unwrap_or_default();
        let fixed = |i: usize| match shape.get(i) {
            Some(Dim::Fixed(d)) if *d >= 0 => Some(*d as usize),
            _ => None,
        };
        let (Some(heads), Some(size)) = (fixed(1), fixed(3)) else {
            return Err(Error::tensor(
                name.clone(),
                format!(
                    "{} declares no fixed heads and head size for it ({shape:?}), so an empty cache cannot be made",
                    graph.path().display()
                ),
            ));
        };
        given.insert(
            name,
            HostTensor::new(vec![batch, heads, 0, size], TensorData::F32(Vec::new()))?,
        );
    }
    Ok(())
}

/// The presents of a step as the pasts of the next (`present.X` -> `past_key_values.X`).
fn pasts_of<R>(kept: BTreeMap<String, R>, into: &mut BTreeMap<String, R>) {
    for (k, v) in kept {
        if let Some(rest) = k.strip_prefix(PRESENT) {
            into.insert(format!("{PAST}{rest}"), v);
        }
    }
}

/// What grows from one decoding step to the next without buckets: each cache the step appends to
/// (a past whose present the graph outputs) along its length, and the attention mask by a column.
fn growth<G: GraphSession, R>(g: &G, state: &State<R>) -> Vec<(String, usize)> {
    let outputs = g.output_names();
    let mut grows: Vec<(String, usize)> = state
        .pasts
        .keys()
        .filter(|p| {
            p.strip_prefix(PAST)
                .is_some_and(|rest| outputs.iter().any(|o| o.strip_prefix(PRESENT) == Some(rest)))
        })
        .map(|p| (p.clone(), 2))
        .collect();
    if state.inputs.contains_key("attention_mask") {
        grows.push(("attention_mask".into(), 1));
    }
    grows
}

fn is_present(name: &str) -> bool {
    name.starts_with(PRESENT)
}

/// Keeps a bucketed cache at a fixed length after a step appended one slot: drops a leading
/// padding slot, or, with none left, adds `BUCKET - 1` (the only steps that change the length).
fn fit_cache<G: GraphSession>(g: &mut G, state: &mut State<G::Resident>, bucketed: bool) -> Result<()> {
    if !bucketed {
        return Ok(());
    }
    let front: isize = if state.pad > 0 { -1 } else { BUCKET as isize - 1 };
    let names: Vec<String> = state.pasts.keys().cloned().collect();
    let caches: Vec<G::Resident> = names.iter().filter_map(|n| state.pasts.remove(n)).collect();
    let shifted = g.shift_caches(caches, front)?;
    state.pasts.extend(names.into_iter().zip(shifted));
    if let Some(mask) = state.inputs.get("attention_mask") {
        let m = shift_mask(mask, front)?;
        state.inputs.insert("attention_mask".into(), m);
    }
    state.pad = (state.pad as isize + front) as usize;
    Ok(())
}

impl<Graph: GraphSession> GraphHandler<Graph> {
    /// Finds the folder's graphs and opens the ones it uses with `open`.
    pub fn load(files: &ModelFiles, mut open: impl FnMut(&GraphFile) -> Result<Graph>) -> Result<Self> {
        let layout = crate::locate(&files.dir)?;
        let mut open_opt = |g: &Option<GraphFile>| g.as_ref().map(&mut open).transpose();
        let model = open_opt(&layout.model)?;
        let (encoder, decoder) = match (&layout.encoder, &layout.decoder) {
            (Some(_), Some(_)) => (open_opt(&layout.encoder)?, open_opt(&layout.decoder)?),
            (Some(_), None) if model.is_none() => (open_opt(&layout.encoder)?, open_opt(&layout.decoder_merged)?),
            _ => (None, None),
        };
        let decoder_with_past = open_opt(&layout.decoder_with_past)?;
        let mut h = GraphHandler {
            model,
            encoder,
            decoder,
            decoder_with_past,
            decoding: Decoding::None,
            state: None,
        };
        h.decoding = h.decoding_mode();
        Ok(h)
    }

    fn decoding_mode(&self) -> Decoding {
        let presents = |g: &Option<Graph>, name: &str| g.as_ref().is_some_and(|g| g.has_output(name));
        let takes_past = |g: &Option<Graph>, name: &str| g.as_ref().is_some_and(|g| g.has_input(name));
        if self.encoder.is_some()
            && presents(&self.decoder, "present.0.decoder.key")
            && takes_past(&self.decoder_with_past, "past_key_values.0.decoder.key")
        {
            return Decoding::Seq2SeqCache;
        }
        if presents(&self.model, "present.0.key")
            && (takes_past(&self.model, "past_key_values.0.key")
                || takes_past(&self.decoder_with_past, "past_key_values.0.key"))
        {
            return Decoding::DecoderCache;
        }
        let logits =
            |g: &Option<Graph>, input: &str| g.as_ref().is_some_and(|g| g.has_output("logits") && g.has_input(input));
        if logits(&self.model, "decoder_input_ids")
            || logits(&self.model, "input_ids")
            || (self.encoder.is_some() && logits(&self.decoder, "input_ids"))
        {
            return Decoding::Rerun;
        }
        Decoding::None
    }

    /// The graph of the decoder-only steps after the first.
    fn step_graph(&mut self) -> Option<&mut Graph> {
        match (self.decoder_with_past.as_mut(), self.model.as_mut()) {
            (Some(d), _) => Some(d),
            (None, m) => m,
        }
    }

    /// Whether the decoder-only cache is kept in buckets of fixed length: where the step graph
    /// takes its positions as `position_ids`, padding slots masked for every row change nothing
    /// (their attention weight is exp(-inf) = 0, and no position is counted from the cache's
    /// length), and a fixed length lets the runtime reuse one plan for many steps.
    fn bucketed(&self) -> bool {
        self.decoding == Decoding::DecoderCache
            && match (&self.decoder_with_past, &self.model) {
                (Some(d), _) => d.has_input("position_ids"),
                (None, Some(m)) => m.has_input("position_ids"),
                (None, None) => false,
            }
    }

    pub fn input_names(&self) -> Vec<String> {
        match (&self.model, &self.encoder) {
            (Some(g), _) => g
                .input_names()
                .into_iter()
                .filter(|n| !n.starts_with(PAST) && n != "position_ids")
                .collect(),
            (None, Some(e)) => {
                let mut names = e.input_names();
                names.push("decoder_input_ids".to_string());
                names
            }
            (None, None) => Vec::new(),
        }
    }

    pub fn output_names(&self) -> Vec<String> {
        match &self.model {
            Some(g) => g
                .output_names()
                .into_iter()
                .filter(|n| !n.starts_with(PRESENT))
                .collect(),
            None => vec!["logits".to_string(), "encoder_last_hidden_state".to_string()],
        }
    }

    /// The encoder's states and the first decoder's inputs: the decoder ids under the decoder
    /// graph's name `input_ids`, the encoder's states, and its mask where the graph takes it.
    fn encode(&mut self, given: &NamedTensors) -> Result<(NamedTensors, HostTensor)> {
        let (Some(encoder), Some(decoder)) = (self.encoder.as_mut(), self.decoder.as_ref()) else {
            return Err(Error::runtime(
                "decoding",
                "the folder has no encoder and decoder graphs",
            ));
        };
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
        if let Some(g) = self.model.as_mut() {
            let mut inputs = pick(given, g);
            if let Some(ids) = given
                .get("input_ids")
                .filter(|_| g.has_input("position_ids") && !given.contains_key("position_ids"))
            {
                let (b, l) = rows("input_ids", ids)?;
                inputs.insert("position_ids".into(), positions_from(0, b, l)?);
            }
            if let Some(ids) = given.get("input_ids") {
                empty_pasts(g, &mut inputs, rows("input_ids", ids)?.0)?;
            }
            let out = g.run(&inputs)?;
            return Ok(out.into_iter().filter(|(k, _)| !k.starts_with(PRESENT)).collect());
        }
        let (inputs, states) = self.encode(given)?;
        let decoder = self
            .decoder
            .as_mut()
            .ok_or_else(|| Error::runtime("forward", "no decoder graph"))?;
        let mut out: NamedTensors = decoder
            .run(&inputs)?
            .into_iter()
            .filter(|(k, _)| !k.starts_with(PRESENT))
            .collect();
        out.insert("encoder_last_hidden_state".into(), states);
        Ok(out)
    }

    pub fn can_decode(&self) -> bool {
        self.decoding != Decoding::None
    }

    pub fn start_decoding(&mut self, given: &NamedTensors) -> Result<HostTensor> {
        match self.decoding {
            Decoding::DecoderCache => {
                let g = self
                    .model
                    .as_mut()
                    .ok_or_else(|| Error::runtime("decoding", "no model graph"))?;
                let ids = given
                    .get("input_ids")
                    .ok_or_else(|| Error::tensor("input_ids", "missing input: decoding starts from a prompt"))?;
                let (b, l) = rows("input_ids", ids)?;
                let mask = match given.get("attention_mask") {
                    Some(m) => m.clone(),
                    None => HostTensor::i64(vec![b, l], vec![1; b * l])?,
                };
                let mut inputs = pick(given, g);
                inputs.insert("attention_mask".into(), mask.clone());
                if g.has_input("position_ids") {
                    inputs.insert("position_ids".into(), positions_from_mask(&mask, l)?);
                }
                empty_pasts(g, &mut inputs, b)?;
                let (out, kept) = g.run_resident(&inputs, &BTreeMap::new(), &decoding_fate)?;
                let logits = last_logits(&out)?;
                let mut state = State::new(NamedTensors::new());
                state.inputs.insert("attention_mask".into(), mask);
                pasts_of(kept, &mut state.pasts);
                let bucketed = self.bucketed();
                let steps = self
                    .step_graph()
                    .ok_or_else(|| Error::runtime("decoding", "no graph takes the cache"))?;
                fit_cache(steps, &mut state, bucketed)?;
                self.state = Some(state);
                Ok(logits)
            }
            Decoding::Seq2SeqCache => {
                let (inputs, _) = self.encode(given)?;
                let decoder = self
                    .decoder
                    .as_mut()
                    .ok_or_else(|| Error::runtime("decoding", "no decoder graph"))?;
                let (out, kept) = decoder.run_resident(&inputs, &BTreeMap::new(), &decoding_fate)?;
                let logits = last_logits(&out)?;
                let mut state = State::new(NamedTensors::new());
                if let Some(m) = inputs.get("encoder_attention_mask") {
                    state.inputs.insert("encoder_attention_mask".into(), m.clone());
                }
                pasts_of(kept, &mut state.pasts);
                self.state = Some(state);
                Ok(logits)
            }
            Decoding::Rerun => {
                let inputs = match self.model.as_ref() {
                    Some(g) => pick(given, g),
                    None => self.encode(given)?.0,
                };
                self.state = Some(State::new(inputs));
                self.rerun()
            }
            Decoding::None => Err(Error::runtime("decoding", "these graphs make no logits to decode from")),
        }
    }

    /// Runs the logits graph on the whole sequence so far.
    fn rerun(&mut self) -> Result<HostTensor> {
        let inputs = &self
            .state
            .as_ref()
            .ok_or_else(|| Error::runtime("decoding", "step() before start()"))?
            .inputs;
        let out = match (self.model.as_mut(), self.decoder.as_mut()) {
            (Some(g), _) => g.run(inputs)?,
            (None, Some(d)) => d.run(inputs)?,
            (None, None) => return Err(Error::runtime("decoding", "no graph makes the logits")),
        };
        last_logits(&out)
    }

    /// Appends one token per row and returns the next logits.
    pub fn step_decoding(&mut self, tokens: &[u32]) -> Result<HostTensor> {
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let bucketed = self.bucketed();
        let state = self
            .state
            .as_mut()
            .ok_or_else(|| Error::runtime("decoding", "step() before start()"))?;
        match self.decoding {
            Decoding::DecoderCache | Decoding::Seq2SeqCache => {
                let g = match (self.decoding, self.decoder_with_past.as_mut(), self.model.as_mut()) {
                    (_, Some(d), _) => d,
                    (Decoding::DecoderCache, None, Some(m)) => m,
                    _ => return Err(Error::runtime("decoding", "no graph takes the cache")),
                };
                let mut inputs = state.inputs.clone();
                inputs.insert("input_ids".into(), HostTensor::i64(vec![ids.len(), 1], ids.clone())?);
                if let Some(mask) = state.inputs.get("attention_mask") {
                    let grown = append_column("attention_mask", mask, &vec![1; ids.len()])?;
                    if g.has_input("position_ids") {
                        inputs.insert("position_ids".into(), positions_from_mask(&grown, 1)?);
                    }
                    inputs.insert("attention_mask".into(), grown.clone());
                    state.inputs.insert("attention_mask".into(), grown);
                }
                if !bucketed || self.decoding == Decoding::Seq2SeqCache {
                    let grows = growth(&*g, state);
                    g.expect_growth(&grows);
                }
                let (out, kept) = g.run_resident(&inputs, &state.pasts, &decoding_fate)?;
                let logits = last_logits(&out)?;
                pasts_of(kept, &mut state.pasts);
                if self.decoding == Decoding::DecoderCache {
                    fit_cache(g, state, bucketed)?;
                }
                Ok(logits)
            }
            Decoding::Rerun => {
                let (seq, mask) = match &self.model {
                    Some(g) if g.has_input("decoder_input_ids") => ("decoder_input_ids", "decoder_attention_mask"),
                    _ => ("input_ids", "attention_mask"),
                };
                let grown = append_column(
                    seq,
                    state.inputs.get(seq).ok_or_else(|| Error::tensor(seq, "missing"))?,
                    &ids,
                )?;
                state.inputs.insert(seq.to_string(), grown);
                if let Some(m) = state.inputs.get(mask) {
                    let grown = append_column(mask, m, &vec![1; tokens.len()])?;
                    state.inputs.insert(mask.to_string(), grown);
                }
                self.rerun()
            }
            Decoding::None => Err(Error::runtime("decoding", "these graphs make no logits to decode from")),
        }
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

    fn dispatches(&self) -> Option<u64> {
        let graphs = [&self.model, &self.encoder, &self.decoder, &self.decoder_with_past];
        let counts: Vec<u64> = graphs.iter().filter_map(|g| g.as_ref()?.dispatches()).collect();
        (!counts.is_empty()).then(|| counts.iter().sum())
    }
}

impl<Graph: GraphSession> Decoder for GraphHandler<Graph> {
    fn start(&mut self, inputs: &NamedTensors) -> Result<HostTensor> {
        self.start_decoding(inputs)
    }

    fn step(&mut self, tokens: &[u32]) -> Result<HostTensor> {
        self.step_decoding(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_positions_take_each_rows_last() {
        // (2, 3, 2): row i, position j, feature k holds 100i + 10j + k.
        let values: Vec<f32> = (0..2)
            .flat_map(|i| (0..3).flat_map(move |j| (0..2).map(move |k| (100 * i + 10 * j + k) as f32)))
            .collect();
        let t = HostTensor::f32(vec![2, 3, 2], values).unwrap();
        let last = last_positions("logits", &t).unwrap();
        assert_eq!(
            last,
            HostTensor::f32(vec![2, 2], vec![20.0, 21.0, 120.0, 121.0]).unwrap()
        );
        let ints = HostTensor::i64(vec![1, 2, 1], vec![5, 7]).unwrap();
        assert_eq!(
            last_positions("x", &ints).unwrap(),
            HostTensor::f32(vec![1, 1], vec![7.0]).unwrap()
        );
        let err = last_positions("logits", &HostTensor::f32(vec![2, 2], vec![0.0; 4]).unwrap()).unwrap_err();
        assert!(err.to_string().contains("logits"), "{err}");
        let empty = HostTensor::f32(vec![1, 0, 3], vec![]).unwrap();
        assert!(last_positions("logits", &empty).is_err());
    }

    #[test]
    fn masks_shift_by_whole_columns() {
        let mask = HostTensor::i64(vec![2, 3], vec![1, 1, 1, 0, 1, 1]).unwrap();
        let grown = shift_mask(&mask, 2).unwrap();
        assert_eq!(grown.shape(), [2, 5]);
        assert_eq!(grown.to_i64_vec().unwrap(), [0, 0, 1, 1, 1, 0, 0, 0, 1, 1]);
        let back = shift_mask(&grown, -2).unwrap();
        assert_eq!(back, mask);
    }

    #[test]
    fn positions_follow_the_mask_as_generate_derives_them() {
        let mask = HostTensor::i64(vec![2, 4], vec![1, 1, 1, 1, 0, 0, 1, 1]).unwrap();
        let p = positions_from_mask(&mask, 4).unwrap();
        assert_eq!(p.to_i64_vec().unwrap(), [0, 1, 2, 3, 0, 0, 0, 1]);
        let p = positions_from_mask(&mask, 1).unwrap();
        assert_eq!(p.to_i64_vec().unwrap(), [3, 1]);
        let p = positions_from(3, 2, 2).unwrap();
        assert_eq!(p.to_i64_vec().unwrap(), [3, 4, 3, 4]);
    }
}
