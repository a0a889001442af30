//! Host evaluation of the ops whose operands are all constants: the shape arithmetic of exports,
//! and the layout and elementwise work on constants (masks made from shapes, reshaped weights).
//! Floats are computed in f64 and rounded once to their dtype (exact for +, -, *, /, sqrt of f32);
//! integers in i64. Ops not listed here (matrix products, convolutions, norms) are left to the
//! device even when their operands are constants.

use half::{bf16, f16};
use hwcov_core::{DType, HostTensor, TensorData};

use crate::ir::{Binary, Op, PadMode, ReduceKind, Unary, ValueType};

type R<T> = std::result::Result<T, String>;

/// Evaluates `op`; `None` where the host does not evaluate this op.
pub fn eval(op: &Op, inputs: &[&HostTensor], outs: &[ValueType]) -> Option<R<Vec<HostTensor>>> {
    let out = outs.first()?;
    let one = |r: R<HostTensor>| Some(r.map(|t| vec![t]));
    match op {
        Op::Unary(u) => one(unary(*u, inputs[0], out)),
        Op::Binary(b) => one(binary(*b, inputs[0], inputs[1], out)),
        Op::Where => one(where_(inputs, out)),
        Op::Cast => one(convert(&values(inputs[0]), out)),
        Op::Reshape => one(HostTensor::new(out.shape.clone(), inputs[0].data().clone()).map_err(|e| e.to_string())),
        Op::Transpose { perm } => {
            let src = strides(inputs[0].shape());
            let idx = map_indices(&out.shape, |o| o.iter().zip(perm).map(|(&i, &p)| i * src[p]).sum());
            one(take(inputs[0], &idx, out))
        }
        Op::Slice { starts, steps } => {
            let src = strides(inputs[0].shape());
            let idx = map_indices(&out.shape, |o| {
                (0..o.len())
                    .map(|a| (starts[a] as i64 + o[a] as i64 * steps[a]) as usize * src[a])
                    .sum()
            });
            one(take(inputs[0], &idx, out))
        }
        Op::Expand => {
            let idx = broadcast_index(inputs[0].shape(), &out.shape);
            one(take(inputs[0], &idx, out))
        }
        Op::Tile => {
            let s = inputs[0].shape().to_vec();
            let src = strides(&s);
            let idx = map_indices(&out.shape, |o| (0..o.len()).map(|a| (o[a] % s[a]) * src[a]).sum());
            one(take(inputs[0], &idx, out))
        }
        Op::Concat { axis } => one(concat(inputs, *axis, out)),
        Op::Split { axis } => Some(split(inputs[0], *axis, outs)),
        Op::Gather { axis } => one(gather(inputs[0], inputs[1], *axis, out)),
        Op::Reduce { kind, axes, .. } => one(reduce(*kind, axes, inputs[0], out)),
        Op::CumSum {
            axis,
            exclusive,
            reverse,
        } => one(cumsum(inputs[0], *axis, *exclusive, *reverse, out)),
        Op::Pad {
            pads,
            mode: PadMode::Constant,
            value,
        } => one(pad_constant(inputs[0], pads, *value, out)),
        Op::Range => one(range(inputs, out)),
        _ => None,
    }
}

/// Elements as f64 (floats) or i64 (integers and bools).
enum Values {
    F(Vec<f64>),
    I(Vec<i64>),
}

fn values(t: &HostTensor) -> Values {
    if t.dtype().is_float() {
        Values::F(t.to_f64_vec())
    } else {
        Values::I(t.to_i64_vec().unwrap_or_default())
    }
}

