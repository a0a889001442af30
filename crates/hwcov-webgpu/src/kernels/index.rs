//! Kernels driven by index tensors: Gather, GatherElements, GatherND, OneHot, ScatterND and
//! ScatterElements. Negative indices count from the end, as ONNX says; an index still out of
//! range stores the step's number in the status word, which the executor reads after the run and
//! turns into an error naming the node (a kernel cannot stop the run, and must not read outside
//! its tensor or write a wrong answer silently).

use hwcov_core::{DType, Result};
use hwcov_onnx::ir::{Op, ScatterReduction};

use super::map::{Layout, Operand, flit, map};
use super::{
    Arg, Dispatch, ENTRY_1D, Kernels, MAX_RANK, Scalar, StepIo, Weights, binding, dispatch_1d, prelude, status_binding,
    word,
};

/// WGSL: `idx` made non-negative against `n`, or the step's number in the status word.
fn checked(idx: &str, n: &str) -> String {
    format!(
        "    var ix = {idx};\n    if (ix < 0) {{ ix = ix + i32({n}); }}\n    if (ix < 0 || ix >= i32({n})) {{ atomicStore(&status[0], STEP); ix = 0; }}\n"
    )
}

fn with_step(src: String, io: &StepIo) -> String {
    src.replace("STEP", &format!("{}u", io.index + 1))
}

pub fn gather(io: &StepIo) -> Result<Kernels> {
    // An embedding table kept in f16 (`Weights`) gathers into f32 rows.
    let table = (io.ins[0].dtype == DType::F16 && matches!(io.step.op, Op::Gather { .. })).then_some(Weights::F16);
    let s = if table.is_some() { Scalar::F32 } else { io.scalar_in(0)? };
    let si = io.scalar_in(1)?;
    if si != Scalar::I32 {
        return Err(io.refuse(format!("indices of {}", io.ins[1].dtype)));
    }
    let data = &io.ins[0].shape;
    let idx = &io.ins[1].shape;
    let mut src = String::new();
    match table {
        Some(w) => {
            src.push_str(&w.enable());
            src.push_str(&prelude());
            src.push_str(&format!(
                "@group(0) @binding(1) var<storage, read> data: array<{}>;\n",
                w.wgsl()
            ));
        }
        None => {
            src.push_str(&prelude());
            src.push_str(&binding(1, "data", s, false));
        }
    }
    src.push_str(&binding(2, "indices", Scalar::I32, false));
    src.push_str(&binding(3, "out0", io.scalar_out(0)?, true));
    src.push_str(&status_binding(4));
    src.push_str(ENTRY_1D);
    let mut params = Vec::new();
    match &io.step.op {
        Op::Gather { axis } => {
            let inner: usize = data[axis + 1..].iter().product();
            let nidx: usize = idx.iter().product();
            params.extend([word(inner), word(nidx), word(data[*axis])]);
            src.push_str(
                "    let r = i % p(1u);\n    let j = (i / p(1u)) % p(2u);\n    let o = i / (p(1u) * p(2u));\n",
            );
            src.push_str(&checked("indices[j]", "p(3u)"));
            let read = "data[(o * p(3u) + u32(ix)) * p(1u) + r]";
            src.push_str(&match table {
                Some(_) => format!("    out0[i] = f32({read});\n}}\n"),
                None => format!("    out0[i] = {read};\n}}\n"),
            });
        }
        Op::GatherElements { axis } => {
            let rank = idx.len();
            let ds = super::strides(data);
            params.push(word(rank));
            params.extend((0..MAX_RANK).map(|a| word(*idx.get(a).unwrap_or(&1))));
            params.extend((0..MAX_RANK).map(|a| word(*ds.get(a).unwrap_or(&0))));
            params.extend([word(*axis), word(data[*axis])]);
            src.push_str(&checked("indices[i]", "p(19u)"));
            src.push_str(
                "    var rem = i;\n    var off = 0u;\n    for (var a = i32(p(1u)) - 1; a >= 0; a = a - 1) {\n        let d = p(2u + u32(a));\n        var c = rem % d;\n        rem = rem / d;\n        if (u32(a) == p(18u)) { c = u32(ix); }\n        off = off + c * p(10u + u32(a));\n    }\n    out0[i] = data[off];\n}\n",
            );
        }
        Op::GatherND { batch_dims } => {
            let b = *batch_dims;
            let k = *idx.last().unwrap_or(&0);
            let slice: usize = data[b + k..].iter().product();
            let rows: usize = idx[..idx.len() - 1].iter().product();
            let per_batch: usize = idx[b..idx.len() - 1].iter().product();
            let batch_stride: usize = data[b..].iter().product();
            let ds = super::strides(data);
            if k > MAX_RANK {
                return Err(io.refuse(format!("GatherND over {k} axes")));
            }
            let _ = rows;
            params.extend([word(slice), word(k), word(per_batch), word(batch_stride)]);
            params.extend((0..MAX_RANK).map(|t| word(if t < k { data[b + t] } else { 1 })));
            params.extend((0..MAX_RANK).map(|t| word(if t < k { ds[b + t] } else { 0 })));
            src.push_str(
                "    let r = i % p(1u);\n    let row = i / p(1u);\n    var off = (row / max(p(3u), 1u)) * p(4u) + r;\n    for (var t = 0u; t < p(2u); t = t + 1u) {\n",
            );
            src.push_str(&checked("indices[row * p(2u) + t]", "p(5u + t)").replace('\n', "\n    "));
            src.push_str("        off = off + u32(ix) * p(13u + t);\n    }\n    out0[i] = data[off];\n}\n");
        }
        _ => return Err(io.refuse("this op")),
    }
    Ok(Kernels {
        dispatches: vec![dispatch_1d(
            with_step(src, io),
            vec![Arg::In(0), Arg::In(1), Arg::Out(0), Arg::Status],
            io.outs[0].numel(),
            params,
        )],
        ..Default::default()
    })
}

