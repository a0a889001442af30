//! Conv (1-D to 3-D, groups, strides, dilations, pads) and MaxPool/AveragePool. Spatial axes are
//! padded to three in front (size 1), so one shader serves 1-D, 2-D and 3-D.
//!
//! A convolution of one group is a product: its input unfolded into columns (a row per batch item
//! and output position, a column per input channel and tap, zero where the tap falls in the
//! padding), times the weights as (output channels, channels x taps), through the tiled product
//! kernels; a last dispatch puts the product's (position, channel) rows in the output's (channel,
//! position) order and adds the bias. Grouped convolutions, and those whose columns would pass
//! `MAX_COLUMNS`, run the direct kernel: one thread per output element walks its window. Pooling
//! is the direct walk.

use hwcov_core::Result;
use hwcov_onnx::ir::Op;

use super::matmul::{Operands, Product, product};
use super::{Arg, ENTRY_1D, Kernels, Scalar, StepIo, Weights, binding, dispatch_1d, prelude, word};

/// The largest column matrix (bytes) a convolution is unfolded into; past it, the direct kernel.
const MAX_COLUMNS: usize = 128 << 20;

/// Up to three spatial values, padded in front with `fill`.
fn three(v: &[usize], fill: usize) -> [usize; 3] {
    let mut out = [fill; 3];
    let off = 3 - v.len();
    out[off..].copy_from_slice(v);
    out
}

/// Parameters shared by conv and pool, from the input (N, C, spatial...) and output shapes:
/// 1 N, 2 C, 3..6 input spatial, 6..9 output spatial, 9..12 kernel, 12..15 strides, 15..18 pads
/// before, 18..21 dilations (p(0) is the count).
fn window_params(
    x: &[usize],
    out: &[usize],
    kernel: &[usize],
    strides: &[usize],
    pads: &[(usize, usize)],
    dilations: &[usize],
) -> Vec<u32> {
    let mut p = vec![word(x[0]), word(x[1])];
    for v in [
        three(&x[2..], 1),
        three(&out[2..], 1),
        three(kernel, 1),
        three(strides, 1),
        three(&pads.iter().map(|p| p.0).collect::<Vec<_>>(), 0),
        three(dilations, 1),
    ] {
        p.extend(v.iter().map(|&x| word(x)));
    }
    p
}

/// WGSL: the output element's (n, c, z, y, x) from `i`.
const DECODE: &str = "    let ox = i % p(8u);
    let oy = (i / p(8u)) % p(7u);
    let oz = (i / (p(8u) * p(7u))) % p(6u);
    let oc = (i / (p(8u) * p(7u) * p(6u))) % p(22u);
    let on = i / (p(8u) * p(7u) * p(6u) * p(22u));
    let ins = p(3u) * p(4u) * p(5u);
";

/// The window loop: for each tap (kz, ky, kx) inside the input, `body` sees `at` (its spatial
/// offset in the input plane) and `kk` (its index in the kernel).
fn window_loop(body: &str) -> String {
    format!(
        "    for (var kz = 0u; kz < p(9u); kz = kz + 1u) {{
        let iz = i32(oz * p(12u) + kz * p(18u)) - i32(p(15u));
        if (iz < 0 || iz >= i32(p(3u))) {{ continue; }}
        for (var ky = 0u; ky < p(10u); ky = ky + 1u) {{
            let iy = i32(oy * p(13u) + ky * p(19u)) - i32(p(16u));
            if (iy < 0 || iy >= i32(p(4u))) {{ continue; }}
            for (var kx = 0u; kx < p(11u); kx = kx + 1u) {{
                let ix = i32(ox * p(14u) + kx * p(20u)) - i32(p(17u));
                if (ix < 0 || ix >= i32(p(5u))) {{ continue; }}
                let at = (u32(iz) * p(4u) + u32(iy)) * p(5u) + u32(ix);
                let kk = (kz * p(10u) + ky) * p(11u) + kx;
{body}
            }}
        }}
    }}
"
    )
}

