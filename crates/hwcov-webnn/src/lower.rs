//! A plan (the graph layer's steps, shapes known) as a WebNN program: the inputs, the constants
//! (sent as binary), and for each step the MLGraphBuilder calls that compute it. The page
//! (`page.js`) makes the calls as written; every decision is made here. A step with no WebNN
//! equivalent, after decomposition, makes the graph unsupported by name.
//!
//! Operands are named `v<value>` (the plan's values) and `c<constant>`; a call's result is stored
//! under its step's output names. An argument `{"$": name}` is an operand; any other JSON is passed
//! as it is (numbers, shapes, option objects).

use hwcov_core::{DType, Error, Result};
use hwcov_onnx::ir::{Binary, Op, PadMode, ReduceKind, Resize, ScatterReduction, Unary, ValueType};
use hwcov_onnx::resize::axis_taps;
use hwcov_onnx::{Operand, Plan, Step};
use serde_json::{Value, json};

/// A plan lowered: the program the page builds, and the bytes of its constants.
pub struct Lowered {
    pub program: Value,
    /// The data of each entry of `program["constants"]`, in order.
    pub constants: Vec<ConstantData>,
}

impl Lowered {
    /// The graph inputs the program takes, in its order.
    pub fn input_names(&self) -> Vec<String> {
        self.program["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["name"].as_str().map(String::from))
            .collect()
    }
}

/// Where a constant's bytes come from.
pub enum ConstantData {
    /// `Plan::constants[i]`.
    Plan(usize),
    /// Made while lowering (a Resize's gather indices and weights).
    Made(Vec<u8>),
}

/// Constants a step's lowering makes: (operand name, WebNN descriptor, bytes).
type Made = Vec<(String, Value, Vec<u8>)>;

/// WebNN's name of an element type; bool is uint8 (0 or 1).
pub fn data_type(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::I64 => "int64",
        DType::I32 => "int32",
        DType::U8 | DType::Bool => "uint8",
        DType::F64 | DType::BF16 => return None,
    })
}

fn operand(o: Operand) -> Value {
    match o {
        Operand::Value(v) => json!({ "$": format!("v{v}") }),
        Operand::Const(c) => json!({ "$": format!("c{c}") }),
    }
}

fn unsupported(step: &Step, reason: impl Into<String>) -> Error {
    Error::Unsupported {
        platform: "webnn".into(),
        what: format!("op {} (node {})", step.onnx_op, step.node),
        reason: reason.into(),
    }
}

/// Lowers `plan`; `path` names the graph in errors.
pub fn lower(plan: &Plan) -> Result<Lowered> {
    lower_upto(plan, plan.steps.len(), None)
}

/// The program that counts the non-zero elements NonZero step `step` reads: the steps before it,
/// and the count (a float32 scalar, exact below 2^24) as its one output, `count`. A plan that
/// paused on NonZero learns its shapes from it (`Specializer::resolve`).
pub fn lower_count(plan: &Plan, step: usize) -> Result<Lowered> {
    lower_upto(plan, step, Some(step))
}

fn lower_upto(plan: &Plan, upto: usize, count_for: Option<usize>) -> Result<Lowered> {
    let mut inputs = Vec::new();
    for (name, v) in &plan.inputs {
        let ty = &plan.values[*v];
        if ty.numel() == 0 {
            // WebNN has no empty tensors (a prefill's cache of length 0): see `lower_step`.
            continue;
        }
        let dt = data_type(ty.dtype).ok_or_else(|| Error::Unsupported {
            platform: "webnn".into(),
            what: format!("graph input `{name}`"),
            reason: format!("WebNN has no {} tensors", ty.dtype),
        })?;
        inputs.push(json!({ "id": format!("v{v}"), "name": name, "dataType": dt, "shape": ty.shape }));
    }
    let mut ops = Vec::new();
    let mut made = Made::new();
    for step in &plan.steps[..upto] {
        ops.extend(lower_step(plan, step, &mut made)?);
    }
    let mut outputs = Vec::new();
    if let Some(s) = count_for {
        let step = &plan.steps[s];
        let x = plan.ty(step.inputs[0]);
        let n = x.numel();
        let [xf, xc, m, mf] = ["count_x", "count_xf", "count_m", "count_mf"].map(String::from);
        let zero = "count_zero".to_string();
        data_type(x.dtype).ok_or_else(|| unsupported(step, format!("NonZero of {}", x.dtype)))?;
        // Compared as float32 (WebNN's notEqual takes no uint8): a non-zero stays non-zero.
        ops.push(json!({ "call": "constant", "args": [{"dataType": "float32", "shape": []}, 0], "outs": [zero] }));
        ops.push(call(
            "reshape",
            vec![operand(step.inputs[0]), json!([n])],
            std::slice::from_ref(&xf),
        ));
        ops.push(call(
            "cast",
            vec![json!({ "$": xf }), json!("float32")],
            std::slice::from_ref(&xc),
        ));
        ops.push(call(
            "notEqual",
            vec![json!({ "$": xc }), json!({ "$": zero })],
            std::slice::from_ref(&m),
        ));
        ops.push(call(
            "cast",
            vec![json!({ "$": m }), json!("float32")],
            std::slice::from_ref(&mf),
        ));
        ops.push(call(
            "reduceSum",
            vec![json!({ "$": mf }), json!({ "axes": [0], "keepDimensions": false })],
            &["count".to_string()],
        ));
        outputs.push(json!({ "name": "count", "id": "count", "dataType": "float32", "shape": [], "bool": false }));
    }
    for (name, o) in plan.outputs.iter().filter(|_| count_for.is_none()) {
        let Operand::Value(v) = o else { continue };
        let ty = &plan.values[*v];
        if ty.numel() == 0 {
            // Nothing to compute: the caller makes the empty tensor (`empty_outputs`).
            continue;
        }
        let dt = data_type(ty.dtype).ok_or_else(|| Error::Unsupported {
            platform: "webnn".into(),
            what: format!("graph output `{name}`"),
            reason: format!("WebNN has no {} tensors", ty.dtype),
        })?;
        // An output must be computed by the graph: a graph input passed through gets an identity.
        let id = if plan.inputs.iter().any(|(_, i)| i == v) {
            let id = format!("out_{name}");
            ops.push(json!({ "call": "identity", "args": [operand(*o)], "outs": [id] }));
            id
        } else {
            format!("v{v}")
        };
        outputs.push(
            json!({ "name": name, "id": id, "dataType": dt, "shape": ty.shape, "bool": ty.dtype == DType::Bool }),
        );
    }
    // WebNN drops inputs no output depends on (one that only decided a shape or an attribute,
    // such as Clip's bounds; or one only dead steps read, as LLaVA's pixels before its NonZero's
    // count), and then refuses a dispatch that feeds them: only what the outputs need is kept.
    let live = live_operands(&mut ops, &outputs);
    inputs.retain(|i| live.contains(i["id"].as_str().unwrap_or_default()));
    made.retain(|(name, _, _)| live.contains(name.as_str()));
    let mut constants = Vec::new();
    let mut listed = Vec::new();
    for (c, k) in plan
        .constants
        .iter()
        .enumerate()
        .filter(|(c, _)| live.contains(format!("c{c}").as_str()))
    {
        let t = &k.tensor;
        let dt = data_type(t.dtype()).ok_or_else(|| Error::Unsupported {
            platform: "webnn".into(),
            what: format!("constant `{}`", k.initializer.clone().unwrap_or_else(|| format!("{c}"))),
            reason: format!("WebNN has no {} tensors", t.dtype()),
        })?;
        listed.push(json!({ "id": format!("c{c}"), "dataType": dt, "shape": t.shape() }));
        constants.push(ConstantData::Plan(c));
    }
    for (id, mut desc, bytes) in made {
        desc["id"] = json!(id);
        listed.push(desc);
        constants.push(ConstantData::Made(bytes));
    }
    Ok(Lowered {
        program: json!({ "inputs": inputs, "constants": listed, "ops": ops, "outputs": outputs }),
        constants,
    })
}

