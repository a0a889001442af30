//! Ops that move or select elements, and those whose result is a shape: Shape, Size, Reshape and
//! the other views, Transpose, Expand, Tile, Concat, Split, Slice, Pad, the gathers and scatters,
//! NonZero, ConstantOfShape, Range, CumSum, Trilu, OneHot.

use super::*;

/// Shape (with opset 15's start and end): a constant once the input's shape is known.
pub(super) fn shape_of(cx: Cx, node: &Node) -> Result<()> {
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

/// Size: a constant once the input's shape is known.
pub(super) fn size_of(cx: Cx, node: &Node) -> Result<()> {
    let t = cx.ty(&cx.required(node, 0)?);
    cx.bind(node, 0, konst(HostTensor::i64(vec![], vec![t.numel() as i64])?));
    Ok(())
}

/// Identity: the input itself.
pub(super) fn identity(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    cx.bind(node, 0, x);
    Ok(())
}

/// Flatten: a view of the input as a matrix split at `axis`.
pub(super) fn flatten(cx: Cx, node: &Node) -> Result<()> {
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

/// Transpose, by `perm` (reversed axes by default).
pub(super) fn transpose_node(cx: Cx, node: &Node) -> Result<()> {
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

/// Expand to a shape that must be known (a constant, or an input fed with its value).
pub(super) fn expand_node(cx: Cx, node: &Node) -> Result<()> {
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

/// Tile by known repeats.
pub(super) fn tile(cx: Cx, node: &Node) -> Result<()> {
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

pub(super) fn reshape(cx: Cx, node: &Node) -> Result<()> {
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
pub(super) fn axes_of(cx: &mut Specializer, node: &Node, input_from: i64, rank: usize) -> Result<Option<Vec<usize>>> {
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

pub(super) fn squeeze(cx: Cx, node: &Node) -> Result<()> {
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

pub(super) fn unsqueeze(cx: Cx, node: &Node) -> Result<()> {
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

pub(super) fn concat(cx: Cx, node: &Node) -> Result<()> {
    let vals: Vec<Val> = (0..node.inputs.len())
        .map(|i| cx.required(node, i))
        .collect::<Result<_>>()?;
    let types: Vec<ValueType> = vals.iter().map(|v| cx.ty(v)).collect();
    let first = types.first().ok_or_else(|| cx.node_error(node, "has no inputs"))?;
    // norm_axis lets axis 0 through for rank 0, which has no axis to join on.
    if first.rank() == 0 {
        return Err(cx.node_error(node, "cannot join scalars: its inputs need rank 1 or more"));
    }
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

pub(super) fn split(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    let axis = norm_axis(cx, node, node.int("axis").unwrap_or(0), t.rank())?;
    let n = node.outputs.len();
    // norm_axis lets axis 0 through for rank 0, which has no axis to split.
    let len = *t
        .shape
        .get(axis)
        .ok_or_else(|| cx.node_error(node, "cannot split a scalar: its input needs rank 1 or more"))?;
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
pub(super) fn slice_axis(dim: usize, start: i64, end: i64, step: i64) -> (usize, usize) {
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

pub(super) fn slice(cx: Cx, node: &Node) -> Result<()> {
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
        // Without `axes`, starts run over the leading axes: there may be more than the input has.
        let Some(&dim) = t.shape.get(a) else {
            return Err(cx.node_error(node, format!("slices axis {a} of an input of rank {}", t.rank())));
        };
        let (s, n) = slice_axis(dim, starts[i], ends[i], steps[i]);
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

pub(super) fn pad(cx: Cx, node: &Node) -> Result<()> {
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

pub(super) fn gather(cx: Cx, node: &Node) -> Result<()> {
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

/// GatherElements along one axis.
pub(super) fn gather_elements(cx: Cx, node: &Node) -> Result<()> {
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

pub(super) fn gather_nd(cx: Cx, node: &Node) -> Result<()> {
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

/// ScatterND: updates written (or combined) at index tuples of the data.
pub(super) fn scatter_nd(cx: Cx, node: &Node) -> Result<()> {
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

/// ScatterElements (and the deprecated Scatter) along one axis.
pub(super) fn scatter_elements(cx: Cx, node: &Node) -> Result<()> {
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

pub(super) fn scatter_reduction(cx: &Specializer, node: &Node) -> Result<ScatterReduction> {
    Ok(match node.string("reduction").as_deref().unwrap_or("none") {
        "none" => ScatterReduction::None,
        "add" => ScatterReduction::Add,
        "mul" => ScatterReduction::Mul,
        "max" => ScatterReduction::Max,
        "min" => ScatterReduction::Min,
        other => return Err(cx.node_error(node, format!("unknown reduction `{other}`"))),
    })
}

/// NonZero: folded for a constant; otherwise a step whose count the device reports before the
/// plan can go on.
pub(super) fn nonzero_node(cx: Cx, node: &Node) -> Result<()> {
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

/// NonZero of a host tensor: the count and the (rank, count) indices.
pub(super) fn nonzero(t: &HostTensor) -> (usize, Vec<i64>) {
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

/// ConstantOfShape: an Expand of its one-element value to a known shape.
pub(super) fn constant_of_shape(cx: Cx, node: &Node) -> Result<()> {
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

pub(super) fn range(cx: Cx, node: &Node) -> Result<()> {
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

/// CumSum along a known axis, exclusive or reversed as asked.
pub(super) fn cumsum(cx: Cx, node: &Node) -> Result<()> {
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

/// Trilu: the lower or upper triangle of the last two axes from diagonal k.
pub(super) fn trilu(cx: Cx, node: &Node) -> Result<()> {
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

pub(super) fn one_hot(cx: Cx, node: &Node) -> Result<()> {
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
