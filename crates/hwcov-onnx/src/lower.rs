//! ONNX nodes into the graph layer's ops, for concrete input types: the opset's rules for each
//! op's attributes and inputs (onnx/docs/Changelog.md), its output types, and the decompositions
//! that keep the op set small (MatMul's 1-D promotion, variadic Sum/Mean/Max/Min, Softmax before
//! opset 13, ConstantOfShape as an Expand of a scalar, If with a known condition).

use std::sync::Arc;

use hwcov_core::{DType, Error, HostTensor, Result, TensorData};

use crate::ir::{
    Binary, CoordinateTransform, NearestMode, Op, PadMode, ReduceKind, Resize, ResizeMode, ScatterReduction, Unary,
    ValueType,
};
use crate::model::{Attribute, Node, dtype_of, elem_type_name};
use crate::plan::{Specializer, Val};

type Cx<'a, 'p> = &'a mut Specializer<'p>;

/// Lowers one node: binds its outputs to constants or to the outputs of new device steps.
pub(crate) fn lower(cx: Cx, node: &Arc<Node>) -> Result<()> {
    if !node.domain.is_empty() {
        return Err(unsupported(
            node,
            format!("ops of the domain `{}` are not ONNX ops", node.domain),
        ));
    }
    let op = node.op_type.as_str();
    if let Some(u) = unary_op(node, cx.opset()) {
        let x = cx.required(node, 0)?;
        let t = cx.ty(&x);
        let dtype = match u {
            Unary::Not | Unary::IsNaN | Unary::IsInf { .. } => DType::Bool,
            _ => t.dtype,
        };
        let y = cx.emit1(node, Op::Unary(u), &[x], ValueType::new(dtype, t.shape))?;
        cx.bind(node, 0, y);
        return Ok(());
    }
    if let Some(b) = binary_op(node) {
        let a = cx.required(node, 0)?;
        let c = cx.required(node, 1)?;
        let y = binary(cx, node, b, a, c)?;
        cx.bind(node, 0, y);
        return Ok(());
    }
    match op {
        "Constant" => constant(cx, node),
        "Shape" => {
            let t = cx.ty(&cx.required(node, 0)?);
            let rank = t.rank() as i64;
            let clamp = |v: i64| if v < 0 { (v + rank).clamp(0, rank) } else { v.clamp(0, rank) } as usize;
            let start = clamp(node.int("start").unwrap_or(0));
            let end = clamp(node.int("end").unwrap_or(rank));
            let dims: Vec<i64> = t.shape[start..end.max(start)].iter().map(|&d| d as i64).collect();
            let n = dims.len();
            cx.bind(node, 0, konst(HostTensor::i64(vec![n], dims)?));
            Ok(())
        }
        "Size" => {
            let t = cx.ty(&cx.required(node, 0)?);
            cx.bind(node, 0, konst(HostTensor::i64(vec![], vec![t.numel() as i64])?));
            Ok(())
        }
        "Identity" => {
            let x = cx.required(node, 0)?;
            cx.bind(node, 0, x);
            Ok(())
        }
        "Dropout" => dropout(cx, node),
        "Cast" | "CastLike" => cast(cx, node),
        "Clip" => clip(cx, node),
        "Sum" | "Mean" | "Max" | "Min" => variadic(cx, node),
        "Where" => {
            let (c, x, y) = (cx.required(node, 0)?, cx.required(node, 1)?, cx.required(node, 2)?);
            let (tc, tx, ty) = (cx.ty(&c), cx.ty(&x), cx.ty(&y));
            let shape = broadcast(&[&tc.shape, &tx.shape, &ty.shape]).ok_or_else(|| {
                cx.node_error(
                    node,
                    format!("shapes {:?}, {:?}, {:?} do not broadcast", tc.shape, tx.shape, ty.shape),
                )
            })?;
            if tx.dtype != ty.dtype {
                return Err(cx.node_error(node, format!("X is {} and Y is {}", tx.dtype, ty.dtype)));
            }
            let out = cx.emit1(node, Op::Where, &[c, x, y], ValueType::new(tx.dtype, shape))?;
            cx.bind(node, 0, out);
            Ok(())
        }
        "Reshape" => reshape(cx, node),
        "Flatten" => {
            let x = cx.required(node, 0)?;
            let t = cx.ty(&x);
            // Flatten's axis runs over 0..=rank, a negative one counting from the rank.
            let raw = node.int("axis").unwrap_or(1);
            let r = t.rank() as i64;
            if raw < -r || raw > r {
                return Err(cx.node_error(node, format!("axis {raw} is out of range for rank {r}")));
            }
            let axis = if raw < 0 { raw + r } else { raw } as usize;
            let shape = vec![t.shape[..axis].iter().product(), t.shape[axis..].iter().product()];
            let y = view(cx, node, x, shape)?;
            cx.bind(node, 0, y);
            Ok(())
        }
        "Squeeze" => squeeze(cx, node),
        "Unsqueeze" => unsqueeze(cx, node),
        "Transpose" => {
            let x = cx.required(node, 0)?;
            let t = cx.ty(&x);
            let perm: Vec<usize> = match node.ints("perm") {
                Some(p) => p
                    .iter()
                    .map(|&a| norm_axis(cx, node, a, t.rank()))
                    .collect::<Result<_>>()?,
                None => (0..t.rank()).rev().collect(),
            };
            let mut seen = perm.clone();
            seen.sort_unstable();
            if seen != (0..t.rank()).collect::<Vec<_>>() {
                return Err(cx.node_error(node, format!("perm {perm:?} is not a permutation of {} axes", t.rank())));
            }
            let y = transpose(cx, node, x, perm)?;
            cx.bind(node, 0, y);
            Ok(())
        }
        "Expand" => {
            let x = cx.required(node, 0)?;
            let t = cx.ty(&x);
            let shape = ints(&*need_const(cx, node, 1, "shape")?);
            let target: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
            let out = broadcast(&[&t.shape, &target])
                .ok_or_else(|| cx.node_error(node, format!("cannot expand {:?} to {shape:?}", t.shape)))?;
            let y = expand(cx, node, x, out)?;
            cx.bind(node, 0, y);
            Ok(())
        }
        "Tile" => {
            let x = cx.required(node, 0)?;
            let t = cx.ty(&x);
            let reps = ints(&*need_const(cx, node, 1, "repeats")?);
            if reps.len() != t.rank() || reps.iter().any(|&r| r < 0) {
                return Err(cx.node_error(node, format!("repeats {reps:?} for rank {}", t.rank())));
            }
            let shape = t.shape.iter().zip(&reps).map(|(&d, &r)| d * r as usize).collect();
            let y = cx.emit1(node, Op::Tile, &[x], ValueType::new(t.dtype, shape))?;
            cx.bind(node, 0, y);
            Ok(())
        }
        "Concat" => concat(cx, node),
        "Split" => split(cx, node),
        "Slice" => slice(cx, node),
        "Pad" => pad(cx, node),
        "Gather" => gather(cx, node),
        "GatherElements" => {
            let (data, idx) = (cx.required(node, 0)?, cx.required(node, 1)?);
            let (td, ti) = (cx.ty(&data), cx.ty(&idx));
            check_indices(cx, node, &ti)?;
            if td.rank() != ti.rank() {
                return Err(cx.node_error(
                    node,
                    format!("data has rank {} and indices rank {}", td.rank(), ti.rank()),
                ));
            }
            let axis = norm_axis(cx, node, node.int("axis").unwrap_or(0), td.rank())?;
            let y = cx.emit1(
                node,
                Op::GatherElements { axis },
                &[data, idx],
                ValueType::new(td.dtype, ti.shape),
            )?;
            cx.bind(node, 0, y);
            Ok(())
        }
        "GatherND" => gather_nd(cx, node),
        "ScatterND" => {
            let (data, idx, upd) = (cx.required(node, 0)?, cx.required(node, 1)?, cx.required(node, 2)?);
            let (td, ti, tu) = (cx.ty(&data), cx.ty(&idx), cx.ty(&upd));
            check_indices(cx, node, &ti)?;
            let k = *ti.shape.last().unwrap_or(&0);
            let mut want = ti.shape[..ti.rank().saturating_sub(1)].to_vec();
            want.extend_from_slice(td.shape.get(k..).unwrap_or(&[]));
            if ti.rank() == 0 || k > td.rank() || tu.shape != want {
                return Err(cx.node_error(
                    node,
                    format!(
                        "data {:?}, indices {:?}: updates must be {want:?}, not {:?}",
                        td.shape, ti.shape, tu.shape
                    ),
                ));
            }
            let reduction = scatter_reduction(cx, node)?;
            let y = cx.emit1(node, Op::ScatterND { reduction }, &[data, idx, upd], td)?;
            cx.bind(node, 0, y);
            Ok(())
        }
        "ScatterElements" | "Scatter" => {
            let (data, idx, upd) = (cx.required(node, 0)?, cx.required(node, 1)?, cx.required(node, 2)?);
            let (td, ti, tu) = (cx.ty(&data), cx.ty(&idx), cx.ty(&upd));
            check_indices(cx, node, &ti)?;
            if ti.shape != tu.shape || ti.rank() != td.rank() {
                return Err(cx.node_error(
                    node,
                    format!("data {:?}, indices {:?}, updates {:?}", td.shape, ti.shape, tu.shape),
                ));
            }
            let axis = norm_axis(cx, node, node.int("axis").unwrap_or(0), td.rank())?;
            let reduction = scatter_reduction(cx, node)?;
            let y = cx.emit1(node, Op::ScatterElements { axis, reduction }, &[data, idx, upd], td)?;
            cx.bind(node, 0, y);
            Ok(())
        }
        "NonZero" => {
            let x = cx.required(node, 0)?;
            let t = cx.ty(&x);
            let y = match &x {
                Val::Const(c) => {
                    let (count, idx) = nonzero(c);
                    konst(HostTensor::i64(vec![t.rank(), count], idx)?)
                }
                Val::Dyn(_) => cx.emit1(node, Op::NonZero, &[x], ValueType::new(DType::I64, vec![t.rank(), 0]))?,
            };
            cx.bind(node, 0, y);
            Ok(())
        }
        "ConstantOfShape" => {
            let shape = ints(&*need_const(cx, node, 0, "shape")?);
            if shape.iter().any(|&d| d < 0) {
                return Err(cx.node_error(node, format!("negative size in {shape:?}")));
            }
            let value = match node.attr("value") {
                Some(Attribute::Tensor(t)) => cx.model().tensor(t)?,
                _ => HostTensor::f32(vec![1], vec![0.0])?,
            };
            if value.len() != 1 {
                return Err(cx.node_error(node, "value must hold one element"));
            }
            let scalar = konst(HostTensor::new(vec![], value.data().clone())?);
            let out = ValueType::new(value.dtype(), shape.iter().map(|&d| d as usize).collect());
            let y = cx.emit1(node, Op::Expand, &[scalar], out)?;
            cx.bind(node, 0, y);
            Ok(())
        }
        "Range" => range(cx, node),
        "CumSum" => {
            let x = cx.required(node, 0)?;
            let t = cx.ty(&x);
            let axis = scalar_int(cx, node, 1, "axis")?;
            let axis = norm_axis(cx, node, axis, t.rank())?;
            let op = Op::CumSum {
                axis,
                exclusive: node.int("exclusive").unwrap_or(0) != 0,
                reverse: node.int("reverse").unwrap_or(0) != 0,
            };
            let y = cx.emit1(node, op, &[x], t)?;
            cx.bind(node, 0, y);
            Ok(())
        }
        "Trilu" => {
            let x = cx.required(node, 0)?;
            let t = cx.ty(&x);
            if t.rank() < 2 {
                return Err(cx.node_error(node, "needs rank 2 or more"));
            }
            let k = match cx.constant(node, 1, "k")? {
                Some(k) => ints(&k).first().copied().unwrap_or(0),
                None => 0,
            };
            let op = Op::Trilu {
                upper: node.int("upper").unwrap_or(1) != 0,
                k,
            };
            let y = cx.emit1(node, op, &[x], t)?;
            cx.bind(node, 0, y);
            Ok(())
        }
        "MatMul" => {
            let (a, b) = (cx.required(node, 0)?, cx.required(node, 1)?);
            let y = matmul(cx, node, a, b)?;
            cx.bind(node, 0, y);
            Ok(())
        }
        "Gemm" => gemm(cx, node),
        "Softmax" | "LogSoftmax" | "Hardmax" => softmax(cx, node),
        "LayerNormalization" => layer_norm(cx, node),
        "InstanceNormalization" => {
            let (x, s, b) = (cx.required(node, 0)?, cx.required(node, 1)?, cx.required(node, 2)?);
            let t = cx.ty(&x);
            if t.rank() < 3 || cx.ty(&s).numel() != t.shape[1] || cx.ty(&b).numel() != t.shape[1] {
                return Err(cx.node_error(
                    node,
                    format!(
                        "input {:?} needs channels on axis 1 and a scale and bias per channel",
                        t.shape
                    ),
                ));
            }
            let op = Op::InstanceNorm {
                epsilon: node.float("epsilon").unwrap_or(1e-5),
            };
            let y = cx.emit1(node, op, &[x, s, b], t)?;
            cx.bind(node, 0, y);
            Ok(())
        }
        "BatchNormalization" => batch_norm(cx, node),
        "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceL2"
        | "ReduceSumSquare" | "ReduceLogSum" | "ReduceLogSumExp" => reduce(cx, node),
        "ArgMax" | "ArgMin" => {
            let x = cx.required(node, 0)?;
            let t = cx.ty(&x);
            let axis = norm_axis(cx, node, node.int("axis").unwrap_or(0), t.rank())?;
            let keepdims = node.int("keepdims").unwrap_or(1) != 0;
            let mut shape = t.shape.clone();
            if keepdims {
                shape[axis] = 1;
            } else {
                shape.remove(axis);
            }
            if t.shape[axis] == 0 {
                return Err(cx.node_error(node, "reduces an axis of size 0"));
            }
            let op = Op::ArgReduce {
                max: op == "ArgMax",
                axis,
                keepdims,
                select_last: node.int("select_last_index").unwrap_or(0) != 0,
            };
            let y = cx.emit1(node, op, &[x], ValueType::new(DType::I64, shape))?;
            cx.bind(node, 0, y);
            Ok(())
        }
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let x = cx.required(node, 0)?;
            let t = cx.ty(&x);
            if t.rank() < 3 {
                return Err(cx.node_error(node, "needs (N, C, spatial...)"));
            }
            let axes: Vec<usize> = (2..t.rank()).collect();
            let mut shape = t.shape.clone();
            axes.iter().for_each(|&a| shape[a] = 1);
            let kind = if op == "GlobalMaxPool" {
                ReduceKind::Max
            } else {
                ReduceKind::Mean
            };
            let y = cx.emit1(
                node,
                Op::Reduce {
                    kind,
                    axes,
                    keepdims: true,
                },
                &[x],
                ValueType::new(t.dtype, shape),
            )?;
            cx.bind(node, 0, y);
            Ok(())
        }
        "Conv" => conv(cx, node),
        "MaxPool" | "AveragePool" => pool(cx, node),
        "Resize" => resize(cx, node),
        "Einsum" => einsum(cx, node),
        "OneHot" => one_hot(cx, node),
        "If" => {
            let cond = cx.constant(node, 0, "the condition")?;
            let cond = cond.ok_or_else(|| cx.node_error(node, "has no condition"))?;
            let taken = ints(&cond).first().copied().unwrap_or(0) != 0;
            let name = if taken { "then_branch" } else { "else_branch" };
            let Some(Attribute::Graph(g)) = node.attr(name) else {
                return Err(cx.node_error(node, format!("has no {name}")));
            };
            cx.inline_branch(node, g.clone());
            Ok(())
        }
        _ => Err(unsupported(node, "the graph layer does not know this op".to_string())),
    }
}

