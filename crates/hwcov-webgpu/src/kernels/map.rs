//! Elementwise and layout kernels, one generated shader shape for both: for every point of an
//! iteration space, each operand is read at `base + sum(coord * stride)` (a stride of 0 on a
//! broadcast axis, a permuted stride for Transpose, a step times a stride for Slice) and the output
//! written at its own layout. Axes that every operand walks contiguously are merged first, and an
//! operand laid out as the iteration space itself is read at the thread's index.

use hwcov_core::Result;
use hwcov_onnx::ir::{Binary, Op, PadMode, Unary, ValueType};

use super::{
    Arg, Dispatch, ENTRY_1D, Kernels, MAX_RANK, Scalar, StepIo, binding, dispatch_1d, iword, math, one_to_one, prelude,
    strides, word,
};

/// Where an operand's elements are, over the iteration space.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub base: i64,
    /// One per axis of the iteration space.
    pub strides: Vec<i64>,
}

impl Layout {
    /// A tensor of `shape` broadcast to the iteration space `to` (numpy rules).
    pub fn broadcast(shape: &[usize], to: &[usize]) -> Layout {
        let own = strides(shape);
        let off = to.len() - shape.len();
        let strides = (0..to.len())
            .map(|a| {
                if a < off || shape[a - off] == 1 {
                    0
                } else {
                    own[a - off] as i64
                }
            })
            .collect();
        Layout { base: 0, strides }
    }

    /// A tensor laid out contiguously as the iteration space.
    pub fn contiguous(shape: &[usize]) -> Layout {
        Layout {
            base: 0,
            strides: strides(shape).into_iter().map(|s| s as i64).collect(),
        }
    }
}

/// An operand of a map kernel.
pub struct Operand {
    pub scalar: Scalar,
    pub layout: Layout,
    /// The step's input it reads, or the output it writes.
    pub arg: Arg,
}

/// Merges axes every layout walks contiguously and drops axes of size 1.
fn coalesce(dims: &[usize], layouts: &mut [&mut Layout]) -> Vec<usize> {
    let mut out_dims: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<i64>> = vec![Vec::new(); layouts.len()];
    for (a, &d) in dims.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let mergeable = !out_dims.is_empty()
            && layouts.iter().enumerate().all(|(k, l)| {
                let prev = *out_strides[k].last().unwrap_or(&0);
                prev == l.strides[a] * d as i64
            });
        if mergeable {
            let last = out_dims.len() - 1;
            out_dims[last] *= d;
            for (k, l) in layouts.iter().enumerate() {
                let n = out_strides[k].len();
                out_strides[k][n - 1] = l.strides[a];
            }
        } else {
            out_dims.push(d);
            for (k, l) in layouts.iter().enumerate() {
                out_strides[k].push(l.strides[a]);
            }
        }
    }
    for (l, s) in layouts.iter_mut().zip(out_strides) {
        l.strides = s;
    }
    out_dims
}

/// `expr` with its placeholders `$0`, `$1`, ... replaced by `names`.
pub fn bind_names(expr: &str, names: &[String]) -> String {
    let mut out = expr.to_string();
    // From the highest, so that `$1` does not take the start of `$10`.
    for (k, name) in names.iter().enumerate().rev() {
        out = out.replace(&format!("${k}"), name);
    }
    out
}

/// A map kernel: `out = expr($0, $1, ...)` at every point of `space`, `$k` being input k in its
/// storage type; `expr` must give the output's.
pub fn map(io: &StepIo, space: &[usize], inputs: Vec<Operand>, output: Operand, expr: &str) -> Result<Dispatch> {
    let names: Vec<String> = (0..inputs.len()).map(|k| format!("x{k}")).collect();
    map_with(io, space, inputs, output, "", &bind_names(expr, &names))
}

