//! Elementwise ops: unary and binary functions (numpy broadcasting), Where, Cast, Clip, the
//! variadic Sum/Mean/Max/Min (as chains of binary steps), Constant and Dropout.

use super::*;

pub(super) fn unary_op(node: &Node, _opset: i64) -> Option<Unary> {
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

pub(super) fn binary_op(node: &Node) -> Option<Binary> {
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

pub(super) fn binary(cx: Cx, node: &Node, b: Binary, a: Val, c: Val) -> Result<Val> {
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

pub(super) fn constant(cx: Cx, node: &Node) -> Result<()> {
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

pub(super) fn dropout(cx: Cx, node: &Node) -> Result<()> {
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

pub(super) fn cast(cx: Cx, node: &Node) -> Result<()> {
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

pub(super) fn clip(cx: Cx, node: &Node) -> Result<()> {
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

pub(super) fn variadic(cx: Cx, node: &Node) -> Result<()> {
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
pub(super) fn scalar_of(dtype: DType, v: f64) -> Result<HostTensor> {
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

/// Where: the condition, X and Y broadcast together.
pub(super) fn where_(cx: Cx, node: &Node) -> Result<()> {
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