/// The error for an op no graph platform can run.
pub fn unsupported(node: &Node, reason: String) -> Error {
    Error::Unsupported {
        platform: "graph".to_string(),
        what: format!("op {} (node {})", node.op_type, node.label()),
        reason,
    }
}

fn konst(t: HostTensor) -> Val {
    Val::Const(Arc::new(t))
}

/// Integer elements of a constant (floats truncated).
pub(crate) fn ints(t: &HostTensor) -> Vec<i64> {
    t.to_i64_vec()
        .unwrap_or_else(|| t.to_f64_vec().into_iter().map(|x| x as i64).collect())
}

fn need_const(cx: &mut Specializer, node: &Node, i: usize, what: &str) -> Result<Arc<HostTensor>> {
    cx.constant(node, i, what)?
        .ok_or_else(|| cx.node_error(node, format!("{what} (input {i}) is missing")))
}

fn scalar_int(cx: &mut Specializer, node: &Node, i: usize, what: &str) -> Result<i64> {
    let t = need_const(cx, node, i, what)?;
    match ints(&t).as_slice() {
        [v] => Ok(*v),
        other => Err(cx.node_error(node, format!("{what} must be one integer, not {other:?}"))),
    }
}

fn scalar_f64(cx: &mut Specializer, node: &Node, i: usize, what: &str) -> Result<Option<f64>> {
    match cx.constant(node, i, what)? {
        None => Ok(None),
        Some(t) if t.len() == 1 => Ok(Some(t.to_f64_vec()[0])),
        Some(t) => Err(cx.node_error(node, format!("{what} must be a scalar, not shape {:?}", t.shape()))),
    }
}

