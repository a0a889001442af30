//! Specialization: an ONNX graph and concrete input types in, a plan out. Every value gets a static
//! dtype and shape; the shape arithmetic exports are full of (Shape, Gather on shapes, Concat, Range,
//! Equal/Where/ConstantOfShape on constants, ...) is evaluated here, on constants only; nodes no
//! output needs are dropped. What is left, the plan's steps, is the tensor work a device runs.
//!
//! A node whose output shape depends on the data (NonZero) pauses specialization: the device runs
//! the steps so far, counts, and `resolve` gives the specializer the count to go on with.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;

use hwcov_core::{DType, Error, HostTensor, NamedTensors, Result};

use crate::eval;
use crate::ir::{Op, ValueType};
use crate::lower;
use crate::model::{Attribute, Graph, Model, Node, dtype_of, elem_type_name};

pub type ValueId = usize;

/// A value while specializing: known on the host, or computed by a device step.
#[derive(Debug, Clone)]
pub enum Val {
    Const(Arc<HostTensor>),
    Dyn(ValueId),
}

/// A constant a step reads: an initializer of the model, or a value folded while specializing.
#[derive(Debug, Clone)]
pub struct Constant {
    pub tensor: Arc<HostTensor>,
    /// The initializer's name, for constants the model stores (the same for every plan of a model).
    pub initializer: Option<String>,
}

/// What a step reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operand {
    Value(ValueId),
    /// An index into `Plan::constants`.
    Const(usize),
}

/// One op on the device.
#[derive(Debug, Clone)]
pub struct Step {
    pub op: Op,
    pub inputs: Vec<Operand>,
    pub outputs: Vec<ValueId>,
    /// The ONNX node it comes from (name, else op and first output), for errors.
    pub node: String,
    /// That node's op type.
    pub onnx_op: String,
}

/// A graph specialized for concrete input types.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub values: Vec<ValueType>,
    pub constants: Vec<Constant>,
    /// The graph inputs the caller feeds, by name, in the graph's order.
    pub inputs: Vec<(String, ValueId)>,
    pub steps: Vec<Step>,
    /// The graph outputs, in the graph's order.
    pub outputs: Vec<(String, Operand)>,
    /// Graph inputs whose values (not only shapes) decided shapes of the plan (a Reshape's target
    /// fed as an input, say): a plan holds only for these same values.
    pub shape_inputs: Vec<String>,
}

impl Plan {
    pub fn ty(&self, operand: Operand) -> ValueType {
        match operand {
            Operand::Value(v) => self.values[v].clone(),
            Operand::Const(c) => {
                let t = &self.constants[c].tensor;
                ValueType::new(t.dtype(), t.shape().to_vec())
            }
        }
    }

    /// Step count per op name.
    pub fn op_counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for s in &self.steps {
            *m.entry(s.op.name()).or_default() += 1;
        }
        m
    }

    /// The values the graph outputs are.
    pub fn output_values(&self) -> HashSet<ValueId> {
        self.outputs
            .iter()
            .filter_map(|(_, o)| match o {
                Operand::Value(v) => Some(*v),
                Operand::Const(_) => None,
            })
            .collect()
    }

    /// Removes steps whose outputs nothing reads (a value only a Shape node looked at).
    fn prune(&mut self) {
        let mut live = self.output_values();
        let mut keep = vec![false; self.steps.len()];
        for (i, s) in self.steps.iter().enumerate().rev() {
            // NonZero stays: it was run (and counted) while specializing.
            if matches!(s.op, Op::NonZero) || s.outputs.iter().any(|o| live.contains(o)) {
                keep[i] = true;
                for inp in &s.inputs {
                    if let Operand::Value(v) = inp {
                        live.insert(*v);
                    }
                }
            }
        }
        let mut i = 0;
        self.steps.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }
}

/// A model ready to specialize: its graph, its initializers converted once, and the nodes its
/// outputs need.
pub struct Program {
    pub model: Model,
    initializers: HashMap<String, Arc<HostTensor>>,
    /// Nodes of the top graph that some output needs, by index.
    needed: Vec<bool>,
}

