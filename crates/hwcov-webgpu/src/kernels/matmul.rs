//! MatMul and Gemm, in two tiled kernels with Gemm's alpha * AB + beta * C as the epilogue and batch
//! axes broadcast by stride 0:
//!
//! - `wide`, for products whose rows of A, B (or B transposed, Gemm's transB) and the output are
//!   whole vec4s: a workgroup of 16 x 16 threads computes a 128 x 128 tile, each thread 8 x 8
//!   elements as two 4-row by two 4-column blocks 64 apart (neighbouring threads read neighbouring
//!   vec4s of workgroup memory and write neighbouring vec4s of the output); A and B pass through
//!   workgroup memory 8 deep along K, loaded as vec4s.
//! - `any`, for the rest: 64 x 64 tiles, each thread 4 x 4 elements spaced 16 apart, every operand
//!   read through strides (so a transposed one costs no copy), 16 deep along K.
//! - `rows`, for products of at most 4 rows (a decoding step) with B in rows of whole vec4s: each
//!   workgroup takes 128 columns, its 256 threads 32 column vec4s by 8 slices of K, each thread
//!   reading B once and keeping every row's sums; the slices add up in workgroup memory. Reading B
//!   once is what such a product costs; the tiled kernels would spend most of their arithmetic on
//!   rows that are not there.

use hwcov_core::Result;
use hwcov_onnx::ir::Op;

use super::{Arg, Dispatch, Kernels, Scalar, StepIo, binding, fword, prelude, strides, word};

/// The most batch axes a product indexes.
const MAX_BATCH: usize = 6;

const TILE: usize = 64;
const WIDE_TILE: usize = 128;
/// The most rows of the `rows` kernel, and the columns one of its workgroups takes.
const ROWS: usize = 4;
const ROWS_COLUMNS: usize = 128;

/// WGSL: the product's sizes, and the offsets of A, B and C in the workgroup's batch (`wid.z`),
/// the batch axes broadcast by stride.
const BATCH: &str = "    let M = p(0u);
    let N = p(1u);
    let K = p(2u);
    var rem = wid.z;
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

