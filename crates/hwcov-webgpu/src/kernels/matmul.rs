//! MatMul and Gemm: Gemm's alpha * AB + beta * C is the epilogue, batch axes broadcast by stride 0.
//! Three kernels, picked by the product's shape:
//!
//! - `tiled`, for products whose rows of A, B (or B transposed, Gemm's transB) and the output are
//!   whole vec4s: a workgroup of 16 x 16 threads computes a 128 x 128 tile (each thread 8 x 8
//!   elements, as 2 x 2 blocks of 4 x 4 that lie 64 apart) or, where 128-tiles would leave a large
//!   GPU idle, a 64 x 64 tile (each thread one 4 x 4 block). A and B pass through workgroup memory
//!   16 deep along K; the next slice is read from memory into registers while the current one is
//!   multiplied.
//! - `rows`, for products of at most 4 rows (a decoding step) with B in rows: a workgroup takes 64
//!   columns, its 256 threads 16 groups of 4 columns by 16 slices of K, each thread reading B once
//!   and keeping every row's sums; the slices add up in workgroup memory. Reading B once is what
//!   such a product costs; the tiled kernel would spend its arithmetic on rows that are not there.
//!   Where N is not a whole number of vec4s (Whisper's vocabulary of 51,865), B and the output go
//!   column by column rather than as vec4s.
//! - `any`, for the rest: 64 x 64 tiles, each thread 4 x 4 elements spaced 16 apart, every operand
//!   read through strides (so a transposed one costs no copy), 16 deep along K.
//!
//! Where even the chosen tiles give too few workgroups to fill the GPU (one batch row of BERT, a
//! decoding step), `tiled` and `rows` split K: each split writes its partial sums to a scratch
//! buffer and a second dispatch adds them up and applies the epilogue.
//!
//! Every accumulator is a variable of its own, named in the generated source and indexed only by
//! constants: an array indexed at run time would live in memory rather than registers.

use hwcov_core::Result;
use hwcov_onnx::ir::Op;

use super::{Arg, Dispatch, Kernels, Scalar, StepIo, Weights, binding, dispatch_1d, fword, prelude, strides, word};

/// The most batch axes a product indexes.
const MAX_BATCH: usize = 6;

/// Tile of the `any` kernel.
const TILE: usize = 64;
/// Depth along K of one slice of the tiled kernels.
const DEPTH: usize = 16;
/// The most rows of the `rows` kernel, and the columns one of its workgroups takes.
const ROWS: usize = 4;
const ROWS_COLUMNS: usize = 64;
/// K rows the `rows` kernel's threads load at once (each thread steps through K by 16).
const UNROLL: usize = 4;
/// Workgroups a product should give to fill a large GPU (an H100 has 132 multiprocessors); fewer,
/// and K is split.
const FILL: usize = 128;

/// Parameter words: 0 M, 1 N, 2 K, 3 batch rank, 4..10 batch dims, 10..16 A batch strides,
/// 16..22 B batch strides, 22..28 C batch strides, 28 rsA, 29 csA, 30 rsB, 31 csB, 32 alpha,
/// 33 beta, 34 rsC, 35 csC, 36 splits of K, 37 K per split, 38 products in the batch.
///
/// WGSL: the product's sizes, this workgroup's split of K and its product in the batch (`bz`), and
/// the offsets of A, B and C in that product, the batch axes broadcast by stride.
const BATCH: &str = "    let M = p(0u);
    let N = p(1u);
    let K = p(2u);
    let bz = wid.z / p(36u);
    let split = wid.z % p(36u);
    let kBegin = split * p(37u);
    let kEnd = min(K, kBegin + p(37u));
    var rem = bz;
    var offA = 0u;
    var offB = 0u;
    var offC = 0u;
    for (var a = i32(p(3u)) - 1; a >= 0; a = a - 1) {
        let d = p(4u + u32(a));
        let c = rem % d;
        rem = rem / d;
        offA = offA + c * p(10u + u32(a));
        offB = offB + c * p(16u + u32(a));
        offC = offC + c * p(22u + u32(a));
    }