/// An axis in `-rank..rank` made positive.
pub(crate) fn norm_axis(cx: &Specializer, node: &Node, axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r.max(1) && !(rank == 0 && axis == 0) {
        return Err(cx.node_error(node, format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
}

/// numpy broadcasting of several shapes.
pub fn broadcast(shapes: &[&[usize]]) -> Option<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[rank - s.len() + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return None;
            }
        }
    }
    Some(out)
}

fn check_indices(cx: &Specializer, node: &Node, t: &ValueType) -> Result<()> {
    if matches!(t.dtype, DType::I64 | DType::I32) {
        Ok(())
    } else {
        Err(cx.node_error(node, format!("indices must be int32 or int64, not {}", t.dtype)))
    }
}

fn unary_op(node: &Node, _opset: i64) -> Option<Unary> {
    let alpha = |d: f32| node.float("alpha").unwrap_or(d);
    Some(match node.op_type.as_str() {
        "Abs" => Unary::Abs,
        "Neg" => Unary::Neg,
        "Sqrt" => Unary::Sqrt,
        "Reciprocal" => Unary::Reciprocal,
        "Exp" => Unary::Exp,
        "Log" => Unary::Log,
        "Sin" => Unary::Sin,
        "Cos" => Unary::Cos,
        "Tan" => Unary::Tan,
        "Asin" => Unary::Asin,
        "Acos" => Unary::Acos,
        "Atan" => Unary::Atan,
        "Sinh" => Unary::Sinh,
        "Cosh" => Unary::Cosh,
        "Asinh" => Unary::Asinh,
        "Acosh" => Unary::Acosh,
        "Atanh" => Unary::Atanh,
        "Tanh" => Unary::Tanh,
        "Erf" => Unary::Erf,
        "Sigmoid" => Unary::Sigmoid,
        "Relu" => Unary::Relu,
        "Floor" => Unary::Floor,
        "Ceil" => Unary::Ceil,
        "Round" => Unary::Round,
        "Sign" => Unary::Sign,
        "Softplus" => Unary::Softplus,
        "Softsign" => Unary::Softsign,
        "Not" => Unary::Not,
        "IsNaN" => Unary::IsNaN,
        "IsInf" => Unary::IsInf {
            positive: node.int("detect_positive").unwrap_or(1) != 0,
            negative: node.int("detect_negative").unwrap_or(1) != 0,
        },
        "LeakyRelu" => Unary::LeakyRelu { alpha: alpha(0.01) },
        "Elu" => Unary::Elu { alpha: alpha(1.0) },
        "Celu" => Unary::Celu { alpha: alpha(1.0) },
        "Selu" => Unary::Selu {
            alpha: alpha(1.673_263_2),
            gamma: node.float("gamma").unwrap_or(1.050_701),
        },
        "HardSigmoid" => Unary::HardSigmoid {
            alpha: alpha(0.2),
            beta: node.float("beta").unwrap_or(0.5),
        },
        "HardSwish" => Unary::HardSwish,
        "ThresholdedRelu" => Unary::ThresholdedRelu { alpha: alpha(1.0) },
        "Mish" => Unary::Mish,
        "Gelu" => Unary::Gelu {
            tanh: node.string("approximate").as_deref() == Some("tanh"),
        },
        "Shrink" => Unary::Shrink {
            bias: node.float("bias").unwrap_or(0.0),
            lambd: node.float("lambd").unwrap_or(0.5),
        },
        _ => return None,
    })
}

fn binary_op(node: &Node) -> Option<Binary> {
    Some(match node.op_type.as_str() {
        "Add" => Binary::Add,
        "Sub" => Binary::Sub,
        "Mul" => Binary::Mul,
        "Div" => Binary::Div,
        "Pow" => Binary::Pow,
        "Mod" => Binary::Mod {
            fmod: node.int("fmod").unwrap_or(0) != 0,
        },
        "Equal" => Binary::Equal,
        "Less" => Binary::Less,
        "LessOrEqual" => Binary::LessOrEqual,
        "Greater" => Binary::Greater,
        "GreaterOrEqual" => Binary::GreaterOrEqual,
        "And" => Binary::And,
        "Or" => Binary::Or,
        "Xor" => Binary::Xor,
        "PRelu" => Binary::PRelu,
        "BitShift" => {
            if node.string("direction").as_deref() == Some("LEFT") {
                Binary::BitShiftLeft
            } else {
                Binary::BitShiftRight
            }
        }
        "BitwiseAnd" => Binary::BitwiseAnd,
        "BitwiseOr" => Binary::BitwiseOr,
        "BitwiseXor" => Binary::BitwiseXor,
        _ => return None,
    })
}

fn binary(cx: Cx, node: &Node, b: Binary, a: Val, c: Val) -> Result<Val> {
    let (ta, tc) = (cx.ty(&a), cx.ty(&c));
    let shape = if b == Binary::PRelu {
        // The slope broadcasts to X (unidirectionally).
        match broadcast(&[&ta.shape, &tc.shape]) {
            Some(s) if s == ta.shape => s,
            _ => None.ok_or_else(|| {
                cx.node_error(
                    node,
                    format!("slope {:?} does not broadcast to {:?}", tc.shape, ta.shape),
                )
            })?,
        }
    } else {
        broadcast(&[&ta.shape, &tc.shape]).ok_or_else(|| {
            cx.node_error(
                node,
                format!("shapes {:?} and {:?} do not broadcast", ta.shape, tc.shape),
            )
        })?
    };
    if ta.dtype != tc.dtype && b != Binary::Pow {
        return Err(cx.node_error(node, format!("operands are {} and {}", ta.dtype, tc.dtype)));
    }
    let dtype = if b.gives_bool() { DType::Bool } else { ta.dtype };
    cx.emit1(node, Op::Binary(b), &[a, c], ValueType::new(dtype, shape))
}

fn constant(cx: Cx, node: &Node) -> Result<()> {
    let t = if let Some(Attribute::Tensor(t)) = node.attr("value") {
        cx.model().tensor(t)?
    } else if let Some(f) = node.float("value_float").filter(|_| node.attr("value_float").is_some()) {
        HostTensor::f32(vec![], vec![f])?
    } else if let Some(v) = node.floats("value_floats") {
        HostTensor::f32(vec![v.len()], v.to_vec())?
    } else if let Some(i) = node.int("value_int") {
        HostTensor::i64(vec![], vec![i])?
    } else if let Some(v) = node.ints("value_ints") {
        HostTensor::i64(vec![v.len()], v.to_vec())?
    } else {
        return Err(unsupported(
            node,
            "only tensor, float and int constants are supported".into(),
        ));
    };
    cx.bind(node, 0, konst(t));
    Ok(())
}

fn dropout(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let training = match cx.constant(node, 2, "training_mode")? {
        Some(t) => ints(&t).first().copied().unwrap_or(0) != 0,
        None => false,
    };
    if training && scalar_f64(cx, node, 1, "ratio")?.unwrap_or(0.5) != 0.0 {
        return Err(unsupported(node, "training-mode dropout is random".into()));
    }
    let t = cx.ty(&x);
    cx.bind(node, 0, x);
    if cx.output_used(node, 1) {
        let one = konst(HostTensor::new(vec![], TensorData::Bool(vec![true]))?);
        let mask = cx.emit1(node, Op::Expand, &[one], ValueType::new(DType::Bool, t.shape))?;
        cx.bind(node, 1, mask);
    }
    Ok(())
}

fn cast(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    let to = if node.op_type == "CastLike" {
        cx.ty(&cx.required(node, 1)?).dtype
    } else {
        let code = node.int("to").ok_or_else(|| cx.node_error(node, "has no `to`"))? as i32;
        dtype_of(code).ok_or_else(|| unsupported(node, format!("casts to {}", elem_type_name(code))))?
    };
    let y = if to == t.dtype {
        x
    } else {
        cx.emit1(node, Op::Cast, &[x], ValueType::new(to, t.shape))?
    };
    cx.bind(node, 0, y);
    Ok(())
}