/// The `wide` kernel; `b_transposed` reads B as (N, K) rows.
fn source_wide(has_c: bool, b_transposed: bool) -> String {
    let mut s = prelude();
    s.push_str("@group(0) @binding(1) var<storage, read> A: array<vec4<f32>>;\n");
    s.push_str("@group(0) @binding(2) var<storage, read> B: array<vec4<f32>>;\n");
    if has_c {
        s.push_str(&binding(3, "C", Scalar::F32, false));
        s.push_str("@group(0) @binding(4) var<storage, read_write> out0: array<vec4<f32>>;\n");
    } else {
        s.push_str("@group(0) @binding(3) var<storage, read_write> out0: array<vec4<f32>>;\n");
    }
    // Parameters as `any`'s (offsets in elements; every one a multiple of 4 here).
    let load_b = if b_transposed {
        // B^T rows along K: thread t loads row col0 + t/2, K quad (t%2)*4, and spreads it over k.
        "        let bn = tid / 2u;
        let bkq = (tid % 2u) * 4u;
        let gbn = col0 + bn;
        var bv = vec4<f32>(0.0);
        if (gbn < N && k0 + bkq < K) { bv = B[(offB + gbn * K + k0 + bkq) / 4u]; }
        for (var j = 0u; j < 4u; j = j + 1u) { Bs[(bkq + j) * 32u + bn / 4u][bn % 4u] = bv[j]; }
"
    } else {
        "        let kb = tid / 32u;
        let nq = tid % 32u;
        let gkb = k0 + kb;
        let gn = col0 + nq * 4u;
        var bv = vec4<f32>(0.0);
        if (gkb < K && gn < N) { bv = B[(offB + gkb * N + gn) / 4u]; }
        Bs[kb * 32u + nq] = bv;
"
    };
    s.push_str(
        "var<workgroup> As: array<vec4<f32>, 256>;
var<workgroup> Bs: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
",
    );
    s.push_str(BATCH);
    s.push_str(
        "    let row0 = wid.y * 128u;
    let col0 = wid.x * 128u;
    let tid = lid.y * 16u + lid.x;
    var acc: array<vec4<f32>, 16>;
    for (var k0 = 0u; k0 < K; k0 = k0 + 8u) {
        // A: thread t loads row row0 + t/2, K quad (t%2)*4, and spreads it over k.
        let am = tid / 2u;
        let akq = (tid % 2u) * 4u;
        let gam = row0 + am;
        var av = vec4<f32>(0.0);
        if (gam < M && k0 + akq < K) { av = A[(offA + gam * K + k0 + akq) / 4u]; }
        for (var j = 0u; j < 4u; j = j + 1u) { As[(akq + j) * 32u + am / 4u][am % 4u] = av[j]; }
",
    );
    s.push_str(load_b);
    s.push_str(
        "        workgroupBarrier();
        for (var k = 0u; k < 8u; k = k + 1u) {
            let a0 = As[k * 32u + lid.y];
            let a1 = As[k * 32u + 16u + lid.y];
            let b0 = Bs[k * 32u + lid.x];
            let b1 = Bs[k * 32u + 16u + lid.x];
            acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
            acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
            acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]);
            acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
            acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]);
            acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
            acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]);
            acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
            acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]);
            acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
            acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]);
            acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
            acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]);
            acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
            acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]);
            acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
        }
        workgroupBarrier();
    }
    let offO = wid.z * M * N;
    for (var i = 0u; i < 8u; i = i + 1u) {
        let gr = row0 + lid.y * 4u + (i % 4u) + (i / 4u) * 64u;
        for (var q = 0u; q < 2u; q = q + 1u) {
            let gc = col0 + lid.x * 4u + q * 64u;
            if (gr < M && gc < N) {
                var v = pf(32u) * acc[i * 2u + q];
",
    );
    if has_c {
        s.push_str(
            "                let cb = offC + gr * p(34u) + gc * p(35u);
                v = v + pf(33u) * vec4<f32>(C[cb], C[cb + p(35u)], C[cb + 2u * p(35u)], C[cb + 3u * p(35u)]);
",
        );
    }
    s.push_str(
        "                out0[(offO + gr * N + gc) / 4u] = v;
            }
        }
    }
}
",
    );
    s
}

/// The `rows` kernel (at most `ROWS` rows of A).
fn source_rows(has_c: bool) -> String {
    let mut s = prelude();
    s.push_str(&binding(1, "A", Scalar::F32, false));
    s.push_str("@group(0) @binding(2) var<storage, read> B: array<vec4<f32>>;\n");
    if has_c {
        s.push_str(&binding(3, "C", Scalar::F32, false));
        s.push_str("@group(0) @binding(4) var<storage, read_write> out0: array<vec4<f32>>;\n");
    } else {
        s.push_str("@group(0) @binding(3) var<storage, read_write> out0: array<vec4<f32>>;\n");
    }
    s.push_str(
        "var<workgroup> red: array<vec4<f32>, 1024>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
",
    );
    s.push_str(BATCH);
    s.push_str(
        "    let quad = lid % 32u;
    let slice = lid / 32u;
    let col = wid.x * 128u + quad * 4u;
    var acc: array<vec4<f32>, 4>;
    if (col < N) {
        for (var k = slice; k < K; k = k + 8u) {
            let b = B[(offB + k * N + col) / 4u];
            for (var r = 0u; r < M; r = r + 1u) {
                acc[r] = fma(vec4<f32>(A[offA + r * p(28u) + k * p(29u)]), b, acc[r]);
            }
        }
    }
    for (var r = 0u; r < 4u; r = r + 1u) { red[(slice * 32u + quad) * 4u + r] = acc[r]; }
    workgroupBarrier();
    if (slice == 0u && col < N) {
        for (var r = 0u; r < M; r = r + 1u) {
            var v = vec4<f32>(0.0);
            for (var t = 0u; t < 8u; t = t + 1u) { v = v + red[(t * 32u + quad) * 4u + r]; }
            v = pf(32u) * v;
",
    );
    if has_c {
        s.push_str(
            "            let cb = offC + r * p(34u) + col * p(35u);
            v = v + pf(33u) * vec4<f32>(C[cb], C[cb + p(35u)], C[cb + 2u * p(35u)], C[cb + 3u * p(35u)]);
",
        );
    }
    s.push_str(
        "            out0[(wid.z * M * N + r * N + col) / 4u] = v;
        }
    }
}
",
    );
    s
}