/// OneHot: `on` where the index (negative ones count from the end) equals the position along
/// the new axis, `off` elsewhere.
pub fn one_hot(io: &StepIo) -> Result<Kernels> {
    let Op::OneHot { axis, depth, off, on } = &io.step.op else {
        return Err(io.refuse("this op"));
    };
    let si = io.scalar_in(0)?;
    let inner: usize = io.outs[0].shape[axis + 1..].iter().product();
    let so = io.scalar_out(0)?;
    let lit = |v: f64| {
        if so == Scalar::F32 {
            flit(v)
        } else {
            format!("{}", v as i64 as i32)
        }
    };
    let mut s = prelude();
    s.push_str(&binding(1, "indices", si, false));
    s.push_str(&binding(2, "out0", so, true));
    s.push_str(ENTRY_1D);
    // Indices of a float type count by their integer part.
    s.push_str(&format!(
        "    let r = i % p(1u);\n    let d = (i / p(1u)) % p(2u);\n    let o = i / (p(1u) * p(2u));\n    var ix = i32(indices[o * p(1u) + r]);\n    if (ix < 0) {{ ix = ix + i32(p(2u)); }}\n    out0[i] = select({}, {}, ix == i32(d));\n}}\n",
        lit(*off),
        lit(*on)
    ));
    Ok(Kernels {
        dispatches: vec![dispatch_1d(
            s,
            vec![Arg::In(0), Arg::Out(0)],
            io.outs[0].numel(),
            vec![word(inner), word(*depth)],
        )],
        ..Default::default()
    })
}

