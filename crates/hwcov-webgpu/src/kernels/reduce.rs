//! Kernels that reduce: Softmax and Hardmax along an axis, LayerNormalization and
//! InstanceNormalization over a row, the Reduce ops over any axes, ArgMax/ArgMin, CumSum. Each
//! output row (or element) is one workgroup of 256 threads that strides over its elements and
//! combines the partial results in workgroup memory.

use hwcov_core::{DType, Result};
use hwcov_onnx::ir::{Op, ReduceKind};

use super::{
    Arg, Dispatch, ENTRY_1D, Kernels, MAX_RANK, Scalar, StepIo, binding, dispatch_1d, fword, grid, prelude, strides,
    word,
};

/// The entry point of a kernel with one workgroup per row: `row` is uniform across the workgroup.
const ENTRY_ROW: &str = "@compute @workgroup_size(256)\n\
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {\n\
    let row = wid.y * nwg.x + wid.x;\n\
    if (row >= p(0u)) { return; }\n";

/// Tree reduction of `red` (256 partials) with `op` (a WGSL expression of `a` and `b`).
fn tree(var: &str, op: &str) -> String {
    format!(
        "    for (var s = 128u; s > 0u; s = s >> 1u) {{\n        if (lid < s) {{ let a = {var}[lid]; let b = {var}[lid + s]; {var}[lid] = {op}; }}\n        workgroupBarrier();\n    }}\n"
    )
}

/// A dispatch of one workgroup per row.
fn rows_dispatch(source: String, args: Vec<Arg>, rows: usize, params: Vec<u32>) -> Dispatch {
    let mut all = vec![word(rows)];
    all.extend(params);
    let g = grid(rows * 256);
    Dispatch {
        source,
        args,
        params: all,
        groups: g,
    }
}

fn row_shape(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer: usize = shape[..axis].iter().product();
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    (outer, len, inner)
}

/// Softmax, LogSoftmax, Hardmax along one axis.
pub fn softmax(io: &StepIo) -> Result<Kernels> {
    if io.scalar_in(0)? != Scalar::F32 {
        return Err(io.refuse(format!("{} tensors", io.ins[0].dtype)));
    }
    let (axis, last) = match &io.step.op {
        Op::Softmax { axis, log } => (
            *axis,
            if *log {
                "x - mx - log(total)"
            } else {
                "exp(x - mx) / total"
            },
        ),
        Op::Hardmax { axis } => (*axis, ""),
        _ => return Err(io.refuse("this op")),
    };
    let (outer, len, inner) = row_shape(&io.ins[0].shape, axis);
    let mut s = prelude();
    s.push_str(&binding(1, "in0", Scalar::F32, false));
    s.push_str(&binding(2, "out0", Scalar::F32, true));
    s.push_str("var<workgroup> red: array<f32, 256>;\nvar<workgroup> at: array<u32, 256>;\n");
    s.push_str(ENTRY_ROW);
    s.push_str(
        "    let len = p(1u);\n    let inner = p(2u);\n    let base = (row / inner) * len * inner + row % inner;\n    var m = -inf_f();\n    var mi = 0xffffffffu;\n    for (var k = lid; k < len; k = k + 256u) { let x = in0[base + k * inner]; if (x > m || mi == 0xffffffffu) { m = x; mi = k; } }\n    red[lid] = m;\n    at[lid] = mi;\n    workgroupBarrier();\n",
    );
    if last.is_empty() {
        // Hardmax: the first index of the maximum.
        s.push_str(
            "    for (var s = 128u; s > 0u; s = s >> 1u) {\n        if (lid < s) {\n            let a = red[lid]; let b = red[lid + s]; let ia = at[lid]; let ib = at[lid + s];\n            if (ib != 0xffffffffu && (ia == 0xffffffffu || b > a || (b == a && ib < ia))) { red[lid] = b; at[lid] = ib; }\n        }\n        workgroupBarrier();\n    }\n    let best = at[0];\n    for (var k = lid; k < len; k = k + 256u) { out0[base + k * inner] = select(0.0, 1.0, k == best); }\n}\n",
        );
    } else {
        s.push_str(&tree("red", "max(a, b)"));
        s.push_str("    let mx = red[0];\n    workgroupBarrier();\n    var sum = 0.0;\n    for (var k = lid; k < len; k = k + 256u) { sum = sum + exp(in0[base + k * inner] - mx); }\n    red[lid] = sum;\n    workgroupBarrier();\n");
        s.push_str(&tree("red", "a + b"));
        s.push_str(&format!(
            "    let total = red[0];\n    for (var k = lid; k < len; k = k + 256u) {{ let x = in0[base + k * inner]; out0[base + k * inner] = {last}; }}\n}}\n"
        ));
    }
    let params = vec![word(len), word(inner)];
    Ok(Kernels {
        dispatches: vec![rows_dispatch(s, vec![Arg::In(0), Arg::Out(0)], outer * inner, params)],
        ..Default::default()
    })
}