/// A map kernel whose body first runs `lets` (statements over the inputs `x0`, `x1`, ...), then
/// stores `expr`.
pub fn map_with(
    io: &StepIo,
    space: &[usize],
    inputs: Vec<Operand>,
    mut output: Operand,
    lets: &str,
    expr: &str,
) -> Result<Dispatch> {
    let n: usize = space.iter().product();
    let mut inputs = inputs;
    let dims = {
        let mut all: Vec<&mut Layout> = inputs.iter_mut().map(|o| &mut o.layout).collect();
        all.push(&mut output.layout);
        coalesce(space, &mut all)
    };
    let rank = dims.len();
    if rank > MAX_RANK {
        return Err(io.refuse(format!("{rank} axes that do not merge (at most {MAX_RANK})")));
    }
    let flat = |l: &Layout| l.base == 0 && l.strides == Layout::contiguous(&dims).strides;
    let mut params = vec![word(rank)];
    params.extend((0..MAX_RANK).map(|a| word(*dims.get(a).unwrap_or(&1))));
    let mut src = prelude();
    let mut decl = String::new();
    let mut body = String::new();
    let mut offsets = Vec::new();
    let mut args = Vec::new();
    let operands: Vec<&Operand> = inputs.iter().chain(std::iter::once(&output)).collect();
    for (k, o) in operands.iter().enumerate() {
        let is_out = k == inputs.len();
        let name = if is_out { "out0".to_string() } else { format!("in{k}") };
        decl.push_str(&binding(k + 1, &name, o.scalar, is_out));
        args.push(o.arg);
        if flat(&o.layout) {
            offsets.push(None);
        } else {
            let at = params.len() + 1; // p(0) is n
            params.push(iword(o.layout.base));
            params.extend((0..MAX_RANK).map(|a| iword(*o.layout.strides.get(a).unwrap_or(&0))));
            offsets.push(Some(at));
        }
    }
    let strided: Vec<(usize, usize)> = offsets
        .iter()
        .enumerate()
        .filter_map(|(k, o)| o.map(|at| (k, at)))
        .collect();
    if !strided.is_empty() {
        for (k, at) in &strided {
            body.push_str(&format!("    var o{k} = pi({at}u);\n"));
        }
        body.push_str("    var rem = i;\n    for (var a = i32(p(1u)) - 1; a >= 0; a = a - 1) {\n");
        body.push_str("        let d = p(2u + u32(a));\n        let c = i32(rem % d);\n        rem = rem / d;\n");
        for (k, at) in &strided {
            body.push_str(&format!("        o{k} = o{k} + c * pi({}u + u32(a));\n", at + 1));
        }
        body.push_str("    }\n");
    }
    let index = |k: usize| match offsets[k] {
        None => "i".to_string(),
        Some(_) => format!("u32(o{k})"),
    };
    for k in 0..inputs.len() {
        body.push_str(&format!("    let x{k} = in{k}[{}];\n", index(k)));
    }
    body.push_str(lets);
    body.push_str(&format!("    out0[{}] = {expr};\n}}\n", index(inputs.len())));
    src.push_str(&decl);
    src.push_str(&math::library_for(&format!("{lets}{expr}")));
    src.push_str(ENTRY_1D);
    src.push_str(&body);
    Ok(dispatch_1d(src, args, n, params))
}

/// An input read as broadcast to the output.
fn input(io: &StepIo, i: usize, out: &[usize]) -> Result<Operand> {
    Ok(Operand {
        scalar: io.scalar_in(i)?,
        layout: Layout::broadcast(&io.ins[i].shape, out),
        arg: Arg::In(i),
    })
}

fn output(io: &StepIo, i: usize) -> Result<Operand> {
    Ok(Operand {
        scalar: io.scalar_out(i)?,
        layout: Layout::contiguous(&io.outs[i].shape),
        arg: Arg::Out(i),
    })
}

/// A float literal WGSL reads back to the same f32.
pub fn flit(v: f64) -> String {
    // By its bits: exact. Infinities and NaN (which WGSL has no literal for, and which Chromium's
    // Tint refuses as constants) come from the prelude's functions.
    let x = v as f32;
    if x.is_nan() {
        "nan_f()".to_string()
    } else if x.is_infinite() {
        if x > 0.0 { "inf_f()" } else { "-inf_f()" }.to_string()
    } else {
        format!("bitcast<f32>({}u)", x.to_bits())
    }
}