/// The `any` kernel.
fn source(has_c: bool) -> String {
    let mut s = prelude();
    s.push_str(&binding(1, "A", Scalar::F32, false));
    s.push_str(&binding(2, "B", Scalar::F32, false));
    if has_c {
        s.push_str(&binding(3, "C", Scalar::F32, false));
        s.push_str(&binding(4, "out0", Scalar::F32, true));
    } else {
        s.push_str(&binding(3, "out0", Scalar::F32, true));
    }
    // Parameters: 0 M, 1 N, 2 K, 3 batch rank, 4..10 batch dims, 10..16 A batch strides,
    // 16..22 B batch strides, 22..28 C batch strides, 28 rsA, 29 csA, 30 rsB, 31 csB,
    // 32 alpha, 33 beta, 34 rsC, 35 csC.
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
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < K; k0 = k0 + 16u) {
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
            if (gkb < K && gc < N) { w = B[offB + gkb * rsB + gc * csB]; }
            Bs[kb * 64u + n] = w;
        }
        workgroupBarrier();
        for (var k = 0u; k < 16u; k = k + 1u) {
            let a0 = As[k * 64u + lid.y];
            let a1 = As[k * 64u + lid.y + 16u];
            let a2 = As[k * 64u + lid.y + 32u];
            let a3 = As[k * 64u + lid.y + 48u];
            let b0 = Bs[k * 64u + lid.x];
            let b1 = Bs[k * 64u + lid.x + 16u];
            let b2 = Bs[k * 64u + lid.x + 32u];
            let b3 = Bs[k * 64u + lid.x + 48u];
            acc[0] = fma(a0, b0, acc[0]);
            acc[1] = fma(a0, b1, acc[1]);
            acc[2] = fma(a0, b2, acc[2]);
            acc[3] = fma(a0, b3, acc[3]);
            acc[4] = fma(a1, b0, acc[4]);
            acc[5] = fma(a1, b1, acc[5]);
            acc[6] = fma(a1, b2, acc[6]);
            acc[7] = fma(a1, b3, acc[7]);
            acc[8] = fma(a2, b0, acc[8]);
            acc[9] = fma(a2, b1, acc[9]);
            acc[10] = fma(a2, b2, acc[10]);
            acc[11] = fma(a2, b3, acc[11]);
            acc[12] = fma(a3, b0, acc[12]);
            acc[13] = fma(a3, b1, acc[13]);
            acc[14] = fma(a3, b2, acc[14]);
            acc[15] = fma(a3, b3, acc[15]);
        }
        workgroupBarrier();
    }
    let offO = wid.z * M * N;
    for (var r = 0u; r < 4u; r = r + 1u) {
        let gr = row0 + lid.y + 16u * r;
        for (var c = 0u; c < 4u; c = c + 1u) {
            let gc = col0 + lid.x + 16u * c;
            if (gr < M && gc < N) {
                var v = pf(32u) * acc[r * 4u + c];
",
    );
    if has_c {
        s.push_str("                v = v + pf(33u) * C[offC + gr * p(34u) + gc * p(35u)];\n");
    }
    s.push_str(
        "                out0[offO + gr * N + gc] = v;
            }
        }
    }
}
",
    );
    s
}

