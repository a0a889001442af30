//! Einsum: one thread per output element sums the product of its operands over the letters the
//! output drops. Each operand reads through a stride per letter (0 where it lacks the letter; a
//! letter it repeats, a diagonal, adds the strides of both axes).

use hwcov_core::Result;
use hwcov_onnx::ir::Op;

use super::{Arg, ENTRY_1D, Kernels, MAX_RANK, Scalar, StepIo, binding, dispatch_1d, prelude, strides, word};

/// The most operands one Einsum kernel reads.
const MAX_OPERANDS: usize = 4;

pub fn einsum(io: &StepIo) -> Result<Kernels> {
    let Op::Einsum { inputs, output } = &io.step.op else {
        return Err(io.refuse("this op"));
    };
    let s = io.scalar_out(0)?;
    for i in 0..io.ins.len() {
        if io.scalar_in(i)? != s {
            return Err(io.refuse("operands of different types"));
        }
    }
    if inputs.len() > MAX_OPERANDS {
        return Err(io.refuse(format!("more than {MAX_OPERANDS} operands")));
    }
    // Letters: the output's first, then the summed ones.
    let mut letters: Vec<u8> = output.clone();
    for subs in inputs {
        for &c in subs {
            if !letters.contains(&c) {
                letters.push(c);
            }
        }
    }
    if letters.len() > MAX_RANK {
        return Err(io.refuse(format!("{} distinct letters (at most {MAX_RANK})", letters.len())));
    }
    let mut size = vec![1usize; letters.len()];
    for (subs, t) in inputs.iter().zip(&io.ins) {
        for (&c, &d) in subs.iter().zip(&t.shape) {
            let l = letters.iter().position(|&x| x == c).unwrap_or(0);
            size[l] = size[l].max(d);
        }
    }
    let n_out = output.len();
    let summed: usize = size[n_out..].iter().product();
    let mut params = vec![word(letters.len()), word(n_out), word(summed), word(inputs.len())];
    params.extend((0..MAX_RANK).map(|l| word(*size.get(l).unwrap_or(&1))));
    for k in 0..MAX_OPERANDS {
        let mut st = vec![0u32; MAX_RANK];
        if let (Some(subs), Some(t)) = (inputs.get(k), io.ins.get(k)) {
            let own = strides(&t.shape);
            for (a, &c) in subs.iter().enumerate() {
                // A broadcast axis (size 1) does not move.
                if t.shape[a] == 1 {
                    continue;
                }
                let l = letters.iter().position(|&x| x == c).unwrap_or(0);
                st[l] += word(own[a]);
            }
        }
        params.extend(st);
    }
    let zero = if s == Scalar::F32 { "0.0" } else { "0" };
    let one = if s == Scalar::F32 { "1.0" } else { "1" };
    let mut src = prelude();
    let mut args = Vec::new();
    for k in 0..inputs.len() {
        src.push_str(&binding(k + 1, &format!("in{k}"), s, false));
        args.push(Arg::In(k));
    }
    src.push_str(&binding(inputs.len() + 1, "out0", s, true));
    args.push(Arg::Out(0));
    src.push_str(ENTRY_1D);
    // Parameters: 1 letters, 2 output letters, 3 summed count, 4 operands, 5..13 sizes,
    // 13 + 8k.. strides of operand k.
    src.push_str("    var base: array<u32, 4>;\n    var rem = i;\n    for (var l = i32(p(2u)) - 1; l >= 0; l = l - 1) {\n        let d = p(5u + u32(l));\n        let c = rem % d;\n        rem = rem / d;\n        for (var k = 0u; k < 4u; k = k + 1u) { base[k] = base[k] + c * p(13u + 8u * k + u32(l)); }\n    }\n");
    src.push_str(&format!("    var acc = {zero};\n    for (var j = 0u; j < p(3u); j = j + 1u) {{\n        var off = base;\n        var r = j;\n        for (var l = i32(p(1u)) - 1; l >= i32(p(2u)); l = l - 1) {{\n            let d = p(5u + u32(l));\n            let c = r % d;\n            r = r / d;\n            for (var k = 0u; k < 4u; k = k + 1u) {{ off[k] = off[k] + c * p(13u + 8u * k + u32(l)); }}\n        }}\n        var prod = {one};\n"));
    for k in 0..inputs.len() {
        src.push_str(&format!("        prod = prod * in{k}[off[{k}]];\n"));
    }
    src.push_str("        acc = acc + prod;\n    }\n    out0[i] = acc;\n}\n");
    Ok(Kernels {
        dispatches: vec![dispatch_1d(src, args, io.outs[0].numel(), params)],
        ..Default::default()
    })
}