fn unary_expr(u: Unary, s: Scalar) -> Option<String> {
    let x = "$0";
    let e = match (u, s) {
        (Unary::Abs, _) => format!("abs({x})"),
        (Unary::Neg, _) => format!("-{x}"),
        (Unary::Sign, Scalar::F32) => format!("sign({x})"),
        (Unary::Sign, Scalar::I32) => format!("select(select(0, -1, {x} < 0), 1, {x} > 0)"),
        (Unary::Relu, Scalar::F32) => format!("max({x}, 0.0)"),
        (Unary::Relu, Scalar::I32) => format!("max({x}, 0)"),
        (Unary::Not, Scalar::I32) => format!("select(0, 1, {x} == 0)"),
        (Unary::Clip { min, max }, Scalar::F32) => {
            let lo = min.map_or(x.to_string(), |m| format!("max({x}, {})", flit(m)));
            max.map_or(lo.clone(), |m| format!("min({lo}, {})", flit(m)))
        }
        (Unary::Clip { min, max }, Scalar::I32) => {
            let lo = min.map_or(x.to_string(), |m| format!("max({x}, {})", m as i64 as i32));
            max.map_or(lo.clone(), |m| format!("min({lo}, {})", m as i64 as i32))
        }
        (_, Scalar::I32) => return None,
        (Unary::Sqrt, _) => format!("sqrt({x})"),
        (Unary::Reciprocal, _) => format!("1.0 / {x}"),
        (Unary::Exp, _) => format!("exp({x})"),
        (Unary::Log, _) => format!("log({x})"),
        (Unary::Sin, _) => format!("sincos_f({x}).x"),
        (Unary::Cos, _) => format!("sincos_f({x}).y"),
        (Unary::Tan, _) => format!("(sincos_f({x}).x / sincos_f({x}).y)"),
        (Unary::Asin, _) => format!("asin({x})"),
        (Unary::Acos, _) => format!("acos({x})"),
        (Unary::Atan, _) => format!("atan({x})"),
        (Unary::Sinh, _) => format!("sinh({x})"),
        (Unary::Cosh, _) => format!("cosh({x})"),
        (Unary::Asinh, _) => format!("asinh({x})"),
        (Unary::Acosh, _) => format!("acosh({x})"),
        (Unary::Atanh, _) => format!("atanh({x})"),
        (Unary::Tanh, _) => format!("tanh_f({x})"),
        (Unary::Erf, _) => format!("erf_f({x})"),
        (Unary::Sigmoid, _) => format!("1.0 / (1.0 + exp(-{x}))"),
        (Unary::Floor, _) => format!("floor({x})"),
        (Unary::Ceil, _) => format!("ceil({x})"),
        (Unary::Round, _) => format!("round({x})"),
        (Unary::Softplus, _) => format!("softplus_f({x})"),
        (Unary::Softsign, _) => format!("{x} / (1.0 + abs({x}))"),
        (Unary::Not, _) => return None,
        (Unary::IsNaN, _) => format!("select(0, 1, is_nan_f({x}))"),
        (Unary::IsInf { positive, negative }, _) => {
            format!("select(0, 1, is_inf_f({x}) && (({x} > 0.0 && {positive}) || ({x} < 0.0 && {negative})))")
        }
        (Unary::LeakyRelu { alpha }, _) => format!("select({} * {x}, {x}, {x} >= 0.0)", flit(alpha as f64)),
        (Unary::Elu { alpha }, _) => format!("select({} * (exp({x}) - 1.0), {x}, {x} >= 0.0)", flit(alpha as f64)),
        (Unary::Celu { alpha }, _) => {
            let a = flit(alpha as f64);
            format!("max({x}, 0.0) + min(0.0, {a} * (exp({x} / {a}) - 1.0))")
        }
        (Unary::Selu { alpha, gamma }, _) => format!(
            "{} * select({} * (exp({x}) - 1.0), {x}, {x} > 0.0)",
            flit(gamma as f64),
            flit(alpha as f64)
        ),
        (Unary::HardSigmoid { alpha, beta }, _) => {
            format!("clamp({} * {x} + {}, 0.0, 1.0)", flit(alpha as f64), flit(beta as f64))
        }
        (Unary::HardSwish, _) => format!("{x} * clamp({x} / 6.0 + 0.5, 0.0, 1.0)"),
        (Unary::ThresholdedRelu { alpha }, _) => format!("select(0.0, {x}, {x} > {})", flit(alpha as f64)),
        (Unary::Mish, _) => format!("{x} * tanh_f(softplus_f({x}))"),
        (Unary::Gelu { tanh: false }, _) => format!("0.5 * {x} * (1.0 + erf_f({x} * 0.70710678118654752))"),
        (Unary::Gelu { tanh: true }, _) => {
            format!("0.5 * {x} * (1.0 + tanh_f(0.79788456080286536 * ({x} + 0.044715 * {x} * {x} * {x})))")
        }
        (Unary::Shrink { bias, lambd }, _) => {
            let (b, l) = (flit(bias as f64), flit(lambd as f64));
            format!("select(select(0.0, {x} - {b}, {x} > {l}), {x} + {b}, {x} < -{l})")
        }
    };
    Some(e)
}