/// The operands the outputs depend on; the ops nothing of them needs are removed.
fn live_operands(ops: &mut Vec<Value>, outputs: &[Value]) -> std::collections::HashSet<String> {
    fn refs(v: &Value, into: &mut std::collections::HashSet<String>) {
        match v {
            Value::Object(o) => match o.get("$").and_then(Value::as_str) {
                Some(name) => {
                    into.insert(name.to_string());
                }
                None => o.values().for_each(|x| refs(x, into)),
            },
            Value::Array(a) => a.iter().for_each(|x| refs(x, into)),
            _ => {}
        }
    }
    let mut live: std::collections::HashSet<String> = outputs
        .iter()
        .filter_map(|o| o["id"].as_str().map(String::from))
        .collect();
    let mut keep = vec![false; ops.len()];
    for (i, op) in ops.iter().enumerate().rev() {
        let makes = op["outs"].as_array().into_iter().flatten().filter_map(Value::as_str);
        if makes.into_iter().any(|n| live.contains(n)) {
            keep[i] = true;
            refs(&op["args"], &mut live);
        }
    }
    let mut i = 0;
    ops.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    live
}

/// One call `method(args...)` whose result is `outs`.
fn call(method: &str, args: Vec<Value>, outs: &[String]) -> Value {
    json!({ "call": method, "args": args, "outs": outs })
}

fn names(step: &Step) -> Vec<String> {
    step.outputs.iter().map(|v| format!("v{v}")).collect()
}

/// Whether operand `o` has no elements: WebNN cannot hold it, so steps drop such operands where
/// that changes nothing (a Concat part), and a step whose outputs are all empty is left out.
fn empty(plan: &Plan, o: Operand) -> bool {
    plan.ty(o).numel() == 0
}