pub fn conv(io: &StepIo) -> Result<Kernels> {
    let Op::Conv {
        strides,
        pads,
        dilations,
        group,
    } = &io.step.op
    else {
        return Err(io.refuse("this op"));
    };
    let wt = Weights::of(io, 1)?;
    for i in (0..io.ins.len()).filter(|&i| i != 1) {
        if io.scalar_in(i)? != Scalar::F32 {
            return Err(io.refuse(format!("a convolution of {}", io.ins[i].dtype)));
        }
    }
    let (x, w, out) = (&io.ins[0].shape, &io.ins[1].shape, &io.outs[0].shape);
    if x.len() > 5 {
        return Err(io.refuse("convolutions of more than 3 spatial axes"));
    }
    let has_bias = io.ins.len() > 2;
    let mut params = window_params(x, out, &w[2..], strides, pads, dilations);
    let taps: usize = w[2..].iter().product();
    let positions: usize = out[2..].iter().product();
    let (rows, depth) = (x[0] * positions, w[1] * taps);
    if *group == 1 && rows * depth * 4 <= MAX_COLUMNS {
        params.extend([word(depth), word(taps)]);
        return conv_as_product(io, params, rows, depth, out[1], positions, wt);
    }
    // 21 Cout, 22 (output channels, as DECODE reads them), 23 group.
    params.extend([word(out[1]), word(out[1]), word(*group)]);
    let mut s = wt.enable();
    s.push_str(&prelude());
    s.push_str(&binding(1, "x", Scalar::F32, false));
    s.push_str(&format!(
        "@group(0) @binding(2) var<storage, read> w: array<{}>;\n",
        wt.wgsl()
    ));
    let mut args = vec![Arg::In(0), Arg::In(1)];
    if has_bias {
        s.push_str(&binding(3, "b", Scalar::F32, false));
        args.push(Arg::In(2));
    }
    s.push_str(&binding(if has_bias { 4 } else { 3 }, "out0", Scalar::F32, true));
    args.push(Arg::Out(0));
    s.push_str(ENTRY_1D);
    s.push_str(DECODE);
    s.push_str(
        "    let cg = p(2u) / p(23u);
    let g = oc / (p(21u) / p(23u));
    let ks = p(9u) * p(10u) * p(11u);
",
    );
    s.push_str(if has_bias {
        "    var acc = b[oc];\n"
    } else {
        "    var acc = 0.0;\n"
    });
    s.push_str("    for (var ci = 0u; ci < cg; ci = ci + 1u) {\n        let xb = (on * p(2u) + g * cg + ci) * ins;\n        let wb = (oc * cg + ci) * ks;\n");
    s.push_str(&window_loop(
        "                acc = fma(x[xb + at], f32(w[wb + kk]), acc);",
    ));
    s.push_str("    }\n    out0[i] = acc;\n}\n");
    Ok(Kernels {
        dispatches: vec![dispatch_1d(s, args, io.outs[0].numel(), params)],
        ..Default::default()
    })
}

/// A convolution of one group as unfold, product and reorder (the module's comment). `params` are
/// the window's, then 21 columns (channels x taps) and 22 taps.
fn conv_as_product(
    io: &StepIo,
    params: Vec<u32>,
    rows: usize,
    depth: usize,
    channels: usize,
    positions: usize,
    wt: Weights,
) -> Result<Kernels> {
    let mut unfold = prelude();
    unfold.push_str(&binding(1, "x", Scalar::F32, false));
    unfold.push_str(&binding(2, "cols", Scalar::F32, true));
    unfold.push_str(ENTRY_1D);
    unfold.push_str(
        "    let col = i % p(21u);
    let row = i / p(21u);
    let ci = col / p(22u);
    let kk = col % p(22u);
    let kx = kk % p(11u);
    let ky = (kk / p(11u)) % p(10u);
    let kz = kk / (p(11u) * p(10u));
    let positions = p(6u) * p(7u) * p(8u);
    let s = row % positions;
    let on = row / positions;
    let ox = s % p(8u);
    let oy = (s / p(8u)) % p(7u);
    let oz = s / (p(8u) * p(7u));
    let iz = i32(oz * p(12u) + kz * p(18u)) - i32(p(15u));
    let iy = i32(oy * p(13u) + ky * p(19u)) - i32(p(16u));
    let ix = i32(ox * p(14u) + kx * p(20u)) - i32(p(17u));
    var v = 0.0;
    if (iz >= 0 && iz < i32(p(3u)) && iy >= 0 && iy < i32(p(4u)) && ix >= 0 && ix < i32(p(5u))) {
        v = x[(on * p(2u) + ci) * p(3u) * p(4u) * p(5u) + (u32(iz) * p(4u) + u32(iy)) * p(5u) + u32(ix)];
    }
    cols[i] = v;
}
",
    );
    // Columns (rows, depth) times the weights (channels, depth) read transposed.
    let p = Product {
        m: rows,
        n: channels,
        k: depth,
        batch_shape: Vec::new(),
        a_batch_strides: Vec::new(),
        b_batch_strides: Vec::new(),
        rs_a: depth,
        cs_a: 1,
        rs_b: 1,
        cs_b: depth,
        alpha: 1.0,
        beta: 0.0,
        c_strides: None,
        b: wt,
    };
    let operands = Operands {
        a: Arg::Scratch(0),
        b: Arg::In(1),
        c: None,
        out: Arg::Scratch(1),
        partials: 2,
    };
    let (products, partials) = product(io, &p, &operands)?;
    let has_bias = io.ins.len() > 2;
    let mut reorder = prelude();
    reorder.push_str(&binding(1, "prod", Scalar::F32, false));
    let mut args = vec![Arg::Scratch(1)];
    if has_bias {
        reorder.push_str(&binding(2, "b", Scalar::F32, false));
        args.push(Arg::In(2));
    }
    reorder.push_str(&binding(args.len() + 1, "out0", Scalar::F32, true));
    args.push(Arg::Out(0));
    reorder.push_str(ENTRY_1D);
    reorder.push_str(
        "    let s = i % p(1u);\n    let co = (i / p(1u)) % p(2u);\n    let on = i / (p(1u) * p(2u));\n    var v = prod[(on * p(1u) + s) * p(2u) + co];\n",
    );
    if has_bias {
        reorder.push_str("    v = v + b[co];\n");
    }
    reorder.push_str("    out0[i] = v;\n}\n");
    let mut dispatches = vec![dispatch_1d(
        unfold,
        vec![Arg::In(0), Arg::Scratch(0)],
        rows * depth,
        params,
    )];
    dispatches.extend(products);
    dispatches.push(dispatch_1d(
        reorder,
        args,
        io.outs[0].numel(),
        vec![word(positions), word(channels)],
    ));
    let mut scratch = vec![(rows * depth * 4) as u64, (rows * channels * 4) as u64];
    scratch.extend(partials);
    Ok(Kernels {
        dispatches,
        scratch,
        ..Default::default()
    })
}