fn binary_expr(b: Binary, s: Scalar, exponent: Option<f64>) -> Option<String> {
    let (a, c) = ("$0", "$1");
    let flag = |cond: String| format!("select(0, 1, {cond})");
    let e = match (b, s) {
        (Binary::Add, _) => format!("{a} + {c}"),
        (Binary::Sub, _) => format!("{a} - {c}"),
        (Binary::Mul, _) => format!("{a} * {c}"),
        (Binary::Div, Scalar::F32) => format!("{a} / {c}"),
        (Binary::Div, Scalar::I32) => format!("select({a} / {c}, 0, {c} == 0)"),
        (Binary::Pow, Scalar::F32) => match exponent {
            Some(2.0) => format!("{a} * {a}"),
            Some(3.0) => format!("{a} * {a} * {a}"),
            Some(1.0) => a.to_string(),
            Some(0.5) => format!("sqrt({a})"),
            _ => format!("pow_f({a}, {c})"),
        },
        (Binary::Pow, Scalar::I32) => format!("pow_i({a}, {c})"),
        (Binary::Mod { fmod: true }, Scalar::F32) => format!("fmod_f({a}, {c})"),
        (Binary::Mod { fmod: true }, Scalar::I32) => format!("select({a} % {c}, 0, {c} == 0)"),
        (Binary::Mod { fmod: false }, Scalar::I32) => format!("mod_i({a}, {c})"),
        (Binary::Mod { fmod: false }, Scalar::F32) => format!("mod_f({a}, {c})"),
        (Binary::Min, _) => format!("min({a}, {c})"),
        (Binary::Max, _) => format!("max({a}, {c})"),
        (Binary::Equal, _) => flag(format!("{a} == {c}")),
        (Binary::Less, _) => flag(format!("{a} < {c}")),
        (Binary::LessOrEqual, _) => flag(format!("{a} <= {c}")),
        (Binary::Greater, _) => flag(format!("{a} > {c}")),
        (Binary::GreaterOrEqual, _) => flag(format!("{a} >= {c}")),
        (Binary::And, Scalar::I32) => flag(format!("{a} != 0 && {c} != 0")),
        (Binary::Or, Scalar::I32) => flag(format!("{a} != 0 || {c} != 0")),
        (Binary::Xor, Scalar::I32) => flag(format!("({a} != 0) != ({c} != 0)")),
        (Binary::PRelu, Scalar::F32) => format!("select({a} * {c}, {a}, {a} >= 0.0)"),
        (Binary::PRelu, Scalar::I32) => format!("select({a} * {c}, {a}, {a} >= 0)"),
        (Binary::BitwiseAnd, Scalar::I32) => format!("{a} & {c}"),
        (Binary::BitwiseOr, Scalar::I32) => format!("{a} | {c}"),
        (Binary::BitwiseXor, Scalar::I32) => format!("{a} ^ {c}"),
        // Shifts are defined on unsigned types; uint8 held in i32 shifts the same.
        // A shift by the width or more, or by a negative amount, gives 0 (or -1 shifting a
        // negative value right), as the reference does; WGSL would take the amount mod 32.
        (Binary::BitShiftLeft, Scalar::I32) => format!("select(0, {a} << u32({c}), {c} >= 0 && {c} < 32)"),
        (Binary::BitShiftRight, Scalar::I32) => {
            format!("select(select(0, -1, {a} < 0), {a} >> u32({c}), {c} >= 0 && {c} < 32)")
        }
        _ => return None,
    };
    Some(e)
}

fn cast_expr(from: Scalar, to: &ValueType) -> String {
    use hwcov_core::DType;
    match (from, to.dtype) {
        (Scalar::F32, DType::Bool) => "select(0, 1, $0 != 0.0)".into(),
        (Scalar::I32, DType::Bool) => "select(0, 1, $0 != 0)".into(),
        // uint8 holds 0..255: numpy wraps, as the host does when it reads the i32 back.
        (Scalar::F32, DType::F32) | (Scalar::I32, DType::I32 | DType::I64 | DType::U8) => "$0".into(),
        (Scalar::F32, _) => "i32($0)".into(),
        (Scalar::I32, _) => "f32($0)".into(),
    }
}