impl Program {
    /// Reads an ONNX file and the initializers its outputs need.
    pub fn load(path: &Path) -> Result<Self> {
        Self::new(Model::load(path)?)
    }

    pub fn new(model: Model) -> Result<Self> {
        let needed = needed_nodes(&model.graph);
        let mut initializers = HashMap::new();
        let mut used = HashSet::new();
        for (n, _) in model.graph.nodes.iter().zip(&needed).filter(|(_, k)| **k) {
            collect_inputs(n, &mut used);
        }
        for o in &model.graph.outputs {
            used.insert(o.name.clone());
        }
        for (name, t) in &model.graph.initializers {
            if used.contains(name) {
                initializers.insert(name.clone(), Arc::new(model.tensor(t)?));
            }
        }
        Ok(Program {
            model,
            initializers,
            needed,
        })
    }

    pub fn path(&self) -> &Path {
        &self.model.path
    }

    /// Starts specializing for the given input types (every graph input, by name).
    pub fn specializer(&self, inputs: &[(String, ValueType)]) -> Result<Specializer<'_>> {
        Specializer::new(self, inputs, &NamedTensors::new())
    }

    /// Starts specializing; where an op needs the value of an operand to know a shape (a shape,
    /// axes, starts, pads, repeats, scales, sizes) and that operand is a graph input, its value is
    /// read from `values`. Values are only read for shapes, never computed on.
    pub fn specializer_with_values(
        &self,
        inputs: &[(String, ValueType)],
        values: &NamedTensors,
    ) -> Result<Specializer<'_>> {
        Specializer::new(self, inputs, values)
    }

    /// Specializes in one go; an error if a shape depends on the data (see `Specializer`).
    pub fn plan(&self, inputs: &[(String, ValueType)]) -> Result<Plan> {
        let mut s = self.specializer(inputs)?;
        match s.advance()? {
            Progress::Done => Ok(s.finish()),
            Progress::NeedsCount { step } => Err(Error::format(
                self.path(),
                format!(
                    "node `{}`: its output shape depends on the values of the inputs, which a static plan cannot know",
                    s.plan().steps[step].node
                ),
            )),
        }
    }

    /// The declared element type of each graph input, checked to be one hwcov reads.
    pub fn input_types(&self) -> Result<Vec<(String, DType)>> {
        self.model
            .graph
            .inputs
            .iter()
            .map(|i| {
                dtype_of(i.elem_type)
                    .map(|d| (i.name.clone(), d))
                    .ok_or_else(|| Error::Unsupported {
                        platform: "graph".into(),
                        what: format!("graph input `{}` of {}", i.name, self.path().display()),
                        reason: format!(
                            "its element type {} is not one hwcov feeds",
                            elem_type_name(i.elem_type)
                        ),
                    })
            })
            .collect()
    }
}

/// Every name a node reads, its subgraphs' outer references included.
fn collect_inputs(n: &Node, out: &mut HashSet<String>) {
    out.extend(n.inputs.iter().filter(|s| !s.is_empty()).cloned());
    for a in n.attributes.values() {
        let graphs: Vec<&Graph> = match a {
            Attribute::Graph(g) => vec![g],
            Attribute::Graphs(gs) => gs.iter().map(|g| g.as_ref()).collect(),
            _ => vec![],
        };
        for g in graphs {
            for sn in &g.nodes {
                collect_inputs(sn, out);
            }
            out.extend(g.outputs.iter().map(|o| o.name.clone()));
        }
    }
}

/// Marks the nodes that some graph output depends on.
fn needed_nodes(g: &Graph) -> Vec<bool> {
    let mut wanted: HashSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
    let mut needed = vec![false; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate().rev() {
        if n.outputs.iter().any(|o| wanted.contains(o)) {
            needed[i] = true;
            collect_inputs(n, &mut wanted);
        }
    }
    needed
}

/// How far specialization got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Every node is lowered; `finish` gives the plan.
    Done,
    /// Step `step` (a NonZero) must run and its count be given to `resolve` before going on.
    NeedsCount { step: usize },
}