/// MatMul (batched, batch axes broadcast) and Gemm.
pub fn matmul(io: &StepIo) -> Result<Kernels> {
    if io.scalar_in(0)? != Scalar::F32 || io.scalar_in(1)? != Scalar::F32 {
        return Err(io.refuse(format!("a product of {} tensors", io.ins[0].dtype)));
    }
    let out = &io.outs[0].shape;
    let (sa, sb) = (&io.ins[0].shape, &io.ins[1].shape);
    let (m, n) = (out[out.len() - 2], out[out.len() - 1]);
    let batch_shape = &out[..out.len() - 2];
    if batch_shape.len() > MAX_BATCH {
        return Err(io.refuse(format!("products with more than {MAX_BATCH} batch axes")));
    }
    let batch: usize = batch_shape.iter().product();
    if batch > 65535 {
        return Err(io.refuse(format!("a batch of {batch} products (at most 65535)")));
    }
    // Strides of each operand's batch axes broadcast to the output's.
    let batch_strides = |shape: &[usize]| -> Vec<u32> {
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
    let pad6 = |v: Vec<u32>| -> Vec<u32> {
        let mut v = v;
        v.resize(MAX_BATCH, 0);
        v
    };
    let mut params = vec![word(m), word(n), word(k), word(batch_shape.len())];
    params.extend(pad6(batch_shape.iter().map(|&d| word(d)).collect()));
    params.extend(pad6(batch_strides(sa)));
    params.extend(pad6(batch_strides(sb)));
    params.extend(pad6(vec![]));
    params.extend([
        word(rs_a),
        word(cs_a),
        word(rs_b),
        word(cs_b),
        fword(alpha),
        fword(beta),
    ]);
    let mut args = vec![Arg::In(0), Arg::In(1)];
    if has_c {
        if io.scalar_in(2)? != Scalar::F32 {
            return Err(io.refuse(format!("a Gemm with C of {}", io.ins[2].dtype)));
        }
        // C broadcasts to (M, N).
        let sc = &io.ins[2].shape;
        let own = strides(sc);
        let at = |axis_from_end: usize| -> u32 {
            if sc.len() < axis_from_end {
                return 0;
            }
            let a = sc.len() - axis_from_end;
            if sc[a] == 1 { 0 } else { word(own[a]) }
        };
        params.extend([at(2), at(1)]);
        args.push(Arg::In(2));
    }
    args.push(Arg::Out(0));
    // The wide kernel wants rows of A and of B (or B transposed) that are whole vec4s along K,
    // output rows of whole vec4s, and a product big enough to fill its tiles.
    let a_rows = cs_a == 1 && rs_a == k;
    let b_rows = cs_b == 1 && rs_b == n;
    let b_transposed = rs_b == 1 && cs_b == k;
    let wide = a_rows && (b_rows || b_transposed) && k % 4 == 0 && n % 4 == 0 && m >= 64 && n >= 64;
    // The rows kernel wants few rows, and B in rows of whole vec4s.
    let few_rows = m <= ROWS && b_rows && n % 4 == 0;
    let (tile, src) = if few_rows {
        (ROWS_COLUMNS, source_rows(has_c))
    } else if wide {
        (WIDE_TILE, source_wide(has_c, !b_rows))
    } else {
        (TILE, source(has_c))
    };
    let groups = [
        n.div_ceil(tile).max(1) as u32,
        if few_rows { 1 } else { m.div_ceil(tile).max(1) as u32 },
        batch.max(1) as u32,
    ];
    if groups[0] > 65535 || groups[1] > 65535 {
        return Err(io.refuse(format!("a product of {m} x {n} (too many tiles)")));
    }
    Ok(Kernels {
        dispatches: vec![Dispatch {
            source: src,
            args,
            params,
            groups,
        }],
        ..Default::default()
    })
}