/// The expression of an elementwise step that can join a fused group (Unary, Binary, Where, Cast,
/// Expand), over its inputs `$0`, `$1`, ...; `None` for other ops.
pub fn fusable_expr(io: &StepIo) -> Result<Option<String>> {
    let e = match &io.step.op {
        Op::Unary(u) => {
            let s = io.scalar_in(0)?;
            unary_expr(*u, s).ok_or_else(|| io.refuse(format!("{u:?} on {}", io.ins[0].dtype)))?
        }
        Op::Binary(b) => {
            let (sa, sb) = (io.scalar_in(0)?, io.scalar_in(1)?);
            let exponent = io.consts[1].filter(|t| t.len() == 1).map(|t| t.to_f64_vec()[0]);
            let e = match (b, sa, sb) {
                _ if sa == sb => binary_expr(*b, sa, exponent),
                (Binary::Pow, Scalar::F32, Scalar::I32) => Some("pow_f($0, f32($1))".to_string()),
                (Binary::Pow, Scalar::I32, Scalar::F32) => Some("i32(pow_f(f32($0), $1))".to_string()),
                _ => None,
            };
            e.ok_or_else(|| io.refuse(format!("{b:?} of {} and {}", io.ins[0].dtype, io.ins[1].dtype)))?
        }
        Op::Where => "select($2, $1, $0 != 0)".to_string(),
        Op::Cast => cast_expr(io.scalar_in(0)?, &io.outs[0]),
        Op::Expand => "$0".to_string(),
        _ => return Ok(None),
    };
    io.scalar_out(0)?;
    Ok(Some(e))
}

/// Unary, Binary, Where, Cast, Expand, BatchNormalization and Range.
pub fn elementwise(io: &StepIo) -> Result<Kernels> {
    let out = &io.outs[0].shape;
    let so = io.scalar_out(0)?;
    let d = if let Some(e) = fusable_expr(io)? {
        let inputs = (0..io.ins.len()).map(|i| input(io, i, out)).collect::<Result<_>>()?;
        map(io, out, inputs, output(io, 0)?, &e)?
    } else {
        match &io.step.op {
            Op::Range => {
                // One axis, so the thread's index is the position.
                let e = if so == Scalar::F32 {
                    "$0 + f32(i) * $2"
                } else {
                    "$0 + i32(i) * $2"
                };
                let inputs = vec![input(io, 0, out)?, input(io, 1, out)?, input(io, 2, out)?];
                map(io, out, inputs, output(io, 0)?, e)?
            }
            Op::BatchNorm { epsilon } => {
                if so != Scalar::F32 {
                    return Err(io.refuse(format!("BatchNormalization on {}", io.outs[0].dtype)));
                }
                // Scale, bias, mean and variance run along axis 1.
                let per_channel = |i: usize| -> Result<Operand> {
                    let mut strides = vec![0i64; out.len()];
                    strides[1] = 1;
                    Ok(Operand {
                        scalar: io.scalar_in(i)?,
                        layout: Layout { base: 0, strides },
                        arg: Arg::In(i),
                    })
                };
                let e = format!("($0 - $3) / sqrt($4 + {}) * $1 + $2", flit(*epsilon as f64));
                let inputs = vec![
                    input(io, 0, out)?,
                    per_channel(1)?,
                    per_channel(2)?,
                    per_channel(3)?,
                    per_channel(4)?,
                ];
                map(io, out, inputs, output(io, 0)?, &e)?
            }
            _ => return Err(io.refuse("this op")),
        }
    };
    Ok(Kernels {
        dispatches: vec![d],
        ..Default::default()
    })
}

/// Where a member of a fused group reads input k from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// External operand j of the group.
    External(usize),
    /// The value of the group's member m.
    Member(usize),
}

/// One step of a fused group: its expression and where each of its inputs comes from.
pub struct Member {
    pub expr: String,
    pub sources: Vec<Source>,
}