/// ScatterND and ScatterElements: the data copied to the output, then the updates written. With
/// a reduction, one thread applies the updates in order (duplicates combine as ONNX says);
/// without, one thread per update element.
pub fn scatter(io: &StepIo) -> Result<Kernels> {
    let s = io.scalar_in(0)?;
    if io.scalar_in(1)? != Scalar::I32 || io.scalar_in(2)? != s {
        return Err(io.refuse(format!(
            "indices of {} and updates of {}",
            io.ins[1].dtype, io.ins[2].dtype
        )));
    }
    let data = &io.ins[0].shape;
    let idx = &io.ins[1].shape;
    let upd_n = io.ins[2].numel();
    let copy = map(
        io,
        data,
        vec![Operand {
            scalar: s,
            layout: Layout::contiguous(data),
            arg: Arg::In(0),
        }],
        Operand {
            scalar: s,
            layout: Layout::contiguous(data),
            arg: Arg::Out(0),
        },
        "$0",
    )?;
    let (reduction, target, params) = match &io.step.op {
        Op::ScatterND { reduction } => {
            let k = *idx.last().unwrap_or(&0);
            if k > MAX_RANK {
                return Err(io.refuse(format!("ScatterND over {k} axes")));
            }
            let slice: usize = data[k..].iter().product();
            let ds = super::strides(data);
            let mut p = vec![word(slice), word(k)];
            p.extend((0..MAX_RANK).map(|t| word(if t < k { data[t] } else { 1 })));
            p.extend((0..MAX_RANK).map(|t| word(if t < k { ds[t] } else { 0 })));
            let target = format!(
                "    let r = u % p(1u);\n    let row = u / p(1u);\n    var off = r;\n    for (var t = 0u; t < p(2u); t = t + 1u) {{\n    {}        off = off + u32(ix) * p(11u + t);\n    }}\n",
                checked("indices[row * p(2u) + t]", "p(3u + t)").replace('\n', "\n    ")
            );
            (*reduction, target, p)
        }
        Op::ScatterElements { axis, reduction } => {
            let rank = idx.len();
            let ds = super::strides(data);
            let mut p = vec![word(rank)];
            p.extend((0..MAX_RANK).map(|a| word(*idx.get(a).unwrap_or(&1))));
            p.extend((0..MAX_RANK).map(|a| word(*ds.get(a).unwrap_or(&0))));
            p.extend([word(*axis), word(data[*axis])]);
            let target = format!(
                "{}    var rem = u;\n    var off = 0u;\n    for (var a = i32(p(1u)) - 1; a >= 0; a = a - 1) {{\n        let d = p(2u + u32(a));\n        var c = rem % d;\n        rem = rem / d;\n        if (u32(a) == p(18u)) {{ c = u32(ix); }}\n        off = off + c * p(10u + u32(a));\n    }}\n",
                checked("indices[u]", "p(19u)")
            );
            (*reduction, target, p)
        }
        _ => return Err(io.refuse("this op")),
    };
    let combine = match reduction {
        ScatterReduction::None => "v",
        ScatterReduction::Add => "out0[off] + v",
        ScatterReduction::Mul => "out0[off] * v",
        ScatterReduction::Max => "max(out0[off], v)",
        ScatterReduction::Min => "min(out0[off], v)",
    };
    let mut src = prelude();
    src.push_str(&binding(1, "indices", Scalar::I32, false));
    src.push_str(&binding(2, "updates", s, false));
    src.push_str(&binding(3, "out0", s, true));
    src.push_str(&status_binding(4));
    let body = format!("{target}    let v = updates[u];\n    out0[off] = {combine};\n");
    let (src, n) = if reduction == ScatterReduction::None {
        src.push_str(ENTRY_1D);
        src.push_str(&format!("    let u = i;\n{body}}}\n"));
        (src, upd_n)
    } else {
        // One thread, the updates in order.
        src.push_str(ENTRY_1D);
        src.push_str(&format!(
            "    for (var u = 0u; u < p(100u); u = u + 1u) {{\n{body}    }}\n}}\n"
        ));
        (src, 1)
    };
    let mut params = params;
    params.resize(99, 0);
    params.push(word(upd_n));
    let scatter = dispatch_1d(
        with_step(src, io),
        vec![Arg::In(1), Arg::In(2), Arg::Out(0), Arg::Status],
        n,
        params,
    );
    let dispatches: Vec<Dispatch> = vec![copy, scatter];
    Ok(Kernels {
        dispatches,
        ..Default::default()
    })
}