fn clip(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    let (min, max) = if cx.opset() < 11 {
        (node.float("min").map(f64::from), node.float("max").map(f64::from))
    } else {
        (scalar_f64(cx, node, 1, "min")?, scalar_f64(cx, node, 2, "max")?)
    };
    let y = cx.emit1(node, Op::Unary(Unary::Clip { min, max }), &[x], t)?;
    cx.bind(node, 0, y);
    Ok(())
}

fn variadic(cx: Cx, node: &Node) -> Result<()> {
    let b = match node.op_type.as_str() {
        "Max" => Binary::Max,
        "Min" => Binary::Min,
        _ => Binary::Add,
    };
    let n = node.inputs.len();
    let mut acc = cx.required(node, 0)?;
    for i in 1..n {
        let next = cx.required(node, i)?;
        acc = binary(cx, node, b, acc, next)?;
    }
    if node.op_type == "Mean" && n > 1 {
        let t = cx.ty(&acc);
        let count = scalar_of(t.dtype, n as f64)?;
        acc = binary(cx, node, Binary::Div, acc, konst(count))?;
    }
    cx.bind(node, 0, acc);
    Ok(())
}

/// A scalar of a dtype.
fn scalar_of(dtype: DType, v: f64) -> Result<HostTensor> {
    let data = match dtype {
        DType::F32 => TensorData::F32(vec![v as f32]),
        DType::F64 => TensorData::F64(vec![v]),
        DType::F16 => TensorData::F16(vec![half::f16::from_f64(v)]),
        DType::BF16 => TensorData::BF16(vec![half::bf16::from_f64(v)]),
        DType::I64 => TensorData::I64(vec![v as i64]),
        DType::I32 => TensorData::I32(vec![v as i32]),
        DType::U8 => TensorData::U8(vec![v as u8]),
        DType::Bool => TensorData::Bool(vec![v != 0.0]),
    };
    HostTensor::new(vec![], data)
}

/// The same elements under a new shape.
fn view(cx: Cx, node: &Node, x: Val, shape: Vec<usize>) -> Result<Val> {
    let t = cx.ty(&x);
    if t.shape == shape {
        return Ok(x);
    }
    if t.numel() != shape.iter().product::<usize>() {
        return Err(cx.node_error(node, format!("cannot view {:?} as {shape:?}", t.shape)));
    }
    cx.emit1(node, Op::Reshape, &[x], ValueType::new(t.dtype, shape))
}

fn transpose(cx: Cx, node: &Node, x: Val, perm: Vec<usize>) -> Result<Val> {
    let t = cx.ty(&x);
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(x);
    }
    let shape = perm.iter().map(|&p| t.shape[p]).collect();
    cx.emit1(node, Op::Transpose { perm }, &[x], ValueType::new(t.dtype, shape))
}

fn expand(cx: Cx, node: &Node, x: Val, shape: Vec<usize>) -> Result<Val> {
    let t = cx.ty(&x);
    if t.shape == shape {
        return Ok(x);
    }
    cx.emit1(node, Op::Expand, &[x], ValueType::new(t.dtype, shape))
}

fn reshape(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    let spec: Vec<i64> = if cx.opset() < 5 {
        node.ints("shape").map(<[i64]>::to_vec).unwrap_or_default()
    } else {
        ints(&*need_const(cx, node, 1, "shape")?)
    };
    let allow_zero = node.int("allowzero").unwrap_or(0) != 0;
    let mut shape = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                shape.push(1);
            }
            0 if !allow_zero => shape.push(
                *t.shape
                    .get(i)
                    .ok_or_else(|| cx.node_error(node, format!("shape {spec:?} copies axis {i} of {:?}", t.shape)))?,
            ),
            d if d >= 0 => shape.push(d as usize),
            _ => return Err(cx.node_error(node, format!("bad shape {spec:?}"))),
        }
    }
    if let Some(i) = infer {
        let known: usize = shape.iter().product();
        if known == 0 || !t.numel().is_multiple_of(known) {
            return Err(cx.node_error(node, format!("cannot reshape {:?} to {spec:?}", t.shape)));
        }
        shape[i] = t.numel() / known;
    }
    let y = view(cx, node, x, shape)?;
    cx.bind(node, 0, y);
    Ok(())
}

/// Axes from the attribute (before `input_from`) or from input 1, normalized to `rank`.
fn axes_of(cx: &mut Specializer, node: &Node, input_from: i64, rank: usize) -> Result<Option<Vec<usize>>> {
    let raw: Option<Vec<i64>> = if cx.opset() < input_from {
        node.ints("axes").map(<[i64]>::to_vec)
    } else {
        cx.constant(node, 1, "axes")?.map(|t| ints(&t))
    };
    raw.map(|a| {
        let mut v = a
            .iter()
            .map(|&x| norm_axis(cx, node, x, rank))
            .collect::<Result<Vec<_>>>()?;
        v.sort_unstable();
        if v.windows(2).any(|w| w[0] == w[1]) {
            return Err(cx.node_error(node, format!("repeated axes {a:?}")));
        }
        Ok(v)
    })
    .transpose()
}

fn squeeze(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    let axes = axes_of(cx, node, 13, t.rank())?;
    let shape: Vec<usize> = match &axes {
        Some(a) => {
            if let Some(&bad) = a.iter().find(|&&i| t.shape[i] != 1) {
                return Err(cx.node_error(node, format!("axis {bad} of {:?} is not 1", t.shape)));
            }
            t.shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !a.contains(i))
                .map(|(_, &d)| d)
                .collect()
        }
        None => t.shape.iter().copied().filter(|&d| d != 1).collect(),
    };
    let y = view(cx, node, x, shape)?;
    cx.bind(node, 0, y);
    Ok(())
}

fn unsqueeze(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    let n = if cx.opset() < 13 {
        node.ints("axes").map_or(0, <[i64]>::len)
    } else {
        cx.constant(node, 1, "axes")?.map_or(0, |a| a.len())
    };
    let axes = axes_of(cx, node, 13, t.rank() + n)?.unwrap_or_default();
    let mut shape = Vec::with_capacity(t.rank() + n);
    let mut src = t.shape.iter();
    for i in 0..t.rank() + n {
        if axes.contains(&i) {
            shape.push(1);
        } else {
            shape.push(*src.next().ok_or_else(|| cx.node_error(node, "bad axes"))?);
        }
    }
    let y = view(cx, node, x, shape)?;
    cx.bind(node, 0, y);
    Ok(())
}

fn concat(cx: Cx, node: &Node) -> Result<()> {
    let vals: Vec<Val> = (0..node.inputs.len())
        .map(|i| cx.required(node, i))
        .collect::<Result<_>>()?;
    let types: Vec<ValueType> = vals.iter().map(|v| cx.ty(v)).collect();
    let first = types.first().ok_or_else(|| cx.node_error(node, "has no inputs"))?;
    let axis = norm_axis(
        cx,
        node,
        node.int("axis").ok_or_else(|| cx.node_error(node, "has no axis"))?,
        first.rank(),
    )?;
    let mut shape = first.shape.clone();
    shape[axis] = 0;
    for t in &types {
        let same = t.rank() == first.rank()
            && t.dtype == first.dtype
            && t.shape
                .iter()
                .zip(&first.shape)
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !same {
            return Err(cx.node_error(node, format!("cannot join {} with {} on axis {axis}", t, first)));
        }
        shape[axis] += t.shape[axis];
    }
    let dtype = first.dtype;
    // Empty parts add nothing.
    let vals: Vec<Val> = vals
        .into_iter()
        .zip(&types)
        .filter(|(_, t)| t.shape[axis] > 0 || shape[axis] == 0)
        .map(|(v, _)| v)
        .collect();
    let y = if vals.len() == 1 {
        vals.into_iter().next().ok_or_else(|| cx.node_error(node, "no part"))?
    } else {
        cx.emit1(node, Op::Concat { axis }, &vals, ValueType::new(dtype, shape))?
    };
    cx.bind(node, 0, y);
    Ok(())
}