pub fn pool(io: &StepIo) -> Result<Kernels> {
    let (kernel, strides, pads, dilations, avg, column_major) = match &io.step.op {
        Op::MaxPool {
            kernel,
            strides,
            pads,
            dilations,
            column_major,
        } => (kernel, strides, pads, dilations, None, *column_major),
        Op::AveragePool {
            kernel,
            strides,
            pads,
            dilations,
            count_include_pad,
        } => (kernel, strides, pads, dilations, Some(*count_include_pad), false),
        _ => return Err(io.refuse("this op")),
    };
    let sc = io.scalar_in(0)?;
    if sc != Scalar::F32 && avg.is_some() {
        return Err(io.refuse(format!("AveragePool of {}", io.ins[0].dtype)));
    }
    let (x, out) = (&io.ins[0].shape, &io.outs[0].shape);
    if x.len() > 5 {
        return Err(io.refuse("pooling over more than 3 spatial axes"));
    }
    let mut params = window_params(x, out, kernel, strides, pads, dilations);
    // 21 unused, 22 channels, 23..26 pads after.
    params.extend([0, word(x[1])]);
    params.extend(
        three(&pads.iter().map(|p| p.1).collect::<Vec<_>>(), 0)
            .iter()
            .map(|&v| word(v)),
    );
    let indices = io.outs.len() > 1;
    let mut s = prelude();
    s.push_str(&binding(1, "x", sc, false));
    s.push_str(&binding(2, "out0", sc, true));
    let mut args = vec![Arg::In(0), Arg::Out(0)];
    if indices {
        s.push_str(&binding(3, "out1", Scalar::I32, true));
        args.push(Arg::Out(1));
    }
    s.push_str(ENTRY_1D);
    s.push_str(DECODE);
    s.push_str("    let xb = (on * p(22u) + oc) * ins;\n");
    match avg {
        None => {
            let lowest = if sc == Scalar::F32 {
                "-inf_f()"
            } else {
                "-2147483647 - 1"
            };
            s.push_str(&format!("    var acc = {lowest};\n    var best = 0u;\n"));
            // The index of the first maximum in the flattened input, spatial axes row-major (or
            // column-major: the first spatial axis fastest).
            let at = if column_major {
                "((u32(ix) * p(4u) + u32(iy)) * p(3u) + u32(iz))"
            } else {
                "at"
            };
            s.push_str(&window_loop(&format!(
                "                let v = x[xb + at];\n                if (v > acc) {{ acc = v; best = xb + {at}; }}"
            )));
            if indices {
                s.push_str("    out1[i] = i32(best);\n");
            }
        }
        Some(include_pad) => {
            s.push_str("    var acc = 0.0;\n    var count = 0u;\n");
            s.push_str(&window_loop(
                "                acc = acc + x[xb + at];\n                count = count + 1u;",
            ));
            if include_pad {
                // The window counts every tap inside the padded input (not those past it, which
                // ceil_mode may add).
                s.push_str(
                    "    count = 1u;
    var spans = array<u32, 3>(oz, oy, ox);
    for (var a = 0u; a < 3u; a = a + 1u) {
        let start = i32(spans[a] * p(12u + a)) - i32(p(15u + a));
        var n = 0u;
        for (var k = 0u; k < p(9u + a); k = k + 1u) {
            let c = start + i32(k * p(18u + a));
            if (c >= -i32(p(15u + a)) && c < i32(p(3u + a) + p(23u + a))) { n = n + 1u; }
        }
        count = count * n;
    }
",
                );
            }
            s.push_str("    acc = acc / f32(max(count, 1u));\n");
        }
    }
    s.push_str("    out0[i] = acc;\n}\n");
    Ok(Kernels {
        dispatches: vec![dispatch_1d(s, args, io.outs[0].numel(), params)],
        ..Default::default()
    })
}