/// LayerNormalization (rows from `axis` on; optional Mean and InvStdDev outputs) and
/// InstanceNormalization (rows of (N, C) over the spatial axes, scale and bias per channel).
pub fn norm(io: &StepIo) -> Result<Kernels> {
    for i in 0..io.ins.len() {
        if io.scalar_in(i)? != Scalar::F32 {
            return Err(io.refuse(format!("{} tensors", io.ins[i].dtype)));
        }
    }
    let shape = &io.ins[0].shape;
    let (start, eps, per_channel) = match &io.step.op {
        Op::LayerNorm { axis, epsilon } => (*axis, *epsilon, 0usize),
        Op::InstanceNorm { epsilon } => (2, *epsilon, shape[1]),
        _ => return Err(io.refuse("this op")),
    };
    let rows: usize = shape[..start].iter().product();
    let len: usize = shape[start..].iter().product();
    // Scale and bias of LayerNormalization broadcast over the normalized axes from the right:
    // where they match the trailing axes, element k of a row reads element k mod their size.
    let norm_shape = &shape[start..];
    let wrap = |i: usize| -> Result<usize> {
        let t = &io.ins[i];
        let core: Vec<usize> = t.shape.iter().copied().skip_while(|&d| d == 1).collect();
        if per_channel == 0 && !norm_shape.ends_with(&core) {
            return Err(io.refuse(format!(
                "a scale or bias of shape {:?} for rows of {norm_shape:?}",
                t.shape
            )));
        }
        Ok(t.numel().max(1))
    };
    let has_bias = io.ins.len() > 2;
    let stats = io.outs.len() == 3;
    let mut s = prelude();
    s.push_str(&binding(1, "x", Scalar::F32, false));
    s.push_str(&binding(2, "scale", Scalar::F32, false));
    let mut args = vec![Arg::In(0), Arg::In(1)];
    let mut next = 3;
    if has_bias {
        s.push_str(&binding(next, "bias", Scalar::F32, false));
        args.push(Arg::In(2));
        next += 1;
    }
    s.push_str(&binding(next, "out0", Scalar::F32, true));
    args.push(Arg::Out(0));
    if stats {
        s.push_str(&binding(next + 1, "mean_out", Scalar::F32, true));
        s.push_str(&binding(next + 2, "inv_out", Scalar::F32, true));
        args.extend([Arg::Out(1), Arg::Out(2)]);
    }
    s.push_str("var<workgroup> red: array<f32, 256>;\n");
    s.push_str(ENTRY_ROW);
    s.push_str("    let len = p(1u);\n    let base = row * len;\n    var sum = 0.0;\n    for (var k = lid; k < len; k = k + 256u) { sum = sum + x[base + k]; }\n    red[lid] = sum;\n    workgroupBarrier();\n");
    s.push_str(&tree("red", "a + b"));
    s.push_str("    let mean = red[0] / f32(len);\n    workgroupBarrier();\n    var sq = 0.0;\n    for (var k = lid; k < len; k = k + 256u) { let d = x[base + k] - mean; sq = sq + d * d; }\n    red[lid] = sq;\n    workgroupBarrier();\n");
    s.push_str(&tree("red", "a + b"));
    s.push_str("    let inv = 1.0 / sqrt(red[0] / f32(len) + pf(2u));\n");
    let (si, bi) = if per_channel > 0 {
        ("row % p(3u)".to_string(), "row % p(3u)".to_string())
    } else {
        ("k % p(3u)".to_string(), "k % p(4u)".to_string())
    };
    let b = if has_bias {
        format!(" + bias[{bi}]")
    } else {
        String::new()
    };
    s.push_str(&format!(
        "    for (var k = lid; k < len; k = k + 256u) {{ out0[base + k] = (x[base + k] - mean) * inv * scale[{si}]{b}; }}\n"
    ));
    if stats {
        s.push_str("    if (lid == 0u) { mean_out[row] = mean; inv_out[row] = inv; }\n");
    }
    s.push_str("}\n");
    let params = if per_channel > 0 {
        vec![word(len), fword(eps), word(per_channel), word(per_channel)]
    } else {
        vec![
            word(len),
            fword(eps),
            word(wrap(1)?),
            word(if has_bias { wrap(2)? } else { 1 }),
        ]
    };
    Ok(Kernels {
        dispatches: vec![rows_dispatch(s, args, rows, params)],
        ..Default::default()
    })
}