/// Work left: a node, or the end of an inlined If branch (bind the If's outputs).
enum Work {
    Node(Arc<Node>),
    BindOutputs { node: Arc<Node>, branch: Arc<Graph> },
}

/// Lowers a graph's nodes one at a time for concrete input types.
pub struct Specializer<'p> {
    program: &'p Program,
    opset: i64,
    env: HashMap<String, Val>,
    queue: VecDeque<Work>,
    plan: Plan,
    /// Constants already in the plan, by address.
    const_index: HashMap<*const HostTensor, usize>,
    initializer_names: HashMap<*const HostTensor, String>,
    pending: Option<ValueId>,
    /// Whether specialization paused: the caller then ran steps by number, so `finish` keeps them.
    paused: bool,
    /// Host values of graph inputs, for shape operands.
    input_values: HashMap<ValueId, (String, Arc<HostTensor>)>,
}

/// Outputs a fold may produce before a step is left to the device instead (elements).
const FOLD_LIMIT: usize = 1 << 22;

impl<'p> Specializer<'p> {
    fn new(program: &'p Program, inputs: &[(String, ValueType)], values: &NamedTensors) -> Result<Self> {
        let model = &program.model;
        let opset = model.opset("").unwrap_or(1);
        let mut s = Specializer {
            program,
            opset,
            env: HashMap::new(),
            queue: VecDeque::new(),
            plan: Plan::default(),
            const_index: HashMap::new(),
            initializer_names: HashMap::new(),
            pending: None,
            paused: false,
            input_values: HashMap::new(),
        };
        for (name, t) in &program.initializers {
            s.initializer_names.insert(Arc::as_ptr(t), name.clone());
            s.env.insert(name.clone(), Val::Const(t.clone()));
        }
        for declared in &model.graph.inputs {
            let Some((_, ty)) = inputs.iter().find(|(n, _)| *n == declared.name) else {
                return Err(Error::tensor(
                    declared.name.clone(),
                    format!("missing input: the graph {} needs it", model.path.display()),
                ));
            };
            if let Some(shape) = &declared.shape {
                check_declared(model, &declared.name, shape, ty)?;
            }
            let id = s.new_value(ty.clone());
            if let Some(v) = values.get(&declared.name) {
                s.input_values.insert(id, (declared.name.clone(), Arc::new(v.clone())));
            }
            s.plan.inputs.push((declared.name.clone(), id));
            s.env.insert(declared.name.clone(), Val::Dyn(id));
        }
        for (n, needed) in model.graph.nodes.iter().zip(&program.needed) {
            if *needed {
                s.queue.push_back(Work::Node(n.clone()));
            }
        }
        Ok(s)
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Lowers nodes until the graph is done or a shape waits on a count from the device.
    pub fn advance(&mut self) -> Result<Progress> {
        if let Some(v) = self.pending {
            let step = self.plan.steps.iter().position(|s| s.outputs.contains(&v)).unwrap_or(0);
            return Ok(Progress::NeedsCount { step });
        }
        while let Some(work) = self.queue.pop_front() {
            match work {
                Work::Node(node) => {
                    let before = self.plan.steps.len();
                    lower::lower(self, &node)?;
                    if let Some(i) =
                        (before..self.plan.steps.len()).find(|&i| matches!(self.plan.steps[i].op, Op::NonZero))
                    {
                        self.pending = Some(self.plan.steps[i].outputs[0]);
                        self.paused = true;
                        return Ok(Progress::NeedsCount { step: i });
                    }
                }
                Work::BindOutputs { node, branch } => {
                    for (out, b) in node.outputs.iter().zip(&branch.outputs) {
                        let v = self.env.get(&b.name).cloned().ok_or_else(|| {
                            self.node_error(&node, format!("the chosen branch does not produce `{}`", b.name))
                        })?;
                        self.env.insert(out.clone(), v);
                    }
                }
            }
        }
        Ok(Progress::Done)
    }

    /// Gives the count of non-zero elements the paused NonZero step found.
    pub fn resolve(&mut self, count: usize) {
        if let Some(v) = self.pending.take() {
            self.plan.values[v].shape[1] = count;
        }
    }

    /// The plan, with the graph outputs bound and steps nothing reads removed (unless it paused:
    /// then its steps keep the numbers they ran under).
    pub fn finish(mut self) -> Plan {
        let outputs: Vec<(String, Operand)> = self
            .program
            .model
            .graph
            .outputs
            .iter()
            .filter_map(|o| {
                let v = self.env.get(&o.name)?.clone();
                Some((o.name.clone(), self.operand(&v)))
            })
            .collect();
        self.plan.outputs = outputs;
        if !self.paused {
            self.plan.prune();
        }
        self.plan
    }

    /// Checks every graph output was produced (called by `finish`'s users through `plan`).
    pub fn missing_outputs(&self) -> Vec<String> {
        self.program
            .model
            .graph
            .outputs
            .iter()
            .filter(|o| !self.env.contains_key(&o.name))
            .map(|o| o.name.clone())
            .collect()
    }

    // ---- what `lower` uses ----------------------------------------------------------------------

    pub(crate) fn opset(&self) -> i64 {
        self.opset
    }

    pub(crate) fn path(&self) -> &Path {
        &self.program.model.path
    }

    pub(crate) fn model(&self) -> &Model {
        &self.program.model
    }

    pub(crate) fn node_error(&self, node: &Node, message: impl std::fmt::Display) -> Error {
        Error::format(
            self.path(),
            format!("node `{}` ({}): {message}", node.label(), node.op_type),
        )
    }

    fn new_value(&mut self, ty: ValueType) -> ValueId {
        self.plan.values.push(ty);
        self.plan.values.len() - 1
    }

    /// The value a node reads at input `i`, `None` where the input is omitted.
    pub(crate) fn input(&self, node: &Node, i: usize) -> Result<Option<Val>> {
        let Some(name) = node.input(i) else {
            return Ok(None);
        };
        self.env
            .get(name)
            .cloned()
            .map(Some)
            .ok_or_else(|| self.node_error(node, format!("input `{name}` is produced by no node before it")))
    }

    /// The value at input `i`, which the op needs.
    pub(crate) fn required(&self, node: &Node, i: usize) -> Result<Val> {
        self.input(node, i)?
            .ok_or_else(|| self.node_error(node, format!("input {i} is missing")))
    }

    pub(crate) fn ty(&self, v: &Val) -> ValueType {
        match v {
            Val::Const(t) => ValueType::new(t.dtype(), t.shape().to_vec()),
            Val::Dyn(id) => self.plan.values[*id].clone(),
        }
    }

    /// The host value of input `i`, which must be known once the input shapes are (`what` names
    /// it): a constant, or a graph input fed with its value.
    pub(crate) fn constant(&mut self, node: &Node, i: usize, what: &str) -> Result<Option<Arc<HostTensor>>> {
        match self.input(node, i)? {
            None => Ok(None),
            Some(Val::Const(t)) => Ok(Some(t)),
            Some(Val::Dyn(id)) => match self.input_values.get(&id) {
                Some((name, t)) => {
                    if !self.plan.shape_inputs.contains(name) {
                        self.plan.shape_inputs.push(name.clone());
                    }
                    Ok(Some(t.clone()))
                }
                None => Err(Error::Unsupported {
                    platform: "graph".into(),
                    what: format!("op {} (node {})", node.op_type, node.label()),
                    reason: format!(
                        "input `{}` ({what}) is computed from the values of the graph inputs, so the shape it \
                         decides cannot be inferred before the run",
                        node.inputs[i]
                    ),
                }),
            },
        }
    }

    /// Binds output `i` of `node`.
    pub(crate) fn bind(&mut self, node: &Node, i: usize, v: Val) {
        if let Some(name) = node.outputs.get(i).filter(|s| !s.is_empty()) {
            self.env.insert(name.clone(), v);
        }
    }

    /// Whether output `i` of `node` is read by anything (optional outputs may go unread).
    pub(crate) fn output_used(&self, node: &Node, i: usize) -> bool {
        node.outputs.get(i).is_some_and(|s| !s.is_empty())
    }

    fn operand(&mut self, v: &Val) -> Operand {
        match v {
            Val::Dyn(id) => Operand::Value(*id),
            Val::Const(t) => {
                let key = Arc::as_ptr(t);
                if let Some(&i) = self.const_index.get(&key) {
                    return Operand::Const(i);
                }
                self.plan.constants.push(Constant {
                    tensor: t.clone(),
                    initializer: self.initializer_names.get(&key).cloned(),
                });
                let i = self.plan.constants.len() - 1;
                self.const_index.insert(key, i);
                Operand::Const(i)
            }
        }
    }

    /// Applies `op` to `operands`: on the host where every operand is a constant and the op can be
    /// evaluated there (within the fold limit), else as a device step.
    pub(crate) fn emit(&mut self, node: &Node, op: Op, operands: &[Val], outputs: Vec<ValueType>) -> Result<Vec<Val>> {
        // Shapes come from the file's attributes and constants: one can claim more elements than
        // any machine could count, let alone hold.
        if let Some(t) = outputs.iter().find(|t| t.checked_numel().is_none()) {
            return Err(self.node_error(node, format!("its output {t} has more elements than can be counted")));
        }
        let all_const = operands.iter().all(|v| matches!(v, Val::Const(_)));
        let small = outputs.iter().map(ValueType::numel).fold(0usize, usize::saturating_add) <= FOLD_LIMIT;
        if all_const && small && !matches!(op, Op::NonZero) {
            let hosts: Vec<&HostTensor> = operands
                .iter()
                .filter_map(|v| match v {
                    Val::Const(t) => Some(t.as_ref()),
                    Val::Dyn(_) => None,
                })
                .collect();
            if let Some(result) = eval::eval(&op, &hosts, &outputs) {
                let values = result.map_err(|e| self.node_error(node, e))?;
                return Ok(values.into_iter().map(|t| Val::Const(Arc::new(t))).collect());
            }
        }
        let inputs = operands.iter().map(|v| self.operand(v)).collect();
        let ids: Vec<ValueId> = outputs.into_iter().map(|t| self.new_value(t)).collect();
        self.plan.steps.push(Step {
            op,
            inputs,
            outputs: ids.clone(),
            node: node.label(),
            onnx_op: node.op_type.clone(),
        });
        Ok(ids.into_iter().map(Val::Dyn).collect())
    }

    /// Emits an op with one output.
    pub(crate) fn emit1(&mut self, node: &Node, op: Op, operands: &[Val], output: ValueType) -> Result<Val> {
        let mut v = self.emit(node, op, operands, vec![output])?;
        v.pop().ok_or_else(|| self.node_error(node, "produced no output"))
    }

    /// Inlines the branch of an If whose condition is known.
    pub(crate) fn inline_branch(&mut self, node: &Arc<Node>, branch: Arc<Graph>) {
        let mut work: Vec<Work> = branch.nodes.iter().map(|n| Work::Node(n.clone())).collect();
        for (name, t) in &branch.initializers {
            if let Ok(host) = self.program.model.tensor(t) {
                self.env.insert(name.clone(), Val::Const(Arc::new(host)));
            }
        }
        work.push(Work::BindOutputs {
            node: node.clone(),
            branch,
        });
        for w in work.into_iter().rev() {
            self.queue.push_front(w);
        }
    }
}

/// Checks a fed input against the graph's declared type: rank and fixed sizes.
fn check_declared(model: &Model, name: &str, shape: &[crate::model::Dim], ty: &ValueType) -> Result<()> {
    let bad = |m: String| {
        Error::tensor(
            name,
            format!("{m} (the graph {} declares {shape:?})", model.path.display()),
        )
    };
    if shape.len() != ty.shape.len() {
        return Err(bad(format!("has rank {}, shape {:?}", ty.shape.len(), ty.shape)));
    }
    for (i, (d, &got)) in shape.iter().zip(&ty.shape).enumerate() {
        if let crate::model::Dim::Fixed(want) = d
            && *want >= 0
            && *want as usize != got
        {
            return Err(bad(format!("has size {got} on axis {i}, shape {:?}", ty.shape)));
        }
    }
    Ok(())
}