fn split(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    let axis = norm_axis(cx, node, node.int("axis").unwrap_or(0), t.rank())?;
    let n = node.outputs.len();
    let len = t.shape[axis];
    let given: Option<Vec<i64>> = if cx.opset() < 13 {
        node.ints("split").map(<[i64]>::to_vec)
    } else {
        cx.constant(node, 1, "split")?.map(|s| ints(&s))
    };
    let sizes: Vec<usize> = match given {
        Some(s) => {
            if s.len() != n || s.iter().any(|&d| d < 0) || s.iter().sum::<i64>() as usize != len {
                return Err(cx.node_error(node, format!("split {s:?} into {n} outputs of an axis of {len}")));
            }
            s.iter().map(|&d| d as usize).collect()
        }
        None => {
            let parts = node.int("num_outputs").map_or(n, |k| k as usize);
            if parts == 0 || parts != n {
                return Err(cx.node_error(node, format!("num_outputs {parts} for {n} outputs")));
            }
            let chunk = len.div_ceil(parts);
            if node.int("num_outputs").is_none() && !len.is_multiple_of(parts) {
                return Err(cx.node_error(
                    node,
                    format!("an axis of {len} does not split into {parts} equal parts"),
                ));
            }
            (0..parts).map(|i| chunk.min(len.saturating_sub(i * chunk))).collect()
        }
    };
    let outs: Vec<ValueType> = sizes
        .iter()
        .map(|&s| {
            let mut shape = t.shape.clone();
            shape[axis] = s;
            ValueType::new(t.dtype, shape)
        })
        .collect();
    let ys = cx.emit(node, Op::Split { axis }, &[x], outs)?;
    for (i, y) in ys.into_iter().enumerate() {
        cx.bind(node, i, y);
    }
    Ok(())
}

/// ONNX Slice for one axis: the first index, the step, and the count.
pub fn slice_axis(dim: usize, start: i64, end: i64, step: i64) -> (usize, usize) {
    let d = dim as i64;
    let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
    let (s, e) = if step > 0 {
        let s = if start < 0 { start + d } else { start };
        let e = if end < 0 { end + d } else { end };
        (clamp(s, 0, d), clamp(e, 0, d))
    } else {
        let s = if start < 0 { start + d } else { start };
        let e = if end < 0 { end + d } else { end };
        (clamp(s, 0, d - 1), clamp(e, -1, d - 1))
    };
    let count = if step > 0 {
        if e > s { (e - s + step - 1) / step } else { 0 }
    } else if s > e {
        (s - e + (-step) - 1) / (-step)
    } else {
        0
    };
    (s.max(0) as usize, count as usize)
}

fn slice(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    type Ints = Vec<i64>;
    let (starts, ends, axes, steps): (Ints, Ints, Option<Ints>, Option<Ints>) = if cx.opset() < 10 {
        (
            node.ints("starts").map(<[i64]>::to_vec).unwrap_or_default(),
            node.ints("ends").map(<[i64]>::to_vec).unwrap_or_default(),
            node.ints("axes").map(<[i64]>::to_vec),
            None,
        )
    } else {
        (
            ints(&*need_const(cx, node, 1, "starts")?),
            ints(&*need_const(cx, node, 2, "ends")?),
            cx.constant(node, 3, "axes")?.map(|a| ints(&a)),
            cx.constant(node, 4, "steps")?.map(|a| ints(&a)),
        )
    };
    let axes: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&v| norm_axis(cx, node, v, t.rank()))
            .collect::<Result<_>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(cx.node_error(node, "starts, ends, axes and steps differ in length"));
    }
    let mut first = vec![0usize; t.rank()];
    let mut step_of = vec![1i64; t.rank()];
    let mut shape = t.shape.clone();
    for i in 0..starts.len() {
        let a = axes[i];
        if steps[i] == 0 {
            return Err(cx.node_error(node, "a step of 0"));
        }
        let (s, n) = slice_axis(t.shape[a], starts[i], ends[i], steps[i]);
        first[a] = s;
        step_of[a] = steps[i];
        shape[a] = n;
    }
    let y = if shape == t.shape && step_of.iter().all(|&s| s == 1) {
        x
    } else {
        cx.emit1(
            node,
            Op::Slice {
                starts: first,
                steps: step_of,
            },
            &[x],
            ValueType::new(t.dtype, shape),
        )?
    };
    cx.bind(node, 0, y);
    Ok(())
}

fn pad(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    let mode = match node.string("mode").as_deref().unwrap_or("constant") {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        other => return Err(cx.node_error(node, format!("unknown mode `{other}`"))),
    };
    let (raw, value, axes): (Vec<i64>, f64, Option<Vec<i64>>) = if cx.opset() < 11 {
        let p = node
            .ints("pads")
            .or_else(|| node.ints("paddings"))
            .map(<[i64]>::to_vec)
            .unwrap_or_default();
        (p, node.float("value").unwrap_or(0.0) as f64, None)
    } else {
        (
            ints(&*need_const(cx, node, 1, "pads")?),
            scalar_f64(cx, node, 2, "constant_value")?.unwrap_or(0.0),
            cx.constant(node, 3, "axes")?.map(|a| ints(&a)),
        )
    };
    let axes: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&v| norm_axis(cx, node, v, t.rank()))
            .collect::<Result<_>>()?,
        None => (0..t.rank()).collect(),
    };
    if raw.len() != 2 * axes.len() {
        return Err(cx.node_error(node, format!("pads {raw:?} for {} axes", axes.len())));
    }
    let mut pads = vec![(0i64, 0i64); t.rank()];
    for (i, &a) in axes.iter().enumerate() {
        pads[a] = (raw[i], raw[i + axes.len()]);
    }
    let mut shape = Vec::with_capacity(t.rank());
    for (d, &(b, e)) in t.shape.iter().zip(&pads) {
        let n = *d as i64 + b + e;
        if n < 0 {
            return Err(cx.node_error(node, format!("pads {raw:?} crop more than {:?}", t.shape)));
        }
        if mode != PadMode::Constant && *d == 0 && (b > 0 || e > 0) {
            return Err(cx.node_error(node, "cannot pad an empty axis in this mode"));
        }
        shape.push(n as usize);
    }
    let y = cx.emit1(
        node,
        Op::Pad { pads, mode, value },
        &[x],
        ValueType::new(t.dtype, shape),
    )?;
    cx.bind(node, 0, y);
    Ok(())
}

fn gather(cx: Cx, node: &Node) -> Result<()> {
    let (data, idx) = (cx.required(node, 0)?, cx.required(node, 1)?);
    let (td, ti) = (cx.ty(&data), cx.ty(&idx));
    check_indices(cx, node, &ti)?;
    let axis = norm_axis(cx, node, node.int("axis").unwrap_or(0), td.rank())?;
    let mut shape = td.shape[..axis].to_vec();
    shape.extend_from_slice(&ti.shape);
    shape.extend_from_slice(&td.shape[axis + 1..]);
    if let Val::Const(i) = &idx {
        let n = td.shape[axis] as i64;
        if let Some(bad) = ints(i).into_iter().find(|&v| v < -n || v >= n) {
            return Err(cx.node_error(node, format!("index {bad} is out of range for an axis of {n}")));
        }
    }
    let y = cx.emit1(node, Op::Gather { axis }, &[data, idx], ValueType::new(td.dtype, shape))?;
    cx.bind(node, 0, y);
    Ok(())
}

fn gather_nd(cx: Cx, node: &Node) -> Result<()> {
    let (data, idx) = (cx.required(node, 0)?, cx.required(node, 1)?);
    let (td, ti) = (cx.ty(&data), cx.ty(&idx));
    check_indices(cx, node, &ti)?;
    let b = node.int("batch_dims").unwrap_or(0).max(0) as usize;
    let k = *ti
        .shape
        .last()
        .ok_or_else(|| cx.node_error(node, "indices must have rank 1 or more"))?;
    if b >= ti.rank() || b + k > td.rank() || td.shape[..b] != ti.shape[..b] {
        return Err(cx.node_error(
            node,
            format!("data {:?}, indices {:?}, batch_dims {b}", td.shape, ti.shape),
        ));
    }
    let mut shape = ti.shape[..ti.rank() - 1].to_vec();
    shape.extend_from_slice(&td.shape[b + k..]);
    let y = cx.emit1(
        node,
        Op::GatherND { batch_dims: b },
        &[data, idx],
        ValueType::new(td.dtype, shape),
    )?;
    cx.bind(node, 0, y);
    Ok(())
}

fn scatter_reduction(cx: &Specializer, node: &Node) -> Result<ScatterReduction> {
    Ok(match node.string("reduction").as_deref().unwrap_or("none") {
        "none" => ScatterReduction::None,
        "add" => ScatterReduction::Add,
        "mul" => ScatterReduction::Mul,
        "max" => ScatterReduction::Max,
        "min" => ScatterReduction::Min,
        other => return Err(cx.node_error(node, format!("unknown reduction `{other}`"))),
    })
}