/// Shape parameters shared by Reduce and ArgMax: the kept axes (dims, input strides) give a
/// workgroup's base offset, the reduced axes (dims, input strides) the elements it walks.
fn split_axes(shape: &[usize], reduced: &[usize]) -> Vec<u32> {
    let own = strides(shape);
    let kept: Vec<usize> = (0..shape.len()).filter(|a| !reduced.contains(a)).collect();
    let mut p = vec![word(kept.len())];
    p.extend((0..MAX_RANK).map(|i| word(kept.get(i).map_or(1, |&a| shape[a]))));
    p.extend((0..MAX_RANK).map(|i| word(kept.get(i).map_or(0, |&a| own[a]))));
    p.push(word(reduced.len()));
    p.extend((0..MAX_RANK).map(|i| word(reduced.get(i).map_or(1, |&a| shape[a]))));
    p.extend((0..MAX_RANK).map(|i| word(reduced.get(i).map_or(0, |&a| own[a]))));
    p
}

/// WGSL: `base` of the workgroup's output row and `offset(j)` of its j-th reduced element
/// (parameters as `split_axes` lays them out after p(0) rows and p(1) count).
const AXES_FNS: &str = "fn base_of(row: u32) -> u32 {
    var rem = row;
    var off = 0u;
    for (var a = i32(p(2u)) - 1; a >= 0; a = a - 1) { let d = p(3u + u32(a)); off = off + (rem % d) * p(11u + u32(a)); rem = rem / d; }
    return off;
}
fn offset(j: u32) -> u32 {
    var rem = j;
    var off = 0u;
    for (var a = i32(p(19u)) - 1; a >= 0; a = a - 1) { let d = p(20u + u32(a)); off = off + (rem % d) * p(28u + u32(a)); rem = rem / d; }
    return off;
}
";

/// The Reduce ops.
pub fn reduce(io: &StepIo) -> Result<Kernels> {
    let Op::Reduce { kind, axes, .. } = &io.step.op else {
        return Err(io.refuse("this op"));
    };
    let s = io.scalar_in(0)?;
    let shape = &io.ins[0].shape;
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    let rows = io.outs[0].numel();
    let (ty, zero) = match s {
        Scalar::F32 => ("f32", "0.0"),
        Scalar::I32 => ("i32", "0"),
    };
    let (init, elem, combine, finish) = match (kind, s) {
        (ReduceKind::Sum, _) => (zero.to_string(), "v", "a + b", "r"),
        (ReduceKind::Mean, Scalar::F32) => (zero.to_string(), "v", "a + b", "r / f32(p(1u))"),
        (ReduceKind::Mean, Scalar::I32) => (zero.to_string(), "v", "a + b", "r / i32(p(1u))"),
        (ReduceKind::Max, Scalar::F32) => ("-inf_f()".into(), "v", "max(a, b)", "r"),
        // The maximum of nothing is the lowest value (false for bool).
        (ReduceKind::Max, Scalar::I32) if io.ins[0].dtype == DType::Bool => ("0".into(), "v", "max(a, b)", "r"),
        (ReduceKind::Min, Scalar::I32) if io.ins[0].dtype == DType::Bool => ("1".into(), "v", "min(a, b)", "r"),
        (ReduceKind::Max, Scalar::I32) => ("-2147483647 - 1".into(), "v", "max(a, b)", "r"),
        (ReduceKind::Min, Scalar::F32) => ("inf_f()".into(), "v", "min(a, b)", "r"),
        (ReduceKind::Min, Scalar::I32) => ("2147483647".into(), "v", "min(a, b)", "r"),
        (ReduceKind::Prod, Scalar::F32) => ("1.0".into(), "v", "a * b", "r"),
        (ReduceKind::Prod, Scalar::I32) => ("1".into(), "v", "a * b", "r"),
        (ReduceKind::L1, _) => (zero.to_string(), "abs(v)", "a + b", "r"),
        (ReduceKind::SumSquare, _) => (zero.to_string(), "v * v", "a + b", "r"),
        (ReduceKind::L2, Scalar::F32) => (zero.to_string(), "v * v", "a + b", "sqrt(r)"),
        (ReduceKind::LogSum, Scalar::F32) => (zero.to_string(), "v", "a + b", "log(r)"),
        (ReduceKind::LogSumExp, Scalar::F32) => (zero.to_string(), "exp(v)", "a + b", "log(r)"),
        (k, _) => return Err(io.refuse(format!("{k:?} on {}", io.ins[0].dtype))),
    };
    let mut src = prelude();
    src.push_str(&binding(1, "in0", s, false));
    src.push_str(&binding(2, "out0", s, true));
    src.push_str(&format!("var<workgroup> red: array<{ty}, 256>;\n"));
    src.push_str(AXES_FNS);
    src.push_str(ENTRY_ROW);
    src.push_str(&format!(
        "    let base = base_of(row);\n    var acc: {ty} = {init};\n    for (var j = lid; j < p(1u); j = j + 256u) {{ let v = in0[base + offset(j)]; let a = acc; let b = {elem}; acc = {combine}; }}\n    red[lid] = acc;\n    workgroupBarrier();\n"
    ));
    src.push_str(&tree("red", combine));
    src.push_str(&format!(
        "    if (lid == 0u) {{ let r = red[0]; out0[row] = {finish}; }}\n}}\n"
    ));
    let mut params = vec![word(count)];
    params.extend(split_axes(shape, axes));
    Ok(Kernels {
        dispatches: vec![rows_dispatch(src, vec![Arg::In(0), Arg::Out(0)], rows, params)],
        ..Default::default()
    })
}