";

/// What a product kernel writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// The finished product, through the epilogue (with Gemm's C where `has_c`).
    Final { has_c: bool },
    /// Its split's partial sums, into scratch: split s, product b at ((s * batch + b) * M * N).
    Partial,
}

/// The output bindings of a vec4 kernel, from binding 3 on.
fn output_bindings(s: &mut String, output: Output) {
    match output {
        Output::Final { has_c: true } => {
            s.push_str(&binding(3, "C", Scalar::F32, false));
            s.push_str("@group(0) @binding(4) var<storage, read_write> out0: array<vec4<f32>>;\n");
        }
        _ => s.push_str("@group(0) @binding(3) var<storage, read_write> out0: array<vec4<f32>>;\n"),
    }
}

/// WGSL storing the vec4 `v` of row `gr`, columns `gc..gc + 4` (inside the product).
fn store_quad(output: Output, v: &str, gr: &str, gc: &str) -> String {
    match output {
        Output::Final { has_c } => {
            let mut s = format!("var v = pf(32u) * {v};\n");
            if has_c {
                s.push_str(&format!(
                    "let cb = offC + {gr} * p(34u) + {gc} * p(35u);\n\
                     v = v + pf(33u) * vec4<f32>(C[cb], C[cb + p(35u)], C[cb + 2u * p(35u)], C[cb + 3u * p(35u)]);\n"
                ));
            }
            s.push_str(&format!("out0[(bz * M * N + {gr} * N + {gc}) / 4u] = v;\n"));
            s
        }
        Output::Partial => format!("out0[((split * p(38u) + bz) * M * N + {gr} * N + {gc}) / 4u] = {v};\n"),
    }
}

const LANES: [&str; 4] = ["x", "y", "z", "w"];