fn lower_step(plan: &Plan, step: &Step, made: &mut Made) -> Result<Vec<Value>> {
    if step.outputs.iter().all(|&v| plan.values[v].numel() == 0) {
        return Ok(Vec::new());
    }
    if step.outputs.len() > 1 && !matches!(step.op, Op::Split { .. }) {
        return Err(unsupported(
            step,
            format!(
                "its {} outputs (WebNN's {} gives one)",
                step.outputs.len(),
                step.op.name()
            ),
        ));
    }
    if !matches!(step.op, Op::Concat { .. }) && step.inputs.iter().any(|&o| empty(plan, o)) {
        return Err(unsupported(
            step,
            "an operand with no elements (WebNN has no empty tensors)",
        ));
    }
    let outs = names(step);
    let out_ty = |i: usize| plan.values[step.outputs[i]].clone();
    let in_ty = |i: usize| plan.ty(step.inputs[i]);
    let x = |i: usize| operand(step.inputs[i]);
    // A temporary operand of this step.
    let tmp = |k: usize| format!("t{}_{k}", step.outputs[0]);
    let one = |method: &str, args: Vec<Value>| Ok(vec![call(method, args, &outs)]);
    match &step.op {
        Op::Unary(u) => lower_unary(step, u, x(0), &outs, &in_ty(0)),
        Op::Binary(b) => {
            let method = match b {
                Binary::Add => "add",
                Binary::Sub => "sub",
                Binary::Mul => "mul",
                Binary::Div => "div",
                Binary::Pow => "pow",
                Binary::Min => "min",
                Binary::Max => "max",
                Binary::Equal => "equal",
                Binary::Less => "lesser",
                Binary::LessOrEqual => "lesserOrEqual",
                Binary::Greater => "greater",
                Binary::GreaterOrEqual => "greaterOrEqual",
                Binary::And => "logicalAnd",
                Binary::Or => "logicalOr",
                Binary::Xor => "logicalXor",
                Binary::PRelu => "prelu",
                other => return Err(unsupported(step, format!("WebNN has no {other:?}"))),
            };
            one(method, vec![x(0), x(1)])
        }
        Op::Where => one("where", vec![x(0), x(1), x(2)]),
        Op::Cast => {
            let to = out_ty(0).dtype;
            let dt = data_type(to).ok_or_else(|| unsupported(step, format!("WebNN has no {to} tensors")))?;
            if to == DType::Bool && in_ty(0).dtype != DType::Bool {
                // ONNX: any non-zero is true; a cast to uint8 would truncate 0.5 to 0.
                let zero = tmp(0);
                let src = data_type(in_ty(0).dtype).unwrap_or("float32");
                Ok(vec![
                    json!({ "call": "constant", "args": [{"dataType": src, "shape": []}, 0], "outs": [zero] }),
                    call("notEqual", vec![x(0), json!({ "$": zero })], &outs),
                ])
            } else {
                one("cast", vec![x(0), json!(dt)])
            }
        }
        Op::Reshape => one("reshape", vec![x(0), json!(out_ty(0).shape)]),
        Op::Transpose { perm } => one("transpose", vec![x(0), json!({ "permutation": perm })]),
        Op::Slice { starts, steps } => {
            if steps.iter().any(|&s| s <= 0) {
                return Err(unsupported(step, "a slice with a negative step"));
            }
            // WebNN's sizes are the input window, which a stride walks through.
            let window: Vec<usize> = out_ty(0)
                .shape
                .iter()
                .zip(steps)
                .map(|(&n, &s)| if n == 0 { 0 } else { (n - 1) * s as usize + 1 })
                .collect();
            one(
                "slice",
                vec![x(0), json!(starts), json!(window), json!({ "strides": steps })],
            )
        }
        Op::Expand => one("expand", vec![x(0), json!(out_ty(0).shape)]),
        Op::Tile => {
            let (i, o) = (in_ty(0).shape, out_ty(0).shape);
            let reps: Vec<usize> = o.iter().zip(&i).map(|(a, b)| a / (*b).max(1)).collect();
            one("tile", vec![x(0), json!(reps)])
        }
        Op::Concat { axis } => {
            let parts: Vec<Value> = step
                .inputs
                .iter()
                .filter(|&&o| !empty(plan, o))
                .map(|&o| operand(o))
                .collect();
            match parts.len() {
                1 => one("identity", parts),
                _ => one("concat", vec![json!(parts), json!(axis)]),
            }
        }
        Op::Split { axis } => {
            let sizes: Vec<usize> = (0..step.outputs.len()).map(|i| out_ty(i).shape[*axis]).collect();
            one("split", vec![x(0), json!(sizes), json!({ "axis": axis })])
        }
        Op::Pad { pads, mode, value } => {
            if pads.iter().any(|&(b, e)| b < 0 || e < 0) {
                return Err(unsupported(step, "a negative pad (a crop)"));
            }
            let mode = match mode {
                PadMode::Constant => "constant",
                PadMode::Reflect => "reflection",
                PadMode::Edge => "edge",
                PadMode::Wrap => return Err(unsupported(step, "WebNN has no wrap padding")),
            };
            let begin: Vec<i64> = pads.iter().map(|p| p.0).collect();
            let end: Vec<i64> = pads.iter().map(|p| p.1).collect();
            one(
                "pad",
                vec![x(0), json!(begin), json!(end), json!({ "mode": mode, "value": value })],
            )
        }
        Op::Gather { axis } => one("gather", vec![x(0), x(1), json!({ "axis": axis })]),
        Op::GatherElements { axis } => lower_gather_elements(step, &in_ty(0), &in_ty(1), *axis, made),
        Op::GatherND { batch_dims: 0 } => one("gatherND", vec![x(0), x(1)]),
        // Chromium's WebNN takes scatter indices as int32 only: int64 ones are cast (indices past
        // 2^31 would address more elements than a tensor here holds).
        Op::ScatterND {
            reduction: ScatterReduction::None,
        } => Ok(vec![
            call("cast", vec![x(1), json!("int32")], &[tmp(0)]),
            call("scatterND", vec![x(0), json!({ "$": tmp(0) }), x(2)], &outs),
        ]),
        Op::ScatterElements {
            axis,
            reduction: ScatterReduction::None,
        } => Ok(vec![
            call("cast", vec![x(1), json!("int32")], &[tmp(0)]),
            call(
                "scatterElements",
                vec![x(0), json!({ "$": tmp(0) }), x(2), json!({ "axis": axis })],
                &outs,
            ),
        ]),
        Op::CumSum {
            axis,
            exclusive,
            reverse,
        } => one(
            "cumulativeSum",
            vec![
                x(0),
                json!(axis),
                json!({ "exclusive": exclusive, "reversed": reverse }),
            ],
        ),
        Op::Trilu { upper, k } => one("triangular", vec![x(0), json!({ "upper": upper, "diagonal": k })]),
        Op::MatMul => {
            if in_ty(0).shape.len() < 2 || in_ty(1).shape.len() < 2 {
                return Err(unsupported(step, "WebNN's matmul takes operands of rank 2 or more"));
            }
            one("matmul", vec![x(0), x(1)])
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let mut opts = json!({ "alpha": alpha, "beta": beta, "aTranspose": trans_a, "bTranspose": trans_b });
            if step.inputs.len() > 2 {
                opts["c"] = x(2);
            }
            one("gemm", vec![x(0), x(1), opts])
        }
        Op::Softmax { axis, log } => {
            if *log {
                let s = tmp(0);
                Ok(vec![
                    call("softmax", vec![x(0), json!(axis)], std::slice::from_ref(&s)),
                    call("log", vec![json!({ "$": s })], &outs),
                ])
            } else {
                one("softmax", vec![x(0), json!(axis)])
            }
        }
        Op::LayerNorm { axis, epsilon } => {
            let rank = in_ty(0).shape.len();
            let mut opts = json!({ "axes": (*axis..rank).collect::<Vec<_>>(), "epsilon": epsilon, "scale": x(1) });
            if step.inputs.len() > 2 {
                opts["bias"] = x(2);
            }
            one("layerNormalization", vec![x(0), opts])
        }
        Op::InstanceNorm { epsilon } => {
            let opts = json!({ "scale": x(1), "bias": x(2), "epsilon": epsilon });
            let shape = in_ty(0).shape;
            match shape.len() {
                4 => one("instanceNormalization", vec![x(0), opts]),
                // (N, C, L) as (N, C, L, 1): WebNN normalizes 4-d tensors.
                3 => {
                    let (x4, y4) = (tmp(0), tmp(1));
                    Ok(vec![
                        call(
                            "reshape",
                            vec![x(0), json!([shape[0], shape[1], shape[2], 1])],
                            std::slice::from_ref(&x4),
                        ),
                        call(
                            "instanceNormalization",
                            vec![json!({ "$": x4 }), opts],
                            std::slice::from_ref(&y4),
                        ),
                        call("reshape", vec![json!({ "$": y4 }), json!(shape)], &outs),
                    ])
                }
                r => Err(unsupported(step, format!("instance normalization of rank {r}"))),
            }
        }
        Op::BatchNorm { epsilon } => one(
            "batchNormalization",
            vec![
                x(0),
                x(3),
                x(4),
                json!({ "scale": x(1), "bias": x(2), "epsilon": epsilon, "axis": 1 }),
            ],
        ),
        Op::Reduce { kind, axes, keepdims } => {
            let method = match kind {
                ReduceKind::Sum => "reduceSum",
                ReduceKind::Mean => "reduceMean",
                ReduceKind::Max => "reduceMax",
                ReduceKind::Min => "reduceMin",
                ReduceKind::Prod => "reduceProduct",
                ReduceKind::L1 => "reduceL1",
                ReduceKind::L2 => "reduceL2",
                ReduceKind::SumSquare => "reduceSumSquare",
                ReduceKind::LogSum => "reduceLogSum",
                ReduceKind::LogSumExp => "reduceLogSumExp",
            };
            one(method, vec![x(0), json!({ "axes": axes, "keepDimensions": keepdims })])
        }
        Op::ArgReduce {
            max,
            axis,
            keepdims,
            select_last,
        } => {
            if *select_last {
                return Err(unsupported(step, "WebNN's argMax/argMin take the first extreme only"));
            }
            one(
                if *max { "argMax" } else { "argMin" },
                vec![
                    x(0),
                    json!(axis),
                    json!({ "keepDimensions": keepdims, "outputDataType": "int64" }),
                ],
            )
        }
        Op::Conv {
            strides,
            pads,
            dilations,
            group,
        } => lower_conv(step, &in_ty(0), &in_ty(1), &out_ty(0), strides, pads, dilations, *group),
        Op::MaxPool {
            kernel,
            strides,
            pads,
            dilations,
            ..
        } if kernel.len() == 2 && step.outputs.len() == 1 => one(
            "maxPool2d",
            vec![
                x(0),
                json!({ "windowDimensions": kernel, "strides": strides, "dilations": dilations,
                        "padding": [pads[0].0, pads[0].1, pads[1].0, pads[1].1],
                        "outputSizes": &out_ty(0).shape[2..] }),
            ],
        ),
        Op::AveragePool {
            kernel,
            strides,
            pads,
            dilations,
            ..
        } if kernel.len() == 2
            && pads.iter().all(|&(b, e)| b == 0 && e == 0)
            && (0..2).all(|a| {
                // Windows of ceil mode that pass the input's end: WebNN averages them over the
                // whole window, ONNX over the part inside.
                let reach = dilations[a] * (kernel[a] - 1) + 1;
                let floor = (in_ty(0).shape[2 + a].saturating_sub(reach)) / strides[a] + 1;
                out_ty(0).shape[2 + a] == floor
            }) =>
        {
            one(
                "averagePool2d",
                vec![
                    x(0),
                    json!({ "windowDimensions": kernel, "strides": strides, "dilations": dilations,
                        "outputSizes": &out_ty(0).shape[2..] }),
                ],
            )
        }
        Op::Resize(r) => lower_resize(step, r, &in_ty(0), &out_ty(0), made),
        Op::Einsum { inputs, output } => lower_einsum(plan, step, inputs, output),
        Op::NonZero => lower_nonzero(step, &in_ty(0), &out_ty(0), made),
        other => Err(unsupported(step, format!("no WebNN lowering of {}", other.name()))),
    }
}