/// ArgMax and ArgMin: the first (or last) index of the extreme along the axis.
pub fn arg_reduce(io: &StepIo) -> Result<Kernels> {
    let Op::ArgReduce {
        max, axis, select_last, ..
    } = &io.step.op
    else {
        return Err(io.refuse("this op"));
    };
    let s = io.scalar_in(0)?;
    let shape = &io.ins[0].shape;
    let ty = s.wgsl();
    let better = if *max { "b > a" } else { "b < a" };
    // Ties go to the smaller index, or the larger with select_last_index.
    let tie = if *select_last { "ib > ia" } else { "ib < ia" };
    let mut src = prelude();
    src.push_str(&binding(1, "in0", s, false));
    src.push_str(&binding(2, "out0", Scalar::I32, true));
    src.push_str(&format!(
        "var<workgroup> red: array<{ty}, 256>;\nvar<workgroup> at: array<u32, 256>;\n"
    ));
    src.push_str(AXES_FNS);
    src.push_str(ENTRY_ROW);
    src.push_str(&format!(
        "    let base = base_of(row);\n    var best = in0[base];\n    var bi = 0xffffffffu;\n    for (var j = lid; j < p(1u); j = j + 256u) {{\n        let b = in0[base + offset(j)];\n        let a = best;\n        let ia = bi;\n        let ib = j;\n        if (ia == 0xffffffffu || {better} || (b == a && {tie})) {{ best = b; bi = j; }}\n    }}\n    red[lid] = best;\n    at[lid] = bi;\n    workgroupBarrier();\n    for (var s = 128u; s > 0u; s = s >> 1u) {{\n        if (lid < s) {{\n            let a = red[lid]; let b = red[lid + s]; let ia = at[lid]; let ib = at[lid + s];\n            if (ib != 0xffffffffu && (ia == 0xffffffffu || {better} || (b == a && {tie}))) {{ red[lid] = b; at[lid] = ib; }}\n        }}\n        workgroupBarrier();\n    }}\n    if (lid == 0u) {{ out0[row] = i32(at[0]); }}\n}}\n"
    ));
    let mut params = vec![word(shape[*axis])];
    params.extend(split_axes(shape, &[*axis]));
    Ok(Kernels {
        dispatches: vec![rows_dispatch(
            src,
            vec![Arg::In(0), Arg::Out(0)],
            io.outs[0].numel(),
            params,
        )],
        ..Default::default()
    })
}

/// CumSum: one thread per line along the axis.
pub fn cumsum(io: &StepIo) -> Result<Kernels> {
    let Op::CumSum {
        axis,
        exclusive,
        reverse,
    } = &io.step.op
    else {
        return Err(io.refuse("this op"));
    };
    let s = io.scalar_in(0)?;
    let (outer, len, inner) = row_shape(&io.ins[0].shape, *axis);
    let zero = if s == Scalar::F32 { "0.0" } else { "0" };
    let idx = if *reverse { "len - 1u - k" } else { "k" };
    let step = if *exclusive {
        "out0[at] = acc; acc = acc + in0[at];"
    } else {
        "acc = acc + in0[at]; out0[at] = acc;"
    };
    let src = format!(
        "{}{}{}{ENTRY_1D}    let len = p(1u);\n    let inner = p(2u);\n    let base = (i / inner) * len * inner + i % inner;\n    var acc = {zero};\n    for (var k = 0u; k < len; k = k + 1u) {{ let at = base + ({idx}) * inner; {step} }}\n}}\n",
        prelude(),
        binding(1, "in0", s, false),
        binding(2, "out0", s, true),
    );
    Ok(Kernels {
        dispatches: vec![dispatch_1d(
            src,
            vec![Arg::In(0), Arg::Out(0)],
            outer * inner,
            vec![word(len), word(inner)],
        )],
        ..Default::default()
    })
}