/// The `tiled` kernel with `tile` x `tile` tiles (64 or 128); `b_transposed` reads B as (N, K) rows.
fn source_tiled(tile: usize, b_transposed: bool, output: Output, b: Weights) -> String {
    let t4 = tile / 4;
    // Blocks of 4 x 4 per thread along each side, and vec4 loads per thread per operand and slice.
    let blocks = tile / 64;
    let loads = tile * DEPTH / 4 / 256;
    let mut s = b.enable();
    s.push_str(&prelude());
    s.push_str("@group(0) @binding(1) var<storage, read> A: array<vec4<f32>>;\n");
    s.push_str(&format!(
        "@group(0) @binding(2) var<storage, read> B: array<vec4<{}>>;\n",
        b.wgsl()
    ));
    output_bindings(&mut s, output);
    // As holds the slice of A transposed: As[k * T/4 + m / 4][m % 4]; Bs holds B's rows:
    // Bs[k * T/4 + n / 4][n % 4].
    s.push_str(&format!(
        "var<workgroup> As: array<vec4<f32>, {n}>;\nvar<workgroup> Bs: array<vec4<f32>, {n}>;\n\n\
         @compute @workgroup_size(16, 16, 1)\n\
         fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {{\n",
        n = DEPTH * t4
    ));
    s.push_str(BATCH);
    s.push_str(&format!(
        "    let row0 = wid.y * {tile}u;\n    let col0 = wid.x * {tile}u;\n    let tid = lid.y * 16u + lid.x;\n"
    ));
    for bi in 0..blocks {
        for r in 0..4 {
            for bj in 0..blocks {
                s.push_str(&format!("    var c{bi}{r}{bj} = vec4<f32>(0.0);\n"));
            }
        }
    }
    for l in 0..loads {
        s.push_str(&format!(
            "    var ra{l} = vec4<f32>(0.0);\n    var rb{l} = vec4<f32>(0.0);\n"
        ));
    }
    // Reads the slice at k0 into registers (zeros past the edges; K and the splits are whole vec4s).
    let mut load = String::new();
    for l in 0..loads {
        load.push_str(&format!(
            "        {{\n            let e = tid + {o}u;\n            let m = row0 + e / 4u;\n            let k = k0 + (e % 4u) * 4u;\n            ra{l} = vec4<f32>(0.0);\n            if (m < M && k < kEnd) {{ ra{l} = A[(offA + m * K + k) / 4u]; }}\n",
            o = l * 256
        ));
        if b_transposed {
            load.push_str(&format!(
                "            let n = col0 + e / 4u;\n            rb{l} = vec4<f32>(0.0);\n            if (n < N && k < kEnd) {{ rb{l} = vec4<f32>(B[(offB + n * K + k) / 4u]); }}\n        }}\n"
            ));
        } else {
            load.push_str(&format!(
                "            let kb = k0 + e / {t4}u;\n            let n = col0 + (e % {t4}u) * 4u;\n            rb{l} = vec4<f32>(0.0);\n            if (kb < kEnd && n < N) {{ rb{l} = vec4<f32>(B[(offB + kb * N + n) / 4u]); }}\n        }}\n"
            ));
        }
    }
    // Writes the registers into workgroup memory.
    let mut store = String::new();
    for l in 0..loads {
        store.push_str(&format!(
            "        {{\n            let e = tid + {o}u;\n            let m = e / 4u;\n            let kq = (e % 4u) * 4u;\n",
            o = l * 256
        ));
        for (j, lane) in LANES.iter().enumerate() {
            store.push_str(&format!(
                "            As[(kq + {j}u) * {t4}u + m / 4u][m % 4u] = ra{l}.{lane};\n"
            ));
        }
        if b_transposed {
            for (j, lane) in LANES.iter().enumerate() {
                store.push_str(&format!(
                    "            Bs[(kq + {j}u) * {t4}u + m / 4u][m % 4u] = rb{l}.{lane};\n"
                ));
            }
        } else {
            store.push_str(&format!("            Bs[e] = rb{l};\n"));
        }
        store.push_str("        }\n");
    }
    s.push_str("    var k0 = kBegin;\n");
    s.push_str(&load);
    s.push_str("    loop {\n        if (k0 >= kEnd) { break; }\n");
    s.push_str(&store);
    s.push_str(&format!("        workgroupBarrier();\n        k0 = k0 + {DEPTH}u;\n"));
    s.push_str(&load);
    s.push_str(&format!("        for (var k = 0u; k < {DEPTH}u; k = k + 1u) {{\n"));
    for b in 0..blocks {
        s.push_str(&format!(
            "            let a{b} = As[k * {t4}u + {o}u + lid.y];\n            let b{b} = Bs[k * {t4}u + {o}u + lid.x];\n",
            o = b * 16
        ));
    }
    for bi in 0..blocks {
        for (r, lane) in LANES.iter().enumerate() {
            for bj in 0..blocks {
                s.push_str(&format!(
                    "            c{bi}{r}{bj} = fma(vec4<f32>(a{bi}.{lane}), b{bj}, c{bi}{r}{bj});\n"
                ));
            }
        }
    }
    s.push_str("        }\n        workgroupBarrier();\n    }\n");
    for bi in 0..blocks {
        for r in 0..4 {
            for bj in 0..blocks {
                s.push_str(&format!(
                    "    {{\n        let gr = row0 + {}u + lid.y * 4u;\n        let gc = col0 + {}u + lid.x * 4u;\n        if (gr < M && gc < N) {{\n{}        }}\n    }}\n",
                    bi * 64 + r,
                    bj * 64,
                    store_quad(output, &format!("c{bi}{r}{bj}"), "gr", "gc")
                ));
            }
        }
    }
    s.push_str("}\n");
    s
}