/// Values converted to the output's dtype and shape.
fn convert(v: &Values, out: &ValueType) -> R<HostTensor> {
    let f = |x: &f64| *x;
    let data = match (v, out.dtype) {
        (Values::F(v), DType::F32) => TensorData::F32(v.iter().map(|&x| x as f32).collect()),
        (Values::F(v), DType::F64) => TensorData::F64(v.clone()),
        (Values::F(v), DType::F16) => TensorData::F16(v.iter().map(|&x| f16::from_f64(x)).collect()),
        (Values::F(v), DType::BF16) => TensorData::BF16(v.iter().map(|&x| bf16::from_f64(x)).collect()),
        (Values::F(v), DType::I64) => TensorData::I64(v.iter().map(|&x| f(&x) as i64).collect()),
        (Values::F(v), DType::I32) => TensorData::I32(v.iter().map(|&x| x as i32).collect()),
        (Values::F(v), DType::U8) => TensorData::U8(v.iter().map(|&x| x as u8).collect()),
        (Values::F(v), DType::Bool) => TensorData::Bool(v.iter().map(|&x| x != 0.0).collect()),
        (Values::I(v), DType::F32) => TensorData::F32(v.iter().map(|&x| x as f32).collect()),
        (Values::I(v), DType::F64) => TensorData::F64(v.iter().map(|&x| x as f64).collect()),
        (Values::I(v), DType::F16) => TensorData::F16(v.iter().map(|&x| f16::from_f64(x as f64)).collect()),
        (Values::I(v), DType::BF16) => TensorData::BF16(v.iter().map(|&x| bf16::from_f64(x as f64)).collect()),
        (Values::I(v), DType::I64) => TensorData::I64(v.clone()),
        (Values::I(v), DType::I32) => TensorData::I32(v.iter().map(|&x| x as i32).collect()),
        (Values::I(v), DType::U8) => TensorData::U8(v.iter().map(|&x| x as u8).collect()),
        (Values::I(v), DType::Bool) => TensorData::Bool(v.iter().map(|&x| x != 0).collect()),
    };
    HostTensor::new(out.shape.clone(), data).map_err(|e| e.to_string())
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// For every output position (row-major), `f` of its multi-index.
fn map_indices(shape: &[usize], mut f: impl FnMut(&[usize]) -> usize) -> Vec<usize> {
    let n: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(f(&idx));
        for a in (0..shape.len()).rev() {
            idx[a] += 1;
            if idx[a] < shape[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    out
}

/// The flat index into `from` of each element of its broadcast to `to`.
fn broadcast_index(from: &[usize], to: &[usize]) -> Vec<usize> {
    let off = to.len() - from.len();
    let src = strides(from);
    map_indices(to, |o| {
        (0..from.len())
            .map(|a| if from[a] == 1 { 0 } else { o[a + off] * src[a] })
            .sum()
    })
}

/// The elements of `t` at `idx`, as a tensor of the output's shape.
fn take(t: &HostTensor, idx: &[usize], out: &ValueType) -> R<HostTensor> {
    fn pick<T: Clone>(v: &[T], idx: &[usize]) -> R<Vec<T>> {
        idx.iter()
            .map(|&i| v.get(i).cloned().ok_or_else(|| format!("index {i} out of range")))
            .collect()
    }
    let data = match t.data() {
        TensorData::F64(v) => TensorData::F64(pick(v, idx)?),
        TensorData::F32(v) => TensorData::F32(pick(v, idx)?),
        TensorData::F16(v) => TensorData::F16(pick(v, idx)?),
        TensorData::BF16(v) => TensorData::BF16(pick(v, idx)?),
        TensorData::I64(v) => TensorData::I64(pick(v, idx)?),
        TensorData::I32(v) => TensorData::I32(pick(v, idx)?),
        TensorData::U8(v) => TensorData::U8(pick(v, idx)?),
        TensorData::Bool(v) => TensorData::Bool(pick(v, idx)?),
    };
    HostTensor::new(out.shape.clone(), data).map_err(|e| e.to_string())
}

fn unary(u: Unary, x: &HostTensor, out: &ValueType) -> R<HostTensor> {
    let v = match values(x) {
        Values::I(v) => match u {
            Unary::Neg => Values::I(v.iter().map(|x| x.wrapping_neg()).collect()),
            Unary::Abs => Values::I(v.iter().map(|x| x.wrapping_abs()).collect()),
            Unary::Sign => Values::I(v.iter().map(|x| x.signum()).collect()),
            Unary::Not => Values::I(v.iter().map(|&x| (x == 0) as i64).collect()),
            Unary::Relu => Values::I(v.iter().map(|&x| x.max(0)).collect()),
            Unary::Clip { min, max } => Values::I(
                v.iter()
                    .map(|&x| {
                        let x = min.map_or(x, |m| x.max(m as i64));
                        max.map_or(x, |m| x.min(m as i64))
                    })
                    .collect(),
            ),
            _ => Values::F(v.iter().map(|&x| float_unary(u, x as f64)).collect()),
        },
        Values::F(v) => Values::F(v.iter().map(|&x| float_unary(u, x)).collect()),
    };
    convert(&v, out)
}

/// A unary function of one float (bool-valued ones as 0 or 1).
pub fn float_unary(u: Unary, x: f64) -> f64 {
    let b = |c: bool| if c { 1.0 } else { 0.0 };
    match u {
        Unary::Abs => x.abs(),
        Unary::Neg => -x,
        Unary::Sqrt => x.sqrt(),
        Unary::Reciprocal => 1.0 / x,
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Sin => x.sin(),
        Unary::Cos => x.cos(),
        Unary::Tan => x.tan(),
        Unary::Asin => x.asin(),
        Unary::Acos => x.acos(),
        Unary::Atan => x.atan(),
        Unary::Sinh => x.sinh(),
        Unary::Cosh => x.cosh(),
        Unary::Asinh => x.asinh(),
        Unary::Acosh => x.acosh(),
        Unary::Atanh => x.atanh(),
        Unary::Tanh => x.tanh(),
        Unary::Erf => erf(x),
        Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Unary::Relu => x.max(0.0),
        Unary::Floor => x.floor(),
        Unary::Ceil => x.ceil(),
        Unary::Round => x.round_ties_even(),
        Unary::Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
        Unary::Softplus => x.exp().ln_1p(),
        Unary::Softsign => x / (1.0 + x.abs()),
        Unary::Not => b(x == 0.0),
        Unary::IsNaN => b(x.is_nan()),
        Unary::IsInf { positive, negative } => {
            b((positive && x == f64::INFINITY) || (negative && x == f64::NEG_INFINITY))
        }
        Unary::LeakyRelu { alpha } => {
            if x >= 0.0 {
                x
            } else {
                alpha as f64 * x
            }
        }
        Unary::Elu { alpha } => {
            if x >= 0.0 {
                x
            } else {
                alpha as f64 * (x.exp() - 1.0)
            }
        }
        Unary::Celu { alpha } => {
            let a = alpha as f64;
            x.max(0.0) + (a * ((x / a).exp() - 1.0)).min(0.0)
        }
        Unary::Selu { alpha, gamma } => gamma as f64 * if x > 0.0 { x } else { alpha as f64 * (x.exp() - 1.0) },
        Unary::HardSigmoid { alpha, beta } => (alpha as f64 * x + beta as f64).clamp(0.0, 1.0),
        Unary::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        Unary::ThresholdedRelu { alpha } => {
            if x > alpha as f64 {
                x
            } else {
                0.0
            }
        }
        Unary::Mish => x * x.exp().ln_1p().tanh(),
        Unary::Gelu { tanh } => {
            if tanh {
                0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
            } else {
                0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
            }
        }
        Unary::Shrink { bias, lambd } => {
            let (b, l) = (bias as f64, lambd as f64);
            if x < -l {
                x + b
            } else if x > l {
                x - b
            } else {
                0.0
            }
        }
        Unary::Clip { min, max } => {
            let x = min.map_or(x, |m| x.max(m));
            max.map_or(x, |m| x.min(m))
        }
    }
}

/// The error function: its Taylor series near 0, erfc's continued fraction further out; about 14
/// correct digits (folded constants are f32 or f16).
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    if ax < 2.5 {
        // The Taylor series: its terms stay below 100 here, so it keeps about 14 digits.
        let x2 = x * x;
        let mut term = x;
        let mut sum = x;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        return sum * 2.0 / std::f64::consts::PI.sqrt();
    }
    let r = 1.0 - erfc_pos(ax);
    if x < 0.0 { -r } else { r }
}

/// erfc for x >= 2.5 by its continued fraction (Lentz's method).
fn erfc_pos(x: f64) -> f64 {
    if x > 27.0 {
        return 0.0;
    }
    // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
    let tiny = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for n in 1..500 {
        let a = n as f64 / 2.0;
        d = x + a * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = x + a / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / f
}

fn binary(b: Binary, x: &HostTensor, y: &HostTensor, out: &ValueType) -> R<HostTensor> {
    let ia = broadcast_index(x.shape(), &out.shape);
    let ib = broadcast_index(y.shape(), &out.shape);
    let v = match (values(x), values(y)) {
        (Values::I(a), Values::I(c)) if b != Binary::Pow || !x.dtype().is_float() => {
            let mut r = Vec::with_capacity(ia.len());
            for (&i, &j) in ia.iter().zip(&ib) {
                r.push(int_binary(b, a[i], c[j])?);
            }
            Values::I(r)
        }
        (a, c) => {
            let a = as_f64(a);
            let c = as_f64(c);
            let bits = |v: f64| v != 0.0;
            let flag = |v: bool| if v { 1.0 } else { 0.0 };
            Values::F(
                ia.iter()
                    .zip(&ib)
                    .map(|(&i, &j)| {
                        let (p, q) = (a[i], c[j]);
                        match b {
                            Binary::Add => p + q,
                            Binary::Sub => p - q,
                            Binary::Mul => p * q,
                            Binary::Div => p / q,
                            Binary::Pow => p.powf(q),
                            Binary::Mod { .. } => {
                                let r = p % q;
                                if matches!(b, Binary::Mod { fmod: false }) && r != 0.0 && (r < 0.0) != (q < 0.0) {
                                    r + q
                                } else {
                                    r
                                }
                            }
                            Binary::Min => p.min(q),
                            Binary::Max => p.max(q),
                            Binary::Equal => flag(p == q),
                            Binary::Less => flag(p < q),
                            Binary::LessOrEqual => flag(p <= q),
                            Binary::Greater => flag(p > q),
                            Binary::GreaterOrEqual => flag(p >= q),
                            Binary::And => flag(bits(p) && bits(q)),
                            Binary::Or => flag(bits(p) || bits(q)),
                            Binary::Xor => flag(bits(p) != bits(q)),
                            Binary::PRelu => {
                                if p < 0.0 {
                                    p * q
                                } else {
                                    p
                                }
                            }
                            _ => f64::NAN,
                        }
                    })
                    .collect(),
            )
        }
    };
    convert(&v, out)
}

fn as_f64(v: Values) -> Vec<f64> {
    match v {
        Values::F(v) => v,
        Values::I(v) => v.into_iter().map(|x| x as f64).collect(),
    }
}

fn int_binary(b: Binary, p: i64, q: i64) -> R<i64> {
    let flag = |v: bool| v as i64;
    Ok(match b {
        Binary::Add => p.wrapping_add(q),
        Binary::Sub => p.wrapping_sub(q),
        Binary::Mul => p.wrapping_mul(q),
        Binary::Div => {
            if q == 0 {
                return Err("integer division by zero".into());
            }
            p.wrapping_div(q)
        }
        Binary::Mod { fmod } => {
            if q == 0 {
                return Err("integer modulo by zero".into());
            }
            let r = p.wrapping_rem(q);
            if !fmod && r != 0 && (r < 0) != (q < 0) {
                r + q
            } else {
                r
            }
        }
        Binary::Pow => {
            if q < 0 {
                0
            } else {
                p.wrapping_pow(q.min(u32::MAX as i64) as u32)
            }
        }
        Binary::Min => p.min(q),
        Binary::Max => p.max(q),
        Binary::Equal => flag(p == q),
        Binary::Less => flag(p < q),
        Binary::LessOrEqual => flag(p <= q),
        Binary::Greater => flag(p > q),
        Binary::GreaterOrEqual => flag(p >= q),
        Binary::And => flag(p != 0 && q != 0),
        Binary::Or => flag(p != 0 || q != 0),
        Binary::Xor => flag((p != 0) != (q != 0)),
        Binary::PRelu => {
            if p < 0 {
                p * q
            } else {
                p
            }
        }
        Binary::BitShiftLeft => p.wrapping_shl(q as u32),
        Binary::BitShiftRight => ((p as u64).wrapping_shr(q as u32)) as i64,
        Binary::BitwiseAnd => p & q,
        Binary::BitwiseOr => p | q,
        Binary::BitwiseXor => p ^ q,
    })
}

fn where_(inputs: &[&HostTensor], out: &ValueType) -> R<HostTensor> {
    let c = inputs[0].to_i64_vec().ok_or("the condition is not bool")?;
    let ic = broadcast_index(inputs[0].shape(), &out.shape);
    let ix = broadcast_index(inputs[1].shape(), &out.shape);
    let iy = broadcast_index(inputs[2].shape(), &out.shape);
    // Pick from x or y by index: build a concatenation of both and index into it.
    let nx = inputs[1].len();
    let idx: Vec<usize> = (0..ic.len())
        .map(|k| if c[ic[k]] != 0 { ix[k] } else { nx + iy[k] })
        .collect();
    let both = concat_data(&[inputs[1], inputs[2]])?;
    take(
        &HostTensor::new(vec![inputs[1].len() + inputs[2].len()], both).map_err(|e| e.to_string())?,
        &idx,
        out,
    )
}

/// The elements of several tensors of one dtype, one after the other.
fn concat_data(parts: &[&HostTensor]) -> R<TensorData> {
    macro_rules! join {
        ($variant:ident) => {{
            let mut all = Vec::new();
            for p in parts {
                match p.data() {
                    TensorData::$variant(v) => all.extend_from_slice(v),
                    _ => return Err("operands differ in dtype".to_string()),
                }
            }
            TensorData::$variant(all)
        }};
    }
    Ok(match parts.first().map(|p| p.dtype()) {
        Some(DType::F64) => join!(F64),
        Some(DType::F32) => join!(F32),
        Some(DType::F16) => join!(F16),
        Some(DType::BF16) => join!(BF16),
        Some(DType::I64) => join!(I64),
        Some(DType::I32) => join!(I32),
        Some(DType::U8) => join!(U8),
        Some(DType::Bool) => join!(Bool),
        None => TensorData::F32(Vec::new()),
    })
}

fn concat(inputs: &[&HostTensor], axis: usize, out: &ValueType) -> R<HostTensor> {
    let all = concat_data(inputs)?;
    let total = inputs.iter().map(|t| t.len()).sum();
    let joined = HostTensor::new(vec![total], all).map_err(|e| e.to_string())?;
    // Each output element: which part, and its flat index in the joined data.
    let mut bounds = Vec::new();
    let mut base = 0;
    let mut edge = 0;
    for p in inputs {
        bounds.push((edge, edge + p.shape()[axis], base, strides(p.shape())));
        edge += p.shape()[axis];
        base += p.len();
    }
    let idx = map_indices(&out.shape, |o| {
        let (lo, _, base, st) = bounds
            .iter()
            .find(|(lo, hi, _, _)| o[axis] >= *lo && o[axis] < *hi)
            .cloned()
            .unwrap_or((0, 0, 0, vec![0; o.len()]));
        base + (0..o.len())
            .map(|a| if a == axis { (o[a] - lo) * st[a] } else { o[a] * st[a] })
            .sum::<usize>()
    });
    take(&joined, &idx, out)
}

fn split(x: &HostTensor, axis: usize, outs: &[ValueType]) -> R<Vec<HostTensor>> {
    let src = strides(x.shape());
    let mut first = 0;
    let mut parts = Vec::new();
    for out in outs {
        let idx = map_indices(&out.shape, |o| {
            (0..o.len())
                .map(|a| {
                    if a == axis {
                        (o[a] + first) * src[a]
                    } else {
                        o[a] * src[a]
                    }
                })
                .sum()
        });
        parts.push(take(x, &idx, out)?);
        first += out.shape[axis];
    }
    Ok(parts)
}

fn gather(data: &HostTensor, indices: &HostTensor, axis: usize, out: &ValueType) -> R<HostTensor> {
    let ind = indices.to_i64_vec().ok_or("indices are not integers")?;
    let ds = data.shape();
    let n = ds[axis] as i64;
    let src = strides(ds);
    let ir = indices.shape().len();
    let ist = strides(indices.shape());
    let mut bad = None;
    let idx = map_indices(&out.shape, |o| {
        let k: usize = (0..ir).map(|a| o[axis + a] * ist[a]).sum();
        let mut i = ind.get(k).copied().unwrap_or(0);
        if i < 0 {
            i += n;
        }
        if i < 0 || i >= n {
            bad = Some(i);
            return 0;
        }
        let mut flat = i as usize * src[axis];
        for a in 0..axis {
            flat += o[a] * src[a];
        }
        for a in axis + 1..ds.len() {
            flat += o[a - 1 + ir] * src[a];
        }
        flat
    });
    if let Some(i) = bad {
        return Err(format!("index {i} is out of range for an axis of {n}"));
    }
    take(data, &idx, out)
}

fn reduce(kind: ReduceKind, axes: &[usize], x: &HostTensor, out: &ValueType) -> R<HostTensor> {
    let shape = x.shape();
    let kept: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let ks = strides(&kept);
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    let n = kept.iter().product::<usize>();
    let v = x.to_f64_vec();
    let init = match kind {
        ReduceKind::Max => f64::NEG_INFINITY,
        ReduceKind::Min => f64::INFINITY,
        ReduceKind::Prod => 1.0,
        _ => 0.0,
    };
    let mut acc = vec![init; n];
    let all = map_indices(shape, |o| {
        (0..o.len())
            .map(|a| if axes.contains(&a) { 0 } else { o[a] * ks[a] })
            .sum()
    });
    for (k, &slot) in all.iter().enumerate() {
        let e = v[k];
        let a = &mut acc[slot];
        match kind {
            ReduceKind::Sum | ReduceKind::Mean | ReduceKind::LogSum => *a += e,
            ReduceKind::Max => *a = a.max(e),
            ReduceKind::Min => *a = a.min(e),
            ReduceKind::Prod => *a *= e,
            ReduceKind::L1 => *a += e.abs(),
            ReduceKind::L2 | ReduceKind::SumSquare => *a += e * e,
            ReduceKind::LogSumExp => *a += e.exp(),
        }
    }
    for a in &mut acc {
        *a = match kind {
            ReduceKind::Mean => *a / count as f64,
            ReduceKind::L2 => a.sqrt(),
            ReduceKind::LogSum | ReduceKind::LogSumExp => a.ln(),
            _ => *a,
        };
    }
    let v = if x.dtype().is_float() {
        Values::F(acc)
    } else {
        Values::I(acc.into_iter().map(|x| x as i64).collect())
    };
    convert(&v, out)
}

fn cumsum(x: &HostTensor, axis: usize, exclusive: bool, reverse: bool, out: &ValueType) -> R<HostTensor> {
    let shape = x.shape();
    let st = strides(shape);
    let len = shape[axis];
    // The first flat index of every line along `axis`.
    let lines: Vec<usize> = map_indices(shape, |o| {
        if o[axis] == 0 {
            (0..o.len()).map(|a| o[a] * st[a]).sum()
        } else {
            usize::MAX
        }
    })
    .into_iter()
    .filter(|&b| b != usize::MAX)
    .collect();
    fn scan<T: Copy + Default>(
        v: &[T],
        lines: &[usize],
        len: usize,
        stride: usize,
        exclusive: bool,
        reverse: bool,
        add: impl Fn(T, T) -> T,
    ) -> Vec<T> {
        let mut r = vec![T::default(); v.len()];
        for &base in lines {
            let mut acc = T::default();
            for k in 0..len {
                let p = base + (if reverse { len - 1 - k } else { k }) * stride;
                if exclusive {
                    r[p] = acc;
                    acc = add(acc, v[p]);
                } else {
                    acc = add(acc, v[p]);
                    r[p] = acc;
                }
            }
        }
        r
    }
    let result = match values(x) {
        Values::F(v) => Values::F(scan(&v, &lines, len, st[axis], exclusive, reverse, |a, b| a + b)),
        Values::I(v) => Values::I(scan(&v, &lines, len, st[axis], exclusive, reverse, i64::wrapping_add)),
    };
    convert(&result, out)
}

fn range(inputs: &[&HostTensor], out: &ValueType) -> R<HostTensor> {
    let n = out.numel();
    let v = if out.dtype.is_float() {
        let (s, d) = (inputs[0].to_f64_vec()[0], inputs[2].to_f64_vec()[0]);
        Values::F((0..n).map(|i| s + i as f64 * d).collect())
    } else {
        let s = inputs[0].to_i64_vec().unwrap_or_default()[0];
        let d = inputs[2].to_i64_vec().unwrap_or_default()[0];
        Values::I((0..n as i64).map(|i| s + i * d).collect())
    };
    convert(&v, out)
}

fn pad_constant(x: &HostTensor, pads: &[(i64, i64)], value: f64, out: &ValueType) -> R<HostTensor> {
    let src = strides(x.shape());
    let shape = x.shape().to_vec();
    let n = x.len();
    let fill = match values(x) {
        Values::F(_) => convert(&Values::F(vec![value]), &ValueType::new(x.dtype(), vec![1]))?,
        Values::I(_) => convert(&Values::I(vec![value as i64]), &ValueType::new(x.dtype(), vec![1]))?,
    };
    let joined_data = concat_data(&[x, &fill])?;
    let joined = HostTensor::new(vec![n + 1], joined_data).map_err(|e| e.to_string())?;
    let idx = map_indices(&out.shape, |o| {
        let mut flat = 0;
        for a in 0..o.len() {
            let i = o[a] as i64 - pads[a].0;
            if i < 0 || i >= shape[a] as i64 {
                return n;
            }
            flat += i as usize * src[a];
        }
        flat
    });
    take(&joined, &idx, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.1, 0.112_462_916_018_284_9),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (-1.5, -0.966_105_146_475_310_7),
            (4.0, 0.999_999_984_582_742_1),
        ] {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {} != {want}", erf(x));
        }
    }

    #[test]
    fn gather_on_shapes_and_concat_fold() {
        let shape = HostTensor::i64(vec![3], vec![2, 7, 32]).unwrap();
        let idx = HostTensor::i64(vec![], vec![1]).unwrap();
        let out = ValueType::new(DType::I64, vec![]);
        let r = eval(&Op::Gather { axis: 0 }, &[&shape, &idx], &[out]).unwrap().unwrap();
        assert_eq!(r[0].to_i64_vec().unwrap(), [7]);
        let a = HostTensor::i64(vec![2], vec![1, 2]).unwrap();
        let b = HostTensor::i64(vec![1], vec![-1]).unwrap();
        let r = eval(
            &Op::Concat { axis: 0 },
            &[&a, &b],
            &[ValueType::new(DType::I64, vec![3])],
        )
        .unwrap()
        .unwrap();
        assert_eq!(r[0].to_i64_vec().unwrap(), [1, 2, -1]);
    }

    #[test]
    fn cumsum_runs_along_its_axis_both_ways() {
        let x = HostTensor::i64(vec![2, 3], vec![1, 2, 3, 4, 5, 6]).unwrap();
        let ty = ValueType::new(DType::I64, vec![2, 3]);
        let run = |exclusive, reverse| {
            let op = Op::CumSum {
                axis: 1,
                exclusive,
                reverse,
            };
            eval(&op, &[&x], std::slice::from_ref(&ty)).unwrap().unwrap()[0]
                .to_i64_vec()
                .unwrap()
        };
        assert_eq!(run(false, false), [1, 3, 6, 4, 9, 15]);
        assert_eq!(run(true, false), [0, 1, 3, 0, 4, 9]);
        assert_eq!(run(false, true), [6, 5, 3, 15, 11, 6]);
        assert_eq!(run(true, true), [5, 3, 0, 11, 6, 0]);
    }

    #[test]
    fn transpose_and_slice_pick_the_right_elements() {
        let x = HostTensor::f32(vec![2, 3], vec![0., 1., 2., 3., 4., 5.]).unwrap();
        let r = eval(
            &Op::Transpose { perm: vec![1, 0] },
            &[&x],
            &[ValueType::new(DType::F32, vec![3, 2])],
        )
        .unwrap()
        .unwrap();
        assert_eq!(r[0].to_f64_vec(), [0., 3., 1., 4., 2., 5.]);
        let r = eval(
            &Op::Slice {
                starts: vec![1, 2],
                steps: vec![1, -2],
            },
            &[&x],
            &[ValueType::new(DType::F32, vec![1, 2])],
        )
        .unwrap()
        .unwrap();
        assert_eq!(r[0].to_f64_vec(), [5., 3.]);
    }
}