/// NonZero once its count c is known (`lower_count`): the k-th non-zero element is the first
/// position whose running count of non-zeros reaches k + 1, found for every k at once by a binary
/// search over the running counts (gathers, no scatter: Chromium's WebNN refuses scatterND here),
/// then split into coordinates. Positions and counts are float32, exact below 2^24 elements.
fn lower_nonzero(step: &Step, x: &ValueType, out: &ValueType, made: &mut Made) -> Result<Vec<Value>> {
    let (n, c, rank) = (x.numel(), out.shape[1], x.shape.len());
    if n >= 1 << 24 {
        return Err(unsupported(
            step,
            format!("NonZero over {n} elements (2^24 at most here)"),
        ));
    }
    data_type(x.dtype).ok_or_else(|| unsupported(step, format!("NonZero of {}", x.dtype)))?;
    let id = step.outputs[0];
    let t = |k: &str| format!("t{id}_{k}");
    let r = |n: &str| json!({ "$": n });
    let scalar = |dt: &str, v: f64, name: String| json!({ "call": "constant", "args": [{"dataType": dt, "shape": []}, v], "outs": [name] });
    let vector = |made: &mut Made, name: String, v: Vec<f32>| {
        made.push((
            name,
            json!({ "dataType": "float32", "shape": [v.len()] }),
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
    };
    vector(made, t("target"), (1..=c).map(|k| k as f32).collect());
    vector(made, t("lo0"), vec![0.0; c]);
    vector(made, t("hi0"), vec![n as f32; c]);
    let mut ops = vec![
        scalar("float32", 0.0, t("zero")),
        scalar("float32", 0.5, t("half")),
        scalar("float32", 1.0, t("one")),
        scalar("float32", (n - 1) as f64, t("last")),
        call("reshape", vec![operand(step.inputs[0]), json!([n])], &[t("flat")]),
        // Compared as float32 (WebNN's notEqual takes no uint8): a non-zero stays non-zero.
        call("cast", vec![r(&t("flat")), json!("float32")], &[t("flatf")]),
        call("notEqual", vec![r(&t("flatf")), r(&t("zero"))], &[t("m")]),
        call("cast", vec![r(&t("m")), json!("float32")], &[t("mf")]),
        call("cumulativeSum", vec![r(&t("mf")), json!(0)], &[t("running")]),
    ];
    // lower_bound(running, k + 1) for every k: while lo < hi, mid = (lo + hi) / 2.
    let (mut lo, mut hi) = (t("lo0"), t("hi0"));
    let steps = usize::BITS - n.leading_zeros() + 1;
    for i in 0..steps {
        let k = |s: &str| t(&format!("{s}{i}"));
        ops.extend([
            call("lesser", vec![r(&lo), r(&hi)], &[k("active")]),
            call("add", vec![r(&lo), r(&hi)], &[k("sum")]),
            call("mul", vec![r(&k("sum")), r(&t("half"))], &[k("halved")]),
            call("floor", vec![r(&k("halved"))], &[k("mid")]),
            call("min", vec![r(&k("mid")), r(&t("last"))], &[k("midc")]),
            call("cast", vec![r(&k("midc")), json!("int32")], &[k("at")]),
            call(
                "gather",
                vec![r(&t("running")), r(&k("at")), json!({ "axis": 0 })],
                &[k("seen")],
            ),
            call("lesser", vec![r(&k("seen")), r(&t("target"))], &[k("below")]),
            call("add", vec![r(&k("mid")), r(&t("one"))], &[k("up")]),
            call("where", vec![r(&k("below")), r(&k("up")), r(&lo)], &[k("lo_next")]),
            call("where", vec![r(&k("below")), r(&hi), r(&k("mid"))], &[k("hi_next")]),
            call("where", vec![r(&k("active")), r(&k("lo_next")), r(&lo)], &[k("lo")]),
            call("where", vec![r(&k("active")), r(&k("hi_next")), r(&hi)], &[k("hi")]),
        ]);
        (lo, hi) = (k("lo"), k("hi"));
    }
    // The flat positions as coordinates, one row an axis.
    let mut stride = 1usize;
    let mut rows = vec![String::new(); rank];
    for a in (0..rank).rev() {
        let k = |s: &str| t(&format!("{s}_axis{a}"));
        ops.extend([
            scalar("float32", stride as f64, k("stride")),
            scalar("float32", x.shape[a] as f64, k("dim")),
            call("div", vec![r(&lo), r(&k("stride"))], &[k("q0")]),
            call("floor", vec![r(&k("q0"))], &[k("q")]),
            call("div", vec![r(&k("q")), r(&k("dim"))], &[k("w0")]),
            call("floor", vec![r(&k("w0"))], &[k("w")]),
            call("mul", vec![r(&k("w")), r(&k("dim"))], &[k("wd")]),
            call("sub", vec![r(&k("q")), r(&k("wd"))], &[k("coord")]),
            call("reshape", vec![r(&k("coord")), json!([1, c])], &[k("row")]),
            call("cast", vec![r(&k("row")), json!("int64")], &[k("int")]),
        ]);
        rows[a] = k("int");
        stride *= x.shape[a];
    }
    let parts: Vec<Value> = rows.iter().map(|n| r(n)).collect();
    if rank == 1 {
        ops.push(call("identity", parts, &names(step)));
    } else {
        ops.push(call("concat", vec![json!(parts), json!(0)], &names(step)));
    }
    Ok(ops)
}

/// Einsum of one or two operands as transposes, sums and one batched matmul: indices of both
/// operands and the output are the batch, of both operands only are summed over (the product's
/// K), of one operand and the output are its free rows or columns, of one operand only are summed
/// out first. A repeated index within one operand (a diagonal) has no lowering.
fn lower_einsum(plan: &Plan, step: &Step, subs: &[Vec<u8>], output: &[u8]) -> Result<Vec<Value>> {
    let id = step.outputs[0];
    let shapes: Vec<Vec<usize>> = step.inputs.iter().map(|&o| plan.ty(o).shape).collect();
    for s in subs {
        if (1..s.len()).any(|i| s[..i].contains(&s[i])) {
            return Err(unsupported(step, "an Einsum index repeated within one operand"));
        }
    }
    let size = |c: u8| -> usize {
        subs.iter()
            .zip(&shapes)
            .find_map(|(s, sh)| s.iter().position(|&x| x == c).map(|i| sh[i]))
            .unwrap_or(1)
    };
    let mut ops = Vec::new();
    // Each operand with its lone indices (in no other operand nor the output) summed out.
    let mut operands: Vec<(Value, Vec<u8>)> = Vec::new();
    for (k, s) in subs.iter().enumerate() {
        let lone: Vec<usize> = (0..s.len())
            .filter(|&i| !output.contains(&s[i]) && !subs.iter().enumerate().any(|(j, t)| j != k && t.contains(&s[i])))
            .collect();
        if lone.is_empty() {
            operands.push((operand(step.inputs[k]), s.clone()));
        } else {
            let name = format!("t{id}_e{k}");
            ops.push(call(
                "reduceSum",
                vec![
                    operand(step.inputs[k]),
                    json!({ "axes": lone, "keepDimensions": false }),
                ],
                std::slice::from_ref(&name),
            ));
            let kept = s
                .iter()
                .enumerate()
                .filter(|(i, _)| !lone.contains(i))
                .map(|(_, &c)| c)
                .collect();
            operands.push((json!({ "$": name }), kept));
        }
    }
    let transpose = |ops: &mut Vec<Value>, v: Value, from: &[u8], to: &[u8], name: String| -> Value {
        let perm: Vec<usize> = to
            .iter()
            .map(|c| from.iter().position(|x| x == c).unwrap_or(0))
            .collect();
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return v;
        }
        ops.push(call(
            "transpose",
            vec![v, json!({ "permutation": perm })],
            std::slice::from_ref(&name),
        ));
        json!({ "$": name })
    };
    let out_shape: Vec<usize> = output.iter().map(|&c| size(c)).collect();
    match operands.as_slice() {
        [(a, sa)] => {
            let t = transpose(&mut ops, a.clone(), sa, output, format!("t{id}_t"));
            ops.push(call("identity", vec![t], &names(step)));
        }
        [(a, sa), (b, sb)] => {
            let batch: Vec<u8> = output
                .iter()
                .copied()
                .filter(|c| sa.contains(c) && sb.contains(c))
                .collect();
            let sum: Vec<u8> = sa
                .iter()
                .copied()
                .filter(|c| sb.contains(c) && !output.contains(c))
                .collect();
            let left: Vec<u8> = output
                .iter()
                .copied()
                .filter(|c| sa.contains(c) && !sb.contains(c))
                .collect();
            let right: Vec<u8> = output
                .iter()
                .copied()
                .filter(|c| sb.contains(c) && !sa.contains(c))
                .collect();
            let prod = |cs: &[u8]| cs.iter().map(|&c| size(c)).product::<usize>();
            let (nb, m, k, n) = (prod(&batch), prod(&left), prod(&sum), prod(&right));
            let a_order: Vec<u8> = [&batch[..], &left[..], &sum[..]].concat();
            let b_order: Vec<u8> = [&batch[..], &sum[..], &right[..]].concat();
            let at = transpose(&mut ops, a.clone(), sa, &a_order, format!("t{id}_at"));
            let bt = transpose(&mut ops, b.clone(), sb, &b_order, format!("t{id}_bt"));
            let (a3, b3, p) = (format!("t{id}_a3"), format!("t{id}_b3"), format!("t{id}_p"));
            ops.push(call("reshape", vec![at, json!([nb, m, k])], std::slice::from_ref(&a3)));
            ops.push(call("reshape", vec![bt, json!([nb, k, n])], std::slice::from_ref(&b3)));
            ops.push(call(
                "matmul",
                vec![json!({ "$": a3 }), json!({ "$": b3 })],
                std::slice::from_ref(&p),
            ));
            let order: Vec<u8> = [&batch[..], &left[..], &right[..]].concat();
            let full: Vec<usize> = order.iter().map(|&c| size(c)).collect();
            let pf = format!("t{id}_pf");
            ops.push(call(
                "reshape",
                vec![json!({ "$": p }), json!(full)],
                std::slice::from_ref(&pf),
            ));
            let t = transpose(&mut ops, json!({ "$": pf }), &order, output, format!("t{id}_t"));
            ops.push(call("reshape", vec![t, json!(out_shape)], &names(step)));
        }
        _ => return Err(unsupported(step, "an Einsum of more than two operands")),
    }
    Ok(ops)
}

/// GatherElements as a gather from the flattened data (Chromium's WebNN takes gatherElements only
/// with constant indices): each element's flat index is its index along `axis` times that axis's
/// stride plus the offset of its other coordinates, a constant.
fn lower_gather_elements(
    step: &Step,
    data: &ValueType,
    indices: &ValueType,
    axis: usize,
    made: &mut Made,
) -> Result<Vec<Value>> {
    let dt = data_type(indices.dtype).filter(|d| *d == "int64" || *d == "int32");
    let Some(dt) = dt else {
        return Err(unsupported(
            step,
            format!("GatherElements with {} indices", indices.dtype),
        ));
    };
    let rank = data.shape.len();
    let mut strides = vec![1usize; rank];
    for a in (0..rank.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * data.shape[a + 1];
    }
    let mut base = Vec::with_capacity(indices.numel());
    for p in 0..indices.numel() {
        let (mut rest, mut off) = (p, 0usize);
        for a in (0..rank).rev() {
            let c = rest % indices.shape[a];
            rest /= indices.shape[a];
            if a != axis {
                off += c * strides[a];
            }
        }
        base.push(off as i64);
    }
    let bytes = |v: &[i64]| -> Vec<u8> {
        if dt == "int64" {
            v.iter().flat_map(|x| x.to_le_bytes()).collect()
        } else {
            v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect()
        }
    };
    let id = step.outputs[0];
    let (base_name, stride_name) = (format!("t{id}_base"), format!("t{id}_stride"));
    made.push((
        base_name.clone(),
        json!({ "dataType": dt, "shape": indices.shape }),
        bytes(&base),
    ));
    made.push((
        stride_name.clone(),
        json!({ "dataType": dt, "shape": [] }),
        bytes(&[strides[axis] as i64]),
    ));
    let (flat, scaled, at) = (format!("t{id}_flat"), format!("t{id}_scaled"), format!("t{id}_at"));
    Ok(vec![
        call(
            "reshape",
            vec![operand(step.inputs[0]), json!([data.numel()])],
            std::slice::from_ref(&flat),
        ),
        call(
            "mul",
            vec![operand(step.inputs[1]), json!({ "$": stride_name })],
            std::slice::from_ref(&scaled),
        ),
        call(
            "add",
            vec![json!({ "$": scaled }), json!({ "$": base_name })],
            std::slice::from_ref(&at),
        ),
        call(
            "gather",
            vec![json!({ "$": flat }), json!({ "$": at }), json!({ "axis": 0 })],
            &names(step),
        ),
    ])
}

/// Resize as gathers along each resized axis: per output coordinate, the input index of each tap
/// (and where a tap's weight is not 1, a product by the weights and a sum), with the taps the
/// ONNX reference computes (`hwcov_onnx::resize`). Nearest modes are one exact gather an axis.
fn lower_resize(step: &Step, r: &Resize, in_ty: &ValueType, out_ty: &ValueType, made: &mut Made) -> Result<Vec<Value>> {
    if in_ty.dtype != DType::F32 {
        return Err(unsupported(step, format!("Resize of {}", in_ty.dtype)));
    }
    let rank = in_ty.shape.len();
    let id = step.outputs[0];
    let mut ops = Vec::new();
    let mut current = operand(step.inputs[0]);
    let mut shape = in_ty.shape.clone();
    let resized: Vec<usize> = (0..rank)
        .filter(|&a| in_ty.shape[a] != out_ty.shape[a] || r.scales[a] != 1.0)
        .collect();
    for (n, &a) in resized.iter().enumerate() {
        let taps = axis_taps(r, a, in_ty.shape[a], out_ty.shape[a]);
        let Some(taps) = taps.into_iter().collect::<Option<Vec<_>>>() else {
            return Err(unsupported(
                step,
                "tf_crop_and_resize outside the input (extrapolation)",
            ));
        };
        // Taps of weight 0 add nothing; a coordinate with one tap of weight 1 is a copy.
        let taps: Vec<Vec<(usize, f64)>> = taps
            .into_iter()
            .map(|t| t.into_iter().filter(|&(_, w)| w != 0.0).collect())
            .collect();
        let width = taps.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let copies = taps.iter().all(|t| t.len() == 1 && t[0].1 == 1.0);
        let last = n + 1 == resized.len();
        shape[a] = out_ty.shape[a];
        let result = if last { format!("v{id}") } else { format!("t{id}_r{a}") };
        let mut terms = Vec::new();
        for k in 0..width {
            let idx: Vec<i32> = taps.iter().map(|t| t.get(k).map_or(0, |p| p.0 as i32)).collect();
            let name = format!("t{id}_i{a}_{k}");
            made.push((
                name.clone(),
                json!({ "dataType": "int32", "shape": [idx.len()] }),
                idx.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ));
            let gathered = format!("t{id}_g{a}_{k}");
            ops.push(call(
                "gather",
                vec![current.clone(), json!({ "$": name }), json!({ "axis": a })],
                std::slice::from_ref(&gathered),
            ));
            if copies {
                terms.push(gathered);
                continue;
            }
            let w: Vec<f32> = taps.iter().map(|t| t.get(k).map_or(0.0, |p| p.1 as f32)).collect();
            let mut wshape = vec![1usize; rank];
            wshape[a] = w.len();
            let wname = format!("t{id}_w{a}_{k}");
            made.push((
                wname.clone(),
                json!({ "dataType": "float32", "shape": wshape }),
                w.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ));
            let product = format!("t{id}_p{a}_{k}");
            ops.push(call(
                "mul",
                vec![json!({ "$": gathered }), json!({ "$": wname })],
                std::slice::from_ref(&product),
            ));
            terms.push(product);
        }
        // The terms summed in tap order, as the reference does.
        let mut sum = terms[0].clone();
        for (k, t) in terms.iter().enumerate().skip(1) {
            let next = format!("t{id}_s{a}_{k}");
            ops.push(call(
                "add",
                vec![json!({ "$": sum }), json!({ "$": t })],
                std::slice::from_ref(&next),
            ));
            sum = next;
        }
        ops.push(call(
            "identity",
            vec![json!({ "$": sum })],
            std::slice::from_ref(&result),
        ));
        current = json!({ "$": result });
    }
    if resized.is_empty() {
        ops.push(call("identity", vec![current], &[format!("v{id}")]));
    }
    Ok(ops)
}

fn lower_unary(step: &Step, u: &Unary, x: Value, outs: &[String], ty: &ValueType) -> Result<Vec<Value>> {
    let plain = |m: &str| Ok(vec![call(m, vec![x.clone()], outs)]);
    let with = |m: &str, opts: Value| Ok(vec![call(m, vec![x.clone(), opts], outs)]);
    match u {
        Unary::Abs => plain("abs"),
        Unary::Neg => plain("neg"),
        Unary::Sqrt => plain("sqrt"),
        Unary::Reciprocal => plain("reciprocal"),
        Unary::Exp => plain("exp"),
        Unary::Log => plain("log"),
        Unary::Sin => plain("sin"),
        Unary::Cos => plain("cos"),
        Unary::Tan => plain("tan"),
        Unary::Tanh => plain("tanh"),
        Unary::Erf => plain("erf"),
        Unary::Sigmoid => plain("sigmoid"),
        Unary::Relu => plain("relu"),
        Unary::Floor => plain("floor"),
        Unary::Ceil => plain("ceil"),
        Unary::Round => plain("roundEven"),
        Unary::Sign => plain("sign"),
        Unary::Softplus => plain("softplus"),
        Unary::Softsign => plain("softsign"),
        Unary::Not => plain("logicalNot"),
        Unary::IsNaN => plain("isNaN"),
        Unary::Gelu { tanh: false } => plain("gelu"),
        Unary::HardSwish => plain("hardSwish"),
        Unary::LeakyRelu { alpha } => with("leakyRelu", json!({ "alpha": alpha })),
        Unary::Elu { alpha } => with("elu", json!({ "alpha": alpha })),
        Unary::HardSigmoid { alpha, beta } => with("hardSigmoid", json!({ "alpha": alpha, "beta": beta })),
        Unary::Clip { min, max } => {
            let mut opts = json!({});
            if let Some(m) = min {
                opts["minValue"] = json!(m);
            }
            if let Some(m) = max {
                opts["maxValue"] = json!(m);
            }
            with("clamp", opts)
        }
        other => Err(unsupported(
            step,
            format!("no WebNN lowering of {other:?} on {} tensors", ty.dtype),
        )),
    }
}

/// Conv as conv2d: a 1-d convolution as a 2-d one of height 1 (reshaped in and out).
#[allow(clippy::too_many_arguments)]
fn lower_conv(
    step: &Step,
    x_ty: &ValueType,
    w_ty: &ValueType,
    out_ty: &ValueType,
    strides: &[usize],
    pads: &[(usize, usize)],
    dilations: &[usize],
    group: usize,
) -> Result<Vec<Value>> {
    let outs = names(step);
    let (x, w) = (operand(step.inputs[0]), operand(step.inputs[1]));
    let bias = step.inputs.get(2).map(|&o| operand(o));
    let options = |strides: Vec<usize>, dilations: Vec<usize>, padding: Vec<usize>| {
        let mut o = json!({ "strides": strides, "dilations": dilations, "padding": padding, "groups": group });
        if let Some(b) = &bias {
            o["bias"] = b.clone();
        }
        o
    };
    match x_ty.shape.len() {
        4 => Ok(vec![call(
            "conv2d",
            vec![
                x,
                w,
                options(
                    strides.to_vec(),
                    dilations.to_vec(),
                    vec![pads[0].0, pads[0].1, pads[1].0, pads[1].1],
                ),
            ],
            &outs,
        )]),
        3 => {
            let id = step.outputs[0];
            let (x4, w4, y4) = (format!("t{id}_x"), format!("t{id}_w"), format!("t{id}_y"));
            let (n, c, l) = (x_ty.shape[0], x_ty.shape[1], x_ty.shape[2]);
            let (o, i, k) = (w_ty.shape[0], w_ty.shape[1], w_ty.shape[2]);
            Ok(vec![
                call("reshape", vec![x, json!([n, c, 1, l])], std::slice::from_ref(&x4)),
                call("reshape", vec![w, json!([o, i, 1, k])], std::slice::from_ref(&w4)),
                call(
                    "conv2d",
                    vec![
                        json!({ "$": x4 }),
                        json!({ "$": w4 }),
                        options(
                            vec![1, strides[0]],
                            vec![1, dilations[0]],
                            vec![0, 0, pads[0].0, pads[0].1],
                        ),
                    ],
                    std::slice::from_ref(&y4),
                ),
                call("reshape", vec![json!({ "$": y4 }), json!(out_ty.shape)], &outs),
            ])
        }
        r => Err(unsupported(
            step,
            format!("a convolution of rank {r} (WebNN has conv2d)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only what the outputs need survives: a step feeding nothing, and the input it alone read,
    /// are dropped (WebNN would drop that input and then refuse the dispatch feeding it).
    #[test]
    fn steps_and_inputs_no_output_needs_are_dropped() {
        let mut ops = vec![
            call("relu", vec![json!({ "$": "v0" })], &["v2".to_string()]),
            call("exp", vec![json!({ "$": "v1" })], &["v3".to_string()]),
            call(
                "add",
                vec![json!({ "$": "v2" }), json!({ "$": "c0" })],
                &["v4".to_string()],
            ),
        ];
        let outputs = vec![json!({ "id": "v4" })];
        let live = live_operands(&mut ops, &outputs);
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[1]["call"], "add");
        for kept in ["v0", "v2", "c0", "v4"] {
            assert!(live.contains(kept), "{kept}");
        }
        assert!(!live.contains("v1") && !live.contains("v3"));
    }
}