/// The `rows` kernel for `m` (at most `ROWS`) rows of A. `aligned`: N is a whole number of vec4s,
/// so B's rows and the output's are read and written as vec4s; otherwise (a vocabulary of 51,865)
/// each thread's four columns are read and written one by one, the last ones past N skipped, and
/// K is not split.
fn source_rows(m: usize, output: Output, b: Weights, aligned: bool) -> String {
    let mut s = b.enable();
    s.push_str(&prelude());
    s.push_str(&binding(1, "A", Scalar::F32, false));
    let lanes = if aligned {
        format!("vec4<{}>", b.wgsl())
    } else {
        b.wgsl().to_string()
    };
    s.push_str(&format!(
        "@group(0) @binding(2) var<storage, read> B: array<{lanes}>;\n"
    ));
    if aligned {
        output_bindings(&mut s, output);
    } else {
        let has_c = matches!(output, Output::Final { has_c: true });
        if has_c {
            s.push_str(&binding(3, "C", Scalar::F32, false));
        }
        s.push_str(&binding(if has_c { 4 } else { 3 }, "out0", Scalar::F32, true));
    }
    s.push_str(&format!(
        "var<workgroup> red: array<vec4<f32>, {}>;\n\n\
         @compute @workgroup_size(256, 1, 1)\n\
         fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{\n",
        256 * m
    ));
    s.push_str(BATCH);
    s.push_str(&format!(
        "    let quad = lid % 16u;\n    let slice = lid / 16u;\n    let col = wid.x * {ROWS_COLUMNS}u + quad * 4u;\n"
    ));
    for r in 0..m {
        s.push_str(&format!("    var acc{r} = vec4<f32>(0.0);\n"));
    }
    // Four of the thread's K rows a pass, their loads issued before any is used: a pass with one
    // load waits a memory latency for it. The sums take the rows in the same order either way.
    s.push_str(&format!(
        "    if (col < N) {{\n        for (var k0 = kBegin + slice; k0 < kEnd; k0 = k0 + {}u) {{\n",
        16 * UNROLL
    ));
    for u in 0..UNROLL {
        s.push_str(&format!(
            "            let k{u} = k0 + {o}u;\n            var b{u} = vec4<f32>(0.0);\n            if (k{u} < kEnd) {{\n",
            o = 16 * u
        ));
        if aligned {
            s.push_str(&format!(
                "                b{u} = vec4<f32>(B[(offB + k{u} * N + col) / 4u]);\n"
            ));
        } else {
            s.push_str(&format!(
                "                let at = offB + k{u} * N + col;\n                b{u}.x = f32(B[at]);\n                if (col + 1u < N) {{ b{u}.y = f32(B[at + 1u]); }}\n                if (col + 2u < N) {{ b{u}.z = f32(B[at + 2u]); }}\n                if (col + 3u < N) {{ b{u}.w = f32(B[at + 3u]); }}\n"
            ));
        }
        s.push_str("            }\n");
    }
    for u in 0..UNROLL {
        s.push_str(&format!("            if (k{u} < kEnd) {{\n"));
        for r in 0..m {
            s.push_str(&format!(
                "                acc{r} = fma(vec4<f32>(A[offA + {r}u * p(28u) + k{u} * p(29u)]), b{u}, acc{r});\n"
            ));
        }
        s.push_str("            }\n");
    }
    s.push_str("        }\n    }\n");
    for r in 0..m {
        s.push_str(&format!("    red[lid * {m}u + {r}u] = acc{r};\n"));
    }
    s.push_str("    workgroupBarrier();\n    if (slice == 0u && col < N) {\n");
    for r in 0..m {
        let store = if aligned {
            store_quad(output, "sum", "gr", "col")
        } else {
            store_lanes(output, "sum", "gr", "col")
        };
        s.push_str(&format!(
            "        {{\n            var sum = vec4<f32>(0.0);\n            for (var t = 0u; t < 16u; t = t + 1u) {{ sum = sum + red[(t * 16u + quad) * {m}u + {r}u]; }}\n            let gr = {r}u;\n{store}        }}\n"
        ));
    }
    s.push_str("    }\n}\n");
    s
}