/// One kernel for a group of elementwise steps: `members` in order, the last being the group's
/// root (`io`), every value between them computed in registers for each element of the root's
/// output. A member whose output is smaller (broadcast to the root's) is recomputed per element.
pub fn fused(io: &StepIo, externals: Vec<(Scalar, Vec<usize>, Arg)>, members: &[Member]) -> Result<Kernels> {
    let out = &io.outs[0].shape;
    let inputs = externals
        .into_iter()
        .map(|(scalar, shape, arg)| Operand {
            scalar,
            layout: Layout::broadcast(&shape, out),
            arg,
        })
        .collect();
    let name = |s: &Source| match s {
        Source::External(j) => format!("x{j}"),
        Source::Member(m) => format!("t{m}"),
    };
    let mut lets = String::new();
    let (root, rest) = members.split_last().ok_or_else(|| io.refuse("an empty fused group"))?;
    for (m, member) in rest.iter().enumerate() {
        let names: Vec<String> = member.sources.iter().map(name).collect();
        lets.push_str(&format!("    let t{m} = {};\n", bind_names(&member.expr, &names)));
    }
    let names: Vec<String> = root.sources.iter().map(name).collect();
    let d = map_with(io, out, inputs, output(io, 0)?, &lets, &bind_names(&root.expr, &names))?;
    Ok(Kernels {
        dispatches: vec![d],
        ..Default::default()
    })
}

/// Transpose, Slice, Tile, Concat, Split: copies with strided reads or writes.
pub fn layout(io: &StepIo) -> Result<Kernels> {
    let s = io.scalar_in(0)?;
    let mut dispatches = Vec::new();
    match &io.step.op {
        Op::Transpose { perm } => {
            let own = strides(&io.ins[0].shape);
            let layout = Layout {
                base: 0,
                strides: perm.iter().map(|&p| own[p] as i64).collect(),
            };
            let src = Operand {
                scalar: s,
                layout,
                arg: Arg::In(0),
            };
            dispatches.push(map(io, &io.outs[0].shape, vec![src], output(io, 0)?, "$0")?);
        }
        Op::Slice { starts, steps } => {
            let own = strides(&io.ins[0].shape);
            let layout = Layout {
                base: starts.iter().zip(&own).map(|(&s, &st)| (s * st) as i64).sum(),
                strides: steps.iter().zip(&own).map(|(&k, &st)| k * st as i64).collect(),
            };
            let src = Operand {
                scalar: s,
                layout,
                arg: Arg::In(0),
            };
            dispatches.push(map(io, &io.outs[0].shape, vec![src], output(io, 0)?, "$0")?);
        }
        Op::Tile => {
            // Tile is a broadcast over doubled axes: (rep, dim) read as (0-stride, stride).
            let (ins, outs) = (&io.ins[0].shape, &io.outs[0].shape);
            let own = strides(ins);
            let mut space = Vec::new();
            let mut read = Vec::new();
            for a in 0..ins.len() {
                space.push(outs[a] / ins[a].max(1));
                read.push(0i64);
                space.push(ins[a]);
                read.push(own[a] as i64);
            }
            let src = Operand {
                scalar: s,
                layout: Layout { base: 0, strides: read },
                arg: Arg::In(0),
            };
            let dst = Operand {
                scalar: s,
                layout: Layout {
                    base: 0,
                    strides: tile_write_strides(ins, outs),
                },
                arg: Arg::Out(0),
            };
            dispatches.push(map(io, &space, vec![src], dst, "$0")?);
        }
        Op::Concat { axis } => {
            let out = &io.outs[0].shape;
            let ost = strides(out);
            let mut at = 0usize;
            for (i, t) in io.ins.iter().enumerate() {
                if t.numel() > 0 {
                    let src = Operand {
                        scalar: io.scalar_in(i)?,
                        layout: Layout::contiguous(&t.shape),
                        arg: Arg::In(i),
                    };
                    let dst = Operand {
                        scalar: s,
                        layout: Layout {
                            base: (at * ost[*axis]) as i64,
                            strides: ost.iter().map(|&x| x as i64).collect(),
                        },
                        arg: Arg::Out(0),
                    };
                    dispatches.push(map(io, &t.shape, vec![src], dst, "$0")?);
                }
                at += t.shape[*axis];
            }
        }
        Op::Split { axis } => {
            let own = strides(&io.ins[0].shape);
            let mut at = 0usize;
            for (k, t) in io.outs.iter().enumerate() {
                if t.numel() > 0 {
                    let src = Operand {
                        scalar: s,
                        layout: Layout {
                            base: (at * own[*axis]) as i64,
                            strides: own.iter().map(|&x| x as i64).collect(),
                        },
                        arg: Arg::In(0),
                    };
                    dispatches.push(map(io, &t.shape, vec![src], output(io, k)?, "$0")?);
                }
                at += t.shape[*axis];
            }
        }
        _ => return Err(io.refuse("this op")),
    }
    Ok(Kernels {
        dispatches,
        ..Default::default()
    })
}