/// NonZero of a host tensor: the count and the (rank, count) indices.
fn nonzero(t: &HostTensor) -> (usize, Vec<i64>) {
    let v = t.to_f64_vec();
    let shape = t.shape();
    let hits: Vec<usize> = v
        .iter()
        .enumerate()
        .filter(|(_, x)| **x != 0.0)
        .map(|(i, _)| i)
        .collect();
    let mut idx = vec![0i64; shape.len() * hits.len()];
    for (j, &flat) in hits.iter().enumerate() {
        let mut rem = flat;
        for a in (0..shape.len()).rev() {
            idx[a * hits.len() + j] = (rem % shape[a]) as i64;
            rem /= shape[a];
        }
    }
    (hits.len(), idx)
}

fn range(cx: Cx, node: &Node) -> Result<()> {
    let start = need_const(cx, node, 0, "start")?;
    let limit = need_const(cx, node, 1, "limit")?;
    let delta = need_const(cx, node, 2, "delta")?;
    let dtype = start.dtype();
    let (s, l, d) = (start.to_f64_vec()[0], limit.to_f64_vec()[0], delta.to_f64_vec()[0]);
    if d == 0.0 {
        return Err(cx.node_error(node, "delta is 0"));
    }
    let n = if dtype.is_float() {
        ((l - s) / d).ceil().max(0.0) as usize
    } else {
        let (s, l, d) = (ints(&start)[0], ints(&limit)[0], ints(&delta)[0]);
        ((l - s) as f64 / d as f64).ceil().max(0.0) as usize
    };
    let operands: Vec<Val> = (0..3).map(|i| cx.required(node, i)).collect::<Result<_>>()?;
    // The length comes from the values; the elements are computed like any op's: on the host
    // where all three operands are constants, else on the device.
    let y = cx.emit1(node, Op::Range, &operands, ValueType::new(dtype, vec![n]))?;
    cx.bind(node, 0, y);
    Ok(())
}

fn matmul(cx: Cx, node: &Node, a: Val, b: Val) -> Result<Val> {
    let (ta, tb) = (cx.ty(&a), cx.ty(&b));
    if ta.rank() == 0 || tb.rank() == 0 {
        return Err(cx.node_error(node, "operands must have rank 1 or more"));
    }
    // numpy: a 1-D left operand is a row, a 1-D right one a column; both dropped from the result.
    let a2 = if ta.rank() == 1 {
        view(cx, node, a, vec![1, ta.shape[0]])?
    } else {
        a
    };
    let b2 = if tb.rank() == 1 {
        view(cx, node, b, vec![tb.shape[0], 1])?
    } else {
        b
    };
    let (sa, sb) = (cx.ty(&a2).shape, cx.ty(&b2).shape);
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let (k2, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
    if k != k2 || ta.dtype != tb.dtype {
        return Err(cx.node_error(node, format!("cannot multiply {ta} by {tb}")));
    }
    let batch = broadcast(&[&sa[..sa.len() - 2], &sb[..sb.len() - 2]]).ok_or_else(|| {
        cx.node_error(
            node,
            format!("batch axes of {:?} and {:?} do not broadcast", ta.shape, tb.shape),
        )
    })?;
    let mut shape = batch.clone();
    shape.extend([m, n]);
    let y = cx.emit1(node, Op::MatMul, &[a2, b2], ValueType::new(ta.dtype, shape))?;
    let mut out = batch;
    if ta.rank() != 1 {
        out.push(m);
    }
    if tb.rank() != 1 {
        out.push(n);
    }
    view(cx, node, y, out)
}

fn gemm(cx: Cx, node: &Node) -> Result<()> {
    let (a, b) = (cx.required(node, 0)?, cx.required(node, 1)?);
    let c = cx.input(node, 2)?;
    let (ta, tb) = (cx.ty(&a), cx.ty(&b));
    let trans_a = node.int("transA").unwrap_or(0) != 0;
    let trans_b = node.int("transB").unwrap_or(0) != 0;
    if ta.rank() != 2 || tb.rank() != 2 {
        return Err(cx.node_error(node, format!("A {:?} and B {:?} must be matrices", ta.shape, tb.shape)));
    }
    let (m, k) = if trans_a {
        (ta.shape[1], ta.shape[0])
    } else {
        (ta.shape[0], ta.shape[1])
    };
    let (k2, n) = if trans_b {
        (tb.shape[1], tb.shape[0])
    } else {
        (tb.shape[0], tb.shape[1])
    };
    if k != k2 {
        return Err(cx.node_error(node, format!("inner sizes {k} and {k2} differ")));
    }
    let mut operands = vec![a, b];
    if let Some(c) = c {
        let tc = cx.ty(&c);
        if broadcast(&[&tc.shape, &[m, n]]).as_deref() != Some(&[m, n][..]) {
            return Err(cx.node_error(node, format!("C {:?} does not broadcast to ({m}, {n})", tc.shape)));
        }
        operands.push(c);
    }
    let op = Op::Gemm {
        alpha: node.float("alpha").unwrap_or(1.0),
        beta: node.float("beta").unwrap_or(1.0),
        trans_a,
        trans_b,
    };
    let y = cx.emit1(node, op, &operands, ValueType::new(ta.dtype, vec![m, n]))?;
    cx.bind(node, 0, y);
    Ok(())
}

fn softmax(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    let hard = node.op_type == "Hardmax";
    let log = node.op_type == "LogSoftmax";
    let make = |axis| {
        if hard {
            Op::Hardmax { axis }
        } else {
            Op::Softmax { axis, log }
        }
    };
    let y = if cx.opset() < 13 {
        // Before opset 13 the input is seen as a matrix: the axes before `axis`, then the rest.
        let axis = norm_axis(cx, node, node.int("axis").unwrap_or(1), t.rank())?;
        let rows: usize = t.shape[..axis].iter().product();
        let cols: usize = t.shape[axis..].iter().product();
        let flat = view(cx, node, x, vec![rows, cols])?;
        let y = cx.emit1(node, make(1), &[flat], ValueType::new(t.dtype, vec![rows, cols]))?;
        view(cx, node, y, t.shape.clone())?
    } else {
        let axis = norm_axis(cx, node, node.int("axis").unwrap_or(-1), t.rank())?;
        cx.emit1(node, make(axis), &[x], t)?
    };
    cx.bind(node, 0, y);
    Ok(())
}

fn layer_norm(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let scale = cx.required(node, 1)?;
    let bias = cx.input(node, 2)?;
    let t = cx.ty(&x);
    let axis = norm_axis(cx, node, node.int("axis").unwrap_or(-1), t.rank())?;
    let norm_shape = &t.shape[axis..];
    for v in std::iter::once(&scale).chain(bias.as_ref()) {
        let tv = cx.ty(v);
        if broadcast(&[&tv.shape, norm_shape]).as_deref() != Some(norm_shape) {
            return Err(cx.node_error(
                node,
                format!("scale or bias {:?} does not broadcast to {norm_shape:?}", tv.shape),
            ));
        }
    }
    let mut operands = vec![x, scale];
    operands.extend(bias);
    let mut outs = vec![t.clone()];
    if cx.output_used(node, 1) || cx.output_used(node, 2) {
        let stash = dtype_of(node.int("stash_type").unwrap_or(1) as i32).unwrap_or(DType::F32);
        let mut s = t.shape.clone();
        s[axis..].iter_mut().for_each(|d| *d = 1);
        outs.push(ValueType::new(stash, s.clone()));
        outs.push(ValueType::new(stash, s));
    }
    let op = Op::LayerNorm {
        axis,
        epsilon: node.float("epsilon").unwrap_or(1e-5),
    };
    let ys = cx.emit(node, op, &operands, outs)?;
    for (i, y) in ys.into_iter().enumerate() {
        cx.bind(node, i, y);
    }
    Ok(())
}

fn batch_norm(cx: Cx, node: &Node) -> Result<()> {
    let vals: Vec<Val> = (0..5).map(|i| cx.required(node, i)).collect::<Result<_>>()?;
    let t = cx.ty(&vals[0]);
    if node.int("training_mode").unwrap_or(0) != 0 || (1..5).any(|i| cx.output_used(node, i)) {
        return Err(unsupported(node, "training-mode batch normalization".into()));
    }
    if t.rank() < 2 || vals[1..].iter().any(|v| cx.ty(v).numel() != t.shape[1]) {
        return Err(cx.node_error(
            node,
            format!(
                "input {:?} needs one scale, bias, mean and variance per channel",
                t.shape
            ),
        ));
    }
    let op = Op::BatchNorm {
        epsilon: node.float("epsilon").unwrap_or(1e-5),
    };
    let y = cx.emit1(node, op, &vals, t)?;
    cx.bind(node, 0, y);
    Ok(())
}

fn reduce(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    let kind = match node.op_type.as_str() {
        "ReduceSum" => ReduceKind::Sum,
        "ReduceMean" => ReduceKind::Mean,
        "ReduceMax" => ReduceKind::Max,
        "ReduceMin" => ReduceKind::Min,
        "ReduceProd" => ReduceKind::Prod,
        "ReduceL1" => ReduceKind::L1,
        "ReduceL2" => ReduceKind::L2,
        "ReduceSumSquare" => ReduceKind::SumSquare,
        "ReduceLogSum" => ReduceKind::LogSum,
        _ => ReduceKind::LogSumExp,
    };
    let axes_from_input = if kind == ReduceKind::Sum { 13 } else { 18 };
    let keepdims = node.int("keepdims").unwrap_or(1) != 0;
    let axes = match axes_of(cx, node, axes_from_input, t.rank())? {
        Some(a) if !a.is_empty() => a,
        _ if node.int("noop_with_empty_axes").unwrap_or(0) != 0 => {
            let x = cx.required(node, 0)?;
            cx.bind(node, 0, x);
            return Ok(());
        }
        _ => (0..t.rank()).collect(),
    };
    let shape: Vec<usize> = if keepdims {
        t.shape
            .iter()
            .enumerate()
            .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
            .collect()
    } else {
        t.shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect()
    };
    let y = cx.emit1(
        node,
        Op::Reduce { kind, axes, keepdims },
        &[x],
        ValueType::new(t.dtype, shape),
    )?;
    cx.bind(node, 0, y);
    Ok(())
}

/// Explicit pads and output sizes of a convolution or pooling window along each spatial axis.
struct Window {
    pads: Vec<(usize, usize)>,
    out: Vec<usize>,
}

fn window(
    cx: &Specializer,
    node: &Node,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    ceil: bool,
) -> Result<Window> {
    let n = input.len();
    let auto = node.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
    let given = node.ints("pads").map(<[i64]>::to_vec).unwrap_or_else(|| vec![0; 2 * n]);
    if given.len() != 2 * n || given.iter().any(|&p| p < 0) {
        return Err(cx.node_error(node, format!("pads {given:?} for {n} spatial axes")));
    }
    let mut pads = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let ext = dilations[i] * (kernel[i].max(1) - 1) + 1;
        let (b, e) = match auto.as_str() {
            "NOTSET" => (given[i] as usize, given[i + n] as usize),
            "VALID" => (0, 0),
            "SAME_UPPER" | "SAME_LOWER" => {
                let o = input[i].div_ceil(strides[i]);
                let total = ((o - 1) * strides[i] + ext).saturating_sub(input[i]);
                if auto == "SAME_UPPER" {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                }
            }
            other => return Err(cx.node_error(node, format!("unknown auto_pad `{other}`"))),
        };
        let padded = input[i] + b + e;
        if padded < ext {
            return Err(cx.node_error(node, format!("a window of {ext} does not fit an axis of {padded}")));
        }
        let span = padded - ext;
        let mut o = if ceil {
            span.div_ceil(strides[i]) + 1
        } else {
            span / strides[i] + 1
        };
        // With ceil_mode, the last window must start inside the input or its left padding.
        if ceil && (o - 1) * strides[i] >= input[i] + b {
            o -= 1;
        }
        pads.push((b, e));
        out.push(o);
    }
    Ok(Window { pads, out })
}