/// WGSL storing the vec4 `v` of row `gr` into columns `gc..gc + 4` one by one, those past N
/// skipped (a final output of scalars; C read the same way).
fn store_lanes(output: Output, v: &str, gr: &str, gc: &str) -> String {
    let mut s = format!("var v = pf(32u) * {v};\nlet o = bz * M * N + {gr} * N + {gc};\n");
    let has_c = matches!(output, Output::Final { has_c: true });
    for (j, lane) in LANES.iter().enumerate() {
        let mut value = format!("v.{lane}");
        if has_c {
            value = format!("{value} + pf(33u) * C[offC + {gr} * p(34u) + ({gc} + {j}u) * p(35u)]");
        }
        s.push_str(&format!("if ({gc} + {j}u < N) {{ out0[o + {j}u] = {value}; }}\n"));
    }
    s
}

/// The dispatch that adds the splits' partial sums (scratch 0) and applies the epilogue.
/// `params` (after the count of output vec4s, which this prepends): 1 M, 2 N, 3 splits,
/// 4 elements per split, 5 alpha, 6 beta, 7 rsC, 8 csC.
fn sum_splits(args: &Operands, per_split: usize, params: Vec<u32>) -> Dispatch {
    let has_c = args.c.is_some();
    let mut s = prelude();
    s.push_str("@group(0) @binding(1) var<storage, read> part: array<vec4<f32>>;\n");
    let out_binding = if has_c {
        s.push_str(&binding(2, "C", Scalar::F32, false));
        3
    } else {
        2
    };
    s.push_str(&format!(
        "@group(0) @binding({out_binding}) var<storage, read_write> out0: array<vec4<f32>>;\n"
    ));
    s.push_str(super::ENTRY_1D);
    s.push_str(
        "    var v = vec4<f32>(0.0);\n    for (var t = 0u; t < p(3u); t = t + 1u) { v = v + part[(t * p(4u)) / 4u + i]; }\n    v = pf(5u) * v;\n",
    );
    if has_c {
        s.push_str(
            "    let e = (i * 4u) % (p(1u) * p(2u));\n    let cb = (e / p(2u)) * p(7u) + (e % p(2u)) * p(8u);\n    v = v + pf(6u) * vec4<f32>(C[cb], C[cb + p(8u)], C[cb + 2u * p(8u)], C[cb + 3u * p(8u)]);\n",
        );
    }
    s.push_str("    out0[i] = v;\n}\n");
    let mut bound = vec![Arg::Scratch(args.partials)];
    bound.extend(args.c);
    bound.push(args.out);
    dispatch_1d(s, bound, per_split / 4, params)
}

/// How many pieces to split K into so that `groups` workgroups become about `FILL`, each piece at
/// least `min_depth` deep; and the depth of each (a multiple of `DEPTH`).
fn split_k(groups: usize, k: usize, min_depth: usize) -> (usize, usize) {
    let want = if groups >= FILL / 2 {
        1
    } else {
        FILL.div_ceil(groups.max(1))
    };
    let splits = want.min(k / min_depth).max(1);
    let depth = k.div_ceil(splits).div_ceil(DEPTH) * DEPTH;
    (k.div_ceil(depth).max(1), depth.max(DEPTH))
}

