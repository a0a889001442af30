//! Resize: separable, so the host computes each axis's taps once per shape (for every output
//! coordinate: which input indices and with what weight), exactly as the ONNX reference
//! (onnx/reference/ops/op_resize.py) computes them in double precision, and the kernel sums the
//! product of the taps of every axis. An output coordinate that tf_crop_and_resize maps outside
//! the input takes the extrapolation value.

use hwcov_core::Result;
use hwcov_onnx::ir::Op;
use hwcov_onnx::resize::axis_taps;

use super::map::flit;
use super::{Arg, ENTRY_1D, Kernels, MAX_RANK, Scalar, StepIo, binding, dispatch_1d, prelude, strides, word};

pub fn resize(io: &StepIo) -> Result<Kernels> {
    let Op::Resize(r) = &io.step.op else {
        return Err(io.refuse("this op"));
    };
    if io.scalar_in(0)? != Scalar::F32 {
        return Err(io.refuse(format!("Resize of {}", io.ins[0].dtype)));
    }
    let (ins, out) = (&io.ins[0].shape, &io.outs[0].shape);
    let rank = ins.len();
    // The table: per axis, per output coordinate, `taps` pairs of (index or -1, weight bits).
    let mut table = Vec::new();
    let mut params = vec![word(rank)];
    let mut heads = Vec::new();
    let mut widths = Vec::new();
    for a in 0..rank {
        let taps = axis_taps(r, a, ins[a], out[a]);
        let width = taps.iter().map(|t| t.as_ref().map_or(1, Vec::len)).max().unwrap_or(1);
        heads.push(table.len());
        widths.push(width);
        for t in taps {
            for k in 0..width {
                match t.as_ref().and_then(|v| v.get(k)) {
                    Some(&(i, w)) => table.extend([i as u32, (w as f32).to_bits()]),
                    None if t.is_none() => table.extend([u32::MAX, 0]),
                    None => table.extend([0, 0f32.to_bits()]),
                }
            }
        }
    }
    let own = strides(ins);
    params.extend((0..MAX_RANK).map(|a| word(*out.get(a).unwrap_or(&1))));
    params.extend((0..MAX_RANK).map(|a| word(*own.get(a).unwrap_or(&0))));
    params.extend((0..MAX_RANK).map(|a| word(*heads.get(a).unwrap_or(&0))));
    params.extend((0..MAX_RANK).map(|a| word(*widths.get(a).unwrap_or(&1))));
    let combos: usize = widths.iter().product();
    params.push(word(combos));
    let mut s = prelude();
    s.push_str(&binding(1, "x", Scalar::F32, false));
    s.push_str(&binding(2, "taps", Scalar::I32, false));
    s.push_str(&binding(3, "out0", Scalar::F32, true));
    s.push_str(ENTRY_1D);
    // Parameters: 1 rank, 2..10 output dims, 10..18 input strides, 18..26 table heads,
    // 26..34 taps per axis, 34 tap combinations.
    s.push_str(&format!(
        "    var coord: array<u32, 8>;
    var rem = i;
    for (var a = i32(p(1u)) - 1; a >= 0; a = a - 1) {{ let d = p(2u + u32(a)); coord[a] = rem % d; rem = rem / d; }}
    var acc = 0.0;
    for (var t = 0u; t < p(34u); t = t + 1u) {{
        var rest = t;
        var off = 0u;
        var w = 1.0;
        for (var a = i32(p(1u)) - 1; a >= 0; a = a - 1) {{
            let width = p(26u + u32(a));
            let k = rest % width;
            rest = rest / width;
            let at = p(18u + u32(a)) + (coord[a] * width + k) * 2u;
            let idx = taps[at];
            if (idx == -1) {{ out0[i] = {}; return; }}
            off = off + u32(idx) * p(10u + u32(a));
            w = w * bitcast<f32>(taps[at + 1u]);
        }}
        acc = fma(w, x[off], acc);
    }}
    out0[i] = acc;
}}
",
        flit(r.extrapolation_value as f64)
    ));
    Ok(Kernels {
        dispatches: vec![dispatch_1d(
            s,
            vec![Arg::In(0), Arg::Table(0), Arg::Out(0)],
            io.outs[0].numel(),
            params,
        )],
        tables: vec![table],
        ..Default::default()
    })
}