/// Output strides for Tile's doubled axes: (rep, dim) written at (dim * stride, stride).
fn tile_write_strides(ins: &[usize], outs: &[usize]) -> Vec<i64> {
    let ost = strides(outs);
    let mut w = Vec::new();
    for a in 0..ins.len() {
        w.push((ins[a] * ost[a]) as i64);
        w.push(ost[a] as i64);
    }
    w
}

/// Pad: every output element reads its source coordinate or the fill value.
pub fn pad(io: &StepIo) -> Result<Kernels> {
    let Op::Pad { pads, mode, value } = &io.step.op else {
        return Err(io.refuse("this op"));
    };
    let s = io.scalar_in(0)?;
    let (ins, out) = (&io.ins[0].shape, &io.outs[0].shape);
    let rank = out.len();
    let own = strides(ins);
    let mut params = vec![word(rank)];
    params.extend((0..MAX_RANK).map(|a| word(*out.get(a).unwrap_or(&1))));
    params.extend((0..MAX_RANK).map(|a| word(*ins.get(a).unwrap_or(&1))));
    params.extend((0..MAX_RANK).map(|a| word(*own.get(a).unwrap_or(&0))));
    params.extend((0..MAX_RANK).map(|a| iword(pads.get(a).map_or(0, |p| p.0))));
    let fill = match s {
        Scalar::F32 => flit(*value),
        Scalar::I32 => format!("{}", *value as i64 as i32),
    };
    // Each mode maps a coordinate c outside 0..n back inside, or marks it for the fill value.
    let fix = match mode {
        PadMode::Constant => "if (c < 0 || c >= n) { inside = false; }",
        PadMode::Edge => "c = clamp(c, 0, n - 1);",
        PadMode::Wrap => "c = ((c % n) + n) % n;",
        PadMode::Reflect => {
            "if (n == 1) { c = 0; } else { let period = 2 * (n - 1); c = ((c % period) + period) % period; if (c >= n) { c = period - c; } }"
        }
    };
    let src = format!(
        "{}{}{}{}    var rem = i;\n    var off = 0;\n    var inside = true;\n    for (var a = i32(p(1u)) - 1; a >= 0; a = a - 1) {{\n        let d = p(2u + u32(a));\n        var c = i32(rem % d) - pi(26u + u32(a));\n        rem = rem / d;\n        let n = i32(p(10u + u32(a)));\n        {fix}\n        off = off + c * i32(p(18u + u32(a)));\n    }}\n    if (inside) {{ out0[i] = in0[u32(off)]; }} else {{ out0[i] = {fill}; }}\n}}\n",
        prelude(),
        binding(1, "in0", s, false) + &binding(2, "out0", s, true),
        "",
        ENTRY_1D
    );
    Ok(one_to_one(io, src, params))
}

/// Trilu: keeps the elements on one side of the diagonal k of the last two axes.
pub fn trilu(io: &StepIo) -> Result<Kernels> {
    let Op::Trilu { upper, k } = &io.step.op else {
        return Err(io.refuse("this op"));
    };
    let s = io.scalar_in(0)?;
    let shape = &io.outs[0].shape;
    let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let keep = if *upper { "j - r >= pi(3u)" } else { "j - r <= pi(3u)" };
    let zero = if s == Scalar::F32 { "0.0" } else { "0" };
    let src = format!(
        "{}{}{}{ENTRY_1D}    let j = i32(i % p(1u));\n    let r = i32((i / p(1u)) % p(2u));\n    out0[i] = select({zero}, in0[i], {keep});\n}}\n",
        prelude(),
        binding(1, "in0", s, false),
        binding(2, "out0", s, true),
    );
    let params = vec![word(cols), word(rows), iword(*k)];
    Ok(one_to_one(io, src, params))
}
