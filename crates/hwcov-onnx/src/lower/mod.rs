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

mod elementwise;
mod nn;
mod shape;

use elementwise::*;
use nn::*;
use shape::*;

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
        "Shape" => shape_of(cx, node),
        "Size" => size_of(cx, node),
        "Identity" => identity(cx, node),
        "Dropout" => dropout(cx, node),
        "Cast" | "CastLike" => cast(cx, node),
        "Clip" => clip(cx, node),
        "Sum" | "Mean" | "Max" | "Min" => variadic(cx, node),
        "Where" => where_(cx, node),
        "Reshape" => reshape(cx, node),
        "Flatten" => flatten(cx, node),
        "Squeeze" => squeeze(cx, node),
        "Unsqueeze" => unsqueeze(cx, node),
        "Transpose" => transpose_node(cx, node),
        "Expand" => expand_node(cx, node),
        "Tile" => tile(cx, node),
        "Concat" => concat(cx, node),
        "Split" => split(cx, node),
        "Slice" => slice(cx, node),
        "Pad" => pad(cx, node),
        "Gather" => gather(cx, node),
        "GatherElements" => gather_elements(cx, node),
        "GatherND" => gather_nd(cx, node),
        "ScatterND" => scatter_nd(cx, node),
        "ScatterElements" | "Scatter" => scatter_elements(cx, node),
        "NonZero" => nonzero_node(cx, node),
        "ConstantOfShape" => constant_of_shape(cx, node),
        "Range" => range(cx, node),
        "CumSum" => cumsum(cx, node),
        "Trilu" => trilu(cx, node),
        "MatMul" => matmul_node(cx, node),
        "Gemm" => gemm(cx, node),
        "Softmax" | "LogSoftmax" | "Hardmax" => softmax(cx, node),
        "LayerNormalization" => layer_norm(cx, node),
        "InstanceNormalization" => instance_norm(cx, node),
        "BatchNormalization" => batch_norm(cx, node),
        "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceL2"
        | "ReduceSumSquare" | "ReduceLogSum" | "ReduceLogSumExp" => reduce(cx, node),
        "ArgMax" | "ArgMin" => arg_reduce(cx, node),
        "GlobalAveragePool" | "GlobalMaxPool" => global_pool(cx, node),
        "Conv" => conv(cx, node),
        "MaxPool" | "AveragePool" => pool(cx, node),
        "Resize" => resize(cx, node),
        "Einsum" => einsum(cx, node),
        "OneHot" => one_hot(cx, node),
        "If" => if_node(cx, node),
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

/// If whose condition is known: the branch taken is inlined.
fn if_node(cx: Cx, node: &Arc<Node>) -> Result<()> {
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