/// The `any` kernel.
fn source_any(has_c: bool, b: Weights) -> String {
    let mut s = b.enable();
    s.push_str(&prelude());
    s.push_str(&binding(1, "A", Scalar::F32, false));
    s.push_str(&format!(
        "@group(0) @binding(2) var<storage, read> B: array<{}>;\n",
        b.wgsl()
    ));
    if has_c {
        s.push_str(&binding(3, "C", Scalar::F32, false));
        s.push_str(&binding(4, "out0", Scalar::F32, true));
    } else {
        s.push_str(&binding(3, "out0", Scalar::F32, true));
    }
    s.push_str(
        "var<workgroup> As: array<f32, 1024>;
var<workgroup> Bs: array<f32, 1024>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
",
    );
    s.push_str(BATCH);
    s.push_str(
        "    let rsA = p(28u);
    let csA = p(29u);
    let rsB = p(30u);
    let csB = p(31u);
    let row0 = wid.y * 64u;
    let col0 = wid.x * 64u;
    let tid = lid.y * 16u + lid.x;
",
    );
    for r in 0..4 {
        for c in 0..4 {
            s.push_str(&format!("    var c{r}{c} = 0.0;\n"));
        }
    }
    s.push_str(
        "    for (var k0 = 0u; k0 < K; k0 = k0 + 16u) {
        for (var l = 0u; l < 4u; l = l + 1u) {
            let e = tid + l * 256u;
            let m = e / 16u;
            let ka = e % 16u;
            let gr = row0 + m;
            let gk = k0 + ka;
            var v = 0.0;
            if (gr < M && gk < K) { v = A[offA + gr * rsA + gk * csA]; }
            As[ka * 64u + m] = v;
            let kb = e / 64u;
            let n = e % 64u;
            let gkb = k0 + kb;
            let gc = col0 + n;
            var w = 0.0;
            if (gkb < K && gc < N) { w = f32(B[offB + gkb * rsB + gc * csB]); }
            Bs[kb * 64u + n] = w;
        }
        workgroupBarrier();
        for (var k = 0u; k < 16u; k = k + 1u) {
",
    );
    for r in 0..4 {
        s.push_str(&format!("            let a{r} = As[k * 64u + lid.y + {}u];\n", r * 16));
    }
    for c in 0..4 {
        s.push_str(&format!("            let b{c} = Bs[k * 64u + lid.x + {}u];\n", c * 16));
    }
    for r in 0..4 {
        for c in 0..4 {
            s.push_str(&format!("            c{r}{c} = fma(a{r}, b{c}, c{r}{c});\n"));
        }
    }
    s.push_str("        }\n        workgroupBarrier();\n    }\n");
    for r in 0..4 {
        for c in 0..4 {
            s.push_str(&format!(
                "    {{\n        let gr = row0 + lid.y + {}u;\n        let gc = col0 + lid.x + {}u;\n        if (gr < M && gc < N) {{\n            var v = pf(32u) * c{r}{c};\n",
                16 * r,
                16 * c
            ));
            if has_c {
                s.push_str("            v = v + pf(33u) * C[offC + gr * p(34u) + gc * p(35u)];\n");
            }
            s.push_str("            out0[bz * M * N + gr * N + gc] = v;\n        }\n    }\n");
        }
    }
    s.push_str("}\n");
    s
}

/// MatMul (batched, batch axes broadcast) and Gemm.
pub fn matmul(io: &StepIo) -> Result<Kernels> {
    let b = Weights::of(io, 1)?;
    if io.scalar_in(0)? != Scalar::F32 {
        return Err(io.refuse(format!("a product of {} tensors", io.ins[0].dtype)));
    }
    let out = &io.outs[0].shape;
    let (sa, sb) = (&io.ins[0].shape, &io.ins[1].shape);
    let n = out[out.len() - 1];
    let full_batch = &out[..out.len() - 2];
    // A batch of products by one B (a weight; B's batch axes, if any, all 1) is one product of
    // batch x M rows: the rows fill tiles across the batch, and a decoding batch reads B once.
    let b_shared = sb.len() <= 2 || sb[..sb.len() - 2].iter().all(|&d| d == 1);
    let a_whole = sa.len() >= 2 && sa[..sa.len() - 2] == *full_batch;
    let fold = matches!(io.step.op, Op::MatMul) && b_shared && a_whole && !full_batch.is_empty();
    let (m, batch_shape): (usize, &[usize]) = if fold {
        (full_batch.iter().product::<usize>() * out[out.len() - 2], &[])
    } else {
        (out[out.len() - 2], full_batch)
    };
    if batch_shape.len() > MAX_BATCH {
        return Err(io.refuse(format!("products with more than {MAX_BATCH} batch axes")));
    }
    // Strides of each operand's batch axes broadcast to the output's.
    let batch_strides = |shape: &[usize]| -> Vec<u32> {
        if batch_shape.is_empty() {
            // No batch, or one folded into the rows.
            return Vec::new();
        }
        let own = strides(shape);
        let b = shape.len().saturating_sub(2);
        let off = batch_shape.len() - b;
        (0..batch_shape.len())
            .map(|a| {
                if a < off || shape[a - off] == 1 {
                    0
                } else {
                    word(own[a - off])
                }
            })
            .collect()
    };
    let (k, rs_a, cs_a, rs_b, cs_b, alpha, beta, has_c) = match &io.step.op {
        Op::MatMul => {
            let k = sa[sa.len() - 1];
            (k, k, 1, n, 1, 1.0, 0.0, false)
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let k = if *trans_a { sa[0] } else { sa[1] };
            let (rs_a, cs_a) = if *trans_a { (1, m) } else { (k, 1) };
            let (rs_b, cs_b) = if *trans_b { (1, k) } else { (n, 1) };
            (k, rs_a, cs_a, rs_b, cs_b, *alpha, *beta, io.ins.len() > 2)
        }
        _ => return Err(io.refuse("this op")),
    };
    // C broadcasts to (M, N): its strides along them (a Gemm's C has no batch axes).
    let c_strides = if has_c {
        if io.scalar_in(2)? != Scalar::F32 {
            return Err(io.refuse(format!("a Gemm with C of {}", io.ins[2].dtype)));
        }
        let sc = &io.ins[2].shape;
        let own = strides(sc);
        let at = |axis_from_end: usize| -> u32 {
            if sc.len() < axis_from_end {
                return 0;
            }
            let a = sc.len() - axis_from_end;
            if sc[a] == 1 { 0 } else { word(own[a]) }
        };
        Some([at(2), at(1)])
    } else {
        None
    };
    let p = Product {
        m,
        n,
        k,
        batch_shape: batch_shape.to_vec(),
        a_batch_strides: batch_strides(sa),
        b_batch_strides: batch_strides(sb),
        rs_a,
        cs_a,
        rs_b,
        cs_b,
        alpha,
        beta,
        c_strides,
        b,
    };
    let args = Operands {
        a: Arg::In(0),
        b: Arg::In(1),
        c: has_c.then_some(Arg::In(2)),
        out: Arg::Out(0),
        partials: 0,
    };
    let (dispatches, partials) = product(io, &p, &args)?;
    Ok(Kernels {
        dispatches,
        scratch: partials.into_iter().collect(),
        ..Default::default()
    })
}

/// A product as the kernels take it: out = alpha * A B (+ beta * C), A (M, K) and B (K, N) read
/// through their strides (rs: between rows, cs: between columns), over `batch_shape` with the
/// operands' batch axes broadcast by stride 0; C broadcast to (M, N) by its two strides.
pub struct Product {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch_shape: Vec<usize>,
    pub a_batch_strides: Vec<u32>,
    pub b_batch_strides: Vec<u32>,
    pub rs_a: usize,
    pub cs_a: usize,
    pub rs_b: usize,
    pub cs_b: usize,
    pub alpha: f32,
    pub beta: f32,
    pub c_strides: Option<[u32; 2]>,
    /// How B is stored.
    pub b: Weights,
}

/// The buffers a product binds: A, B, C where it has one, the output, and the scratch buffer its
/// K splits add up in (an index into the step's scratch).
pub struct Operands {
    pub a: Arg,
    pub b: Arg,
    pub c: Option<Arg>,
    pub out: Arg,
    pub partials: usize,
}

/// The dispatches of a product (`io` names the step in errors), and the bytes of the scratch
/// buffer its K splits need, where K is split.
pub fn product(io: &StepIo, p: &Product, args: &Operands) -> Result<(Vec<Dispatch>, Option<u64>)> {
    let Product {
        m,
        n,
        k,
        rs_a,
        cs_a,
        rs_b,
        cs_b,
        alpha,
        beta,
        b,
        ..
    } = *p;
    let batch_shape = &p.batch_shape;
    let has_c = p.c_strides.is_some();
    let c_strides = p.c_strides.unwrap_or([0, 0]);
    let pad6 = |v: Vec<u32>| -> Vec<u32> {
        let mut v = v;
        v.resize(MAX_BATCH, 0);
        v
    };
    let mut params = vec![word(m), word(n), word(k), word(batch_shape.len())];
    params.extend(pad6(batch_shape.iter().map(|&d| word(d)).collect()));
    params.extend(pad6(p.a_batch_strides.clone()));
    params.extend(pad6(p.b_batch_strides.clone()));
    params.extend(pad6(vec![]));
    params.extend([
        word(rs_a),
        word(cs_a),
        word(rs_b),
        word(cs_b),
        fword(alpha),
        fword(beta),
    ]);
    params.extend(c_strides);
    let batch = batch_shape.iter().product::<usize>().max(1);
    // The vec4 kernels want rows of A and of B (or B transposed) that are whole vec4s along K,
    // and output rows of whole vec4s.
    let a_rows = cs_a == 1 && rs_a == k;
    let b_rows = cs_b == 1 && rs_b == n;
    let b_transposed = rs_b == 1 && cs_b == k;
    let vec4s = a_rows && k.is_multiple_of(4) && n.is_multiple_of(4);
    let final_out = Output::Final { has_c };
    let (groups_xy, splits, depth, src) = if m <= ROWS && b_rows {
        let columns = n.div_ceil(ROWS_COLUMNS);
        let aligned = n.is_multiple_of(4);
        let (splits, depth) = if aligned {
            split_k(columns * batch, k, 8 * DEPTH)
        } else {
            (1, k.max(1))
        };
        let out = if splits > 1 { Output::Partial } else { final_out };
        ([columns, 1], splits, depth, source_rows(m, out, b, aligned))
    } else if vec4s && (b_rows || b_transposed) {
        let tiles = |t: usize| m.div_ceil(t) * n.div_ceil(t) * batch;
        let tile = if m >= 128 && n >= 128 && tiles(128) >= FILL {
            128
        } else {
            64
        };
        let (splits, depth) = split_k(tiles(tile), k, 16 * DEPTH);
        let out = if splits > 1 { Output::Partial } else { final_out };
        (
            [n.div_ceil(tile), m.div_ceil(tile)],
            splits,
            depth,
            source_tiled(tile, b_transposed, out, b),
        )
    } else {
        ([n.div_ceil(TILE), m.div_ceil(TILE)], 1, k.max(1), source_any(has_c, b))
    };
    params.extend([word(splits), word(depth), word(batch)]);
    let groups = [groups_xy[0].max(1), groups_xy[1].max(1), batch * splits];
    if groups.iter().any(|&g| g > 65535) {
        return Err(io.refuse(format!(
            "a product of {m} x {n} in a batch of {batch} ({} x {} x {} workgroups, at most 65535 each)",
            groups[0], groups[1], groups[2]
        )));
    }
    let groups = groups.map(|g| g as u32);
    let mut bound = vec![args.a, args.b];
    if splits == 1 {
        bound.extend(args.c);
        bound.push(args.out);
        return Ok((
            vec![Dispatch {
                source: src,
                args: bound,
                params,
                groups,
            }],
            None,
        ));
    }
    let per_split = batch * m * n;
    bound.push(Arg::Scratch(args.partials));
    Ok((
        vec![
            Dispatch {
                source: src,
                args: bound,
                params,
                groups,
            },
            sum_splits(
                args,
                per_split,
                vec![
                    word(m),
                    word(n),
                    word(splits),
                    word(per_split),
                    fword(alpha),
                    fword(beta),
                    c_strides[0],
                    c_strides[1],
                ],
            ),
        ],
        Some((splits * per_split * 4) as u64),
    ))
}