fn spatial_attr(cx: &Specializer, node: &Node, name: &str, n: usize) -> Result<Vec<usize>> {
    match node.ints(name) {
        Some(v) if v.len() == n && v.iter().all(|&x| x >= 1) => Ok(v.iter().map(|&x| x as usize).collect()),
        Some(v) => Err(cx.node_error(node, format!("{name} {v:?} for {n} spatial axes"))),
        None => Ok(vec![1; n]),
    }
}

fn conv(cx: Cx, node: &Node) -> Result<()> {
    let (x, w) = (cx.required(node, 0)?, cx.required(node, 1)?);
    let b = cx.input(node, 2)?;
    let (tx, tw) = (cx.ty(&x), cx.ty(&w));
    if tx.rank() < 3 || tw.rank() != tx.rank() {
        return Err(cx.node_error(node, format!("input {:?} and weight {:?}", tx.shape, tw.shape)));
    }
    let n = tx.rank() - 2;
    let group = node.int("group").unwrap_or(1).max(1) as usize;
    let kernel = tw.shape[2..].to_vec();
    let strides = spatial_attr(cx, node, "strides", n)?;
    let dilations = spatial_attr(cx, node, "dilations", n)?;
    if tx.shape[1] != tw.shape[1] * group || tw.shape[0] % group != 0 {
        return Err(cx.node_error(
            node,
            format!(
                "input {:?}, weight {:?} and group {group} disagree on channels",
                tx.shape, tw.shape
            ),
        ));
    }
    if let Some(b) = &b
        && cx.ty(b).shape != [tw.shape[0]]
    {
        return Err(cx.node_error(
            node,
            format!("bias {:?} for {} output channels", cx.ty(b).shape, tw.shape[0]),
        ));
    }
    let win = window(cx, node, &tx.shape[2..], &kernel, &strides, &dilations, false)?;
    let mut shape = vec![tx.shape[0], tw.shape[0]];
    shape.extend(&win.out);
    let mut operands = vec![x, w];
    operands.extend(b);
    let op = Op::Conv {
        strides,
        pads: win.pads,
        dilations,
        group,
    };
    let y = cx.emit1(node, op, &operands, ValueType::new(tx.dtype, shape))?;
    cx.bind(node, 0, y);
    Ok(())
}

fn pool(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    if t.rank() < 3 {
        return Err(cx.node_error(node, "needs (N, C, spatial...)"));
    }
    let n = t.rank() - 2;
    let kernel = spatial_attr(cx, node, "kernel_shape", n)?;
    if node.ints("kernel_shape").is_none() {
        return Err(cx.node_error(node, "has no kernel_shape"));
    }
    let strides = spatial_attr(cx, node, "strides", n)?;
    let dilations = spatial_attr(cx, node, "dilations", n)?;
    let ceil = node.int("ceil_mode").unwrap_or(0) != 0;
    let win = window(cx, node, &t.shape[2..], &kernel, &strides, &dilations, ceil)?;
    let mut shape = t.shape[..2].to_vec();
    shape.extend(&win.out);
    let op = if node.op_type == "MaxPool" {
        Op::MaxPool {
            kernel,
            strides,
            pads: win.pads,
            dilations,
            column_major: node.int("storage_order").unwrap_or(0) != 0,
        }
    } else {
        Op::AveragePool {
            kernel,
            strides,
            pads: win.pads,
            dilations,
            count_include_pad: node.int("count_include_pad").unwrap_or(0) != 0,
        }
    };
    let mut outs = vec![ValueType::new(t.dtype, shape.clone())];
    if node.op_type == "MaxPool" && cx.output_used(node, 1) {
        outs.push(ValueType::new(DType::I64, shape));
    }
    let ys = cx.emit(node, op, &[x], outs)?;
    for (i, y) in ys.into_iter().enumerate() {
        cx.bind(node, i, y);
    }
    Ok(())
}

fn resize(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    let r = t.rank();
    let s = |name: &str, default: &str| node.string(name).unwrap_or_else(|| default.to_string());
    let mode = match s("mode", "nearest").as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" | "bilinear" | "trilinear" => ResizeMode::Linear,
        "cubic" | "bicubic" => ResizeMode::Cubic,
        other => return Err(cx.node_error(node, format!("unknown mode `{other}`"))),
    };
    let default_transform = if cx.opset() < 11 { "asymmetric" } else { "half_pixel" };
    let transform = match s("coordinate_transformation_mode", default_transform).as_str() {
        "half_pixel" => CoordinateTransform::HalfPixel,
        "half_pixel_symmetric" => CoordinateTransform::HalfPixelSymmetric,
        "pytorch_half_pixel" => CoordinateTransform::PytorchHalfPixel,
        "align_corners" => CoordinateTransform::AlignCorners,
        "asymmetric" => CoordinateTransform::Asymmetric,
        "tf_crop_and_resize" => CoordinateTransform::TfCropAndResize,
        other => return Err(cx.node_error(node, format!("unknown coordinate_transformation_mode `{other}`"))),
    };
    let nearest = match s("nearest_mode", "round_prefer_floor").as_str() {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        other => return Err(cx.node_error(node, format!("unknown nearest_mode `{other}`"))),
    };
    // Inputs: opset 10 (X, scales); 11 and later (X, roi, scales, sizes).
    let (roi, scales, sizes) = if cx.opset() < 11 {
        (None, cx.constant(node, 1, "scales")?, None)
    } else {
        (
            cx.constant(node, 1, "roi")?,
            cx.constant(node, 2, "scales")?,
            cx.constant(node, 3, "sizes")?,
        )
    };
    let axes: Vec<usize> = match node.ints("axes") {
        Some(a) => a.iter().map(|&v| norm_axis(cx, node, v, r)).collect::<Result<_>>()?,
        None => (0..r).collect(),
    };
    let scales: Option<Vec<f64>> = scales.filter(|t| !t.is_empty()).map(|t| t.to_f64_vec());
    let sizes: Option<Vec<i64>> = sizes.filter(|t| !t.is_empty()).map(|t| ints(&t));
    let mut scale_of = vec![1f64; r];
    let mut out = t.shape.clone();
    match (&scales, &sizes) {
        (Some(sc), None) => {
            if sc.len() != axes.len() || sc.iter().any(|&v| v <= 0.0) {
                return Err(cx.node_error(node, format!("scales {sc:?} for axes {axes:?}")));
            }
            for (i, &a) in axes.iter().enumerate() {
                scale_of[a] = sc[i];
                out[a] = (t.shape[a] as f64 * sc[i]).floor() as usize;
            }
        }
        (None, Some(sz)) => {
            if sz.len() != axes.len() || sz.iter().any(|&v| v < 0) {
                return Err(cx.node_error(node, format!("sizes {sz:?} for axes {axes:?}")));
            }
            let policy = s("keep_aspect_ratio_policy", "stretch");
            let ratios: Vec<f64> = axes
                .iter()
                .zip(sz)
                .map(|(&a, &v)| v as f64 / t.shape[a] as f64)
                .collect();
            let pick = match policy.as_str() {
                "stretch" => None,
                "not_larger" => ratios.iter().copied().reduce(f64::min),
                "not_smaller" => ratios.iter().copied().reduce(f64::max),
                other => return Err(cx.node_error(node, format!("unknown keep_aspect_ratio_policy `{other}`"))),
            };
            for (i, &a) in axes.iter().enumerate() {
                match pick {
                    None => {
                        scale_of[a] = ratios[i];
                        out[a] = sz[i] as usize;
                    }
                    Some(p) => {
                        scale_of[a] = p;
                        out[a] = (t.shape[a] as f64 * p + 0.5).floor() as usize;
                    }
                }
            }
        }
        _ => return Err(cx.node_error(node, "needs exactly one of scales and sizes")),
    }
    let mut roi_of = vec![(0f64, 1f64); r];
    if transform == CoordinateTransform::TfCropAndResize {
        let roi = roi.ok_or_else(|| cx.node_error(node, "tf_crop_and_resize needs roi"))?;
        let v: Vec<f64> = roi.to_f64_vec();
        if v.len() != 2 * axes.len() {
            return Err(cx.node_error(node, format!("roi {v:?} for axes {axes:?}")));
        }
        for (i, &a) in axes.iter().enumerate() {
            roi_of[a] = (v[i], v[i + axes.len()]);
        }
    }
    let op = Op::Resize(Resize {
        mode,
        transform,
        nearest,
        cubic_coeff_a: node.float("cubic_coeff_a").unwrap_or(-0.75),
        exclude_outside: node.int("exclude_outside").unwrap_or(0) != 0,
        extrapolation_value: node.float("extrapolation_value").unwrap_or(0.0),
        antialias: node.int("antialias").unwrap_or(0) != 0,
        scales: scale_of,
        roi: roi_of,
    });
    let y = cx.emit1(node, op, &[x], ValueType::new(t.dtype, out))?;
    cx.bind(node, 0, y);
    Ok(())
}

fn einsum(cx: Cx, node: &Node) -> Result<()> {
    let eq = node
        .string("equation")
        .ok_or_else(|| cx.node_error(node, "has no equation"))?;
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let vals: Vec<Val> = (0..node.inputs.len())
        .map(|i| cx.required(node, i))
        .collect::<Result<_>>()?;
    let types: Vec<ValueType> = vals.iter().map(|v| cx.ty(v)).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != vals.len() {
        return Err(cx.node_error(
            node,
            format!("equation `{eq}` has {} operands, the node {}", terms.len(), vals.len()),
        ));
    }
    // An ellipsis stands for the axes not named, right-aligned across operands as broadcasting
    // aligns them; its axes become fresh upper-case letters.
    let used: Vec<u8> = eq.bytes().filter(u8::is_ascii_alphabetic).collect();
    let fresh: Vec<u8> = (b'A'..=b'Z').filter(|c| !used.contains(c)).collect();
    let mut ell_rank = 0;
    for (term, t) in terms.iter().zip(&types) {
        if term.contains("...") {
            let named = term.bytes().filter(u8::is_ascii_alphabetic).count();
            let k = t
                .rank()
                .checked_sub(named)
                .ok_or_else(|| cx.node_error(node, format!("`{term}` for {t}")))?;
            ell_rank = ell_rank.max(k);
        }
    }
    if ell_rank > fresh.len() {
        return Err(cx.node_error(node, "too many axes under the ellipsis"));
    }
    let ell: Vec<u8> = fresh[..ell_rank].to_vec();
    let mut inputs = Vec::new();
    for (term, t) in terms.iter().zip(&types) {
        let mut subs = Vec::new();
        if let Some((pre, post)) = term.split_once("...") {
            let named = term.bytes().filter(u8::is_ascii_alphabetic).count();
            let k = t.rank() - named;
            subs.extend(pre.bytes());
            subs.extend(&ell[ell_rank - k..]);
            subs.extend(post.bytes());
        } else {
            subs.extend(term.bytes());
        }
        if subs.len() != t.rank() || !subs.iter().all(u8::is_ascii_alphabetic) {
            return Err(cx.node_error(node, format!("term `{term}` for an operand of rank {}", t.rank())));
        }
        inputs.push(subs);
    }
    let output: Vec<u8> = match rhs {
        Some(r) => {
            let mut o = Vec::new();
            if let Some((pre, post)) = r.split_once("...") {
                o.extend(pre.bytes());
                o.extend(&ell);
                o.extend(post.bytes());
            } else {
                o.extend(r.bytes());
            }
            o
        }
        None => {
            let mut once: Vec<u8> = inputs
                .iter()
                .flatten()
                .copied()
                .filter(|c| !ell.contains(c))
                .filter(|c| inputs.iter().flatten().filter(|d| *d == c).count() == 1)
                .collect();
            once.sort_unstable();
            let mut o = ell.clone();
            o.extend(once);
            o
        }
    };
    let mut size = std::collections::BTreeMap::new();
    for (subs, t) in inputs.iter().zip(&types) {
        for (&c, &d) in subs.iter().zip(&t.shape) {
            let e = size.entry(c).or_insert(d);
            if *e == 1 {
                *e = d;
            } else if d != 1 && d != *e {
                return Err(cx.node_error(node, format!("`{}` has sizes {d} and {e}", c as char)));
            }
        }
    }
    let shape: Vec<usize> = output
        .iter()
        .map(|c| {
            size.get(c)
                .copied()
                .ok_or_else(|| cx.node_error(node, format!("output `{}` is in no input", *c as char)))
        })
        .collect::<Result<_>>()?;
    let dtype = types[0].dtype;
    let y = cx.emit1(node, Op::Einsum { inputs, output }, &vals, ValueType::new(dtype, shape))?;
    cx.bind(node, 0, y);
    Ok(())
}

fn one_hot(cx: Cx, node: &Node) -> Result<()> {
    let idx = cx.required(node, 0)?;
    let ti = cx.ty(&idx);
    let depth = need_const(cx, node, 1, "depth")?.to_f64_vec()[0];
    let values = need_const(cx, node, 2, "values")?;
    if depth < 1.0 || values.len() != 2 {
        return Err(cx.node_error(node, "depth must be positive and values hold (off, on)"));
    }
    let v = values.to_f64_vec();
    let axis = norm_axis(cx, node, node.int("axis").unwrap_or(-1), ti.rank() + 1)?;
    let mut shape = ti.shape.clone();
    shape.insert(axis, depth as usize);
    let op = Op::OneHot {
        axis,
        depth: depth as usize,
        off: v[0],
        on: v[1],
    };
    let y = cx.emit1(node, op, &[idx], ValueType::new(values.dtype(), shape))?;
    cx.bind(node, 0, y);
    Ok(())
}
