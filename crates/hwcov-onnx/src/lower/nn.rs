//! The network ops: products (MatMul, Gemm, Einsum), Softmax and the norms, reductions and
//! ArgMax/ArgMin, convolution and pooling, Resize.

use super::*;

/// MatMul, numpy's: a 1-D operand is promoted to a matrix and its axis dropped from the result.
pub(super) fn matmul_node(cx: Cx, node: &Node) -> Result<()> {
    let (a, b) = (cx.required(node, 0)?, cx.required(node, 1)?);
    let y = matmul(cx, node, a, b)?;
    cx.bind(node, 0, y);
    Ok(())
}

pub(super) fn matmul(cx: Cx, node: &Node, a: Val, b: Val) -> Result<Val> {
    let (ta, tb) = (cx.ty(&a), cx.ty(&b));
    if ta.rank() == 0 || tb.rank() == 0 {
        return Err(cx.node_error(node, "operands must have rank 1 or more"));
    }
    // numpy: a 1-D left operand is a row, a 1-D right one a column; both dropped from the result.
    let a2 = if ta.rank() == 1 {
        view(cx, node, a, vec![1, ta.shape[0]])?
    } else {
        a
    };
    let b2 = if tb.rank() == 1 {
        view(cx, node, b, vec![tb.shape[0], 1])?
    } else {
        b
    };
    let (sa, sb) = (cx.ty(&a2).shape, cx.ty(&b2).shape);
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let (k2, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
    if k != k2 || ta.dtype != tb.dtype {
        return Err(cx.node_error(node, format!("cannot multiply {ta} by {tb}")));
    }
    let batch = broadcast(&[&sa[..sa.len() - 2], &sb[..sb.len() - 2]]).ok_or_else(|| {
        cx.node_error(
            node,
            format!("batch axes of {:?} and {:?} do not broadcast", ta.shape, tb.shape),
        )
    })?;
    let mut shape = batch.clone();
    shape.extend([m, n]);
    let y = cx.emit1(node, Op::MatMul, &[a2, b2], ValueType::new(ta.dtype, shape))?;
    let mut out = batch;
    if ta.rank() != 1 {
        out.push(m);
    }
    if tb.rank() != 1 {
        out.push(n);
    }
    view(cx, node, y, out)
}

pub(super) fn gemm(cx: Cx, node: &Node) -> Result<()> {
    let (a, b) = (cx.required(node, 0)?, cx.required(node, 1)?);
    let c = cx.input(node, 2)?;
    let (ta, tb) = (cx.ty(&a), cx.ty(&b));
    let trans_a = node.int("transA").unwrap_or(0) != 0;
    let trans_b = node.int("transB").unwrap_or(0) != 0;
    if ta.rank() != 2 || tb.rank() != 2 {
        return Err(cx.node_error(node, format!("A {:?} and B {:?} must be matrices", ta.shape, tb.shape)));
    }
    let (m, k) = if trans_a {
        (ta.shape[1], ta.shape[0])
    } else {
        (ta.shape[0], ta.shape[1])
    };
    let (k2, n) = if trans_b {
        (tb.shape[1], tb.shape[0])
    } else {
        (tb.shape[0], tb.shape[1])
    };
    if k != k2 {
        return Err(cx.node_error(node, format!("inner sizes {k} and {k2} differ")));
    }
    let mut operands = vec![a, b];
    if let Some(c) = c {
        let tc = cx.ty(&c);
        if broadcast(&[&tc.shape, &[m, n]]).as_deref() != Some(&[m, n][..]) {
            return Err(cx.node_error(node, format!("C {:?} does not broadcast to ({m}, {n})", tc.shape)));
        }
        operands.push(c);
    }
    let op = Op::Gemm {
        alpha: node.float("alpha").unwrap_or(1.0),
        beta: node.float("beta").unwrap_or(1.0),
        trans_a,
        trans_b,
    };
    let y = cx.emit1(node, op, &operands, ValueType::new(ta.dtype, vec![m, n]))?;
    cx.bind(node, 0, y);
    Ok(())
}

pub(super) fn softmax(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    let hard = node.op_type == "Hardmax";
    let log = node.op_type == "LogSoftmax";
    let make = |axis| {
        if hard {
            Op::Hardmax { axis }
        } else {
            Op::Softmax { axis, log }
        }
    };
    let y = if cx.opset() < 13 {
        // Before opset 13 the input is seen as a matrix: the axes before `axis`, then the rest.
        let axis = norm_axis(cx, node, node.int("axis").unwrap_or(1), t.rank())?;
        let rows: usize = t.shape[..axis].iter().product();
        let cols: usize = t.shape[axis..].iter().product();
        let flat = view(cx, node, x, vec![rows, cols])?;
        let y = cx.emit1(node, make(1), &[flat], ValueType::new(t.dtype, vec![rows, cols]))?;
        view(cx, node, y, t.shape.clone())?
    } else {
        let axis = norm_axis(cx, node, node.int("axis").unwrap_or(-1), t.rank())?;
        cx.emit1(node, make(axis), &[x], t)?
    };
    cx.bind(node, 0, y);
    Ok(())
}

pub(super) fn layer_norm(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let scale = cx.required(node, 1)?;
    let bias = cx.input(node, 2)?;
    let t = cx.ty(&x);
    let axis = norm_axis(cx, node, node.int("axis").unwrap_or(-1), t.rank())?;
    let norm_shape = &t.shape[axis..];
    for v in std::iter::once(&scale).chain(bias.as_ref()) {
        let tv = cx.ty(v);
        if broadcast(&[&tv.shape, norm_shape]).as_deref() != Some(norm_shape) {
            return Err(cx.node_error(
                node,
                format!("scale or bias {:?} does not broadcast to {norm_shape:?}", tv.shape),
            ));
        }
    }
    let mut operands = vec![x, scale];
    operands.extend(bias);
    let mut outs = vec![t.clone()];
    if cx.output_used(node, 1) || cx.output_used(node, 2) {
        let stash = dtype_of(node.int("stash_type").unwrap_or(1) as i32).unwrap_or(DType::F32);
        let mut s = t.shape.clone();
        s[axis..].iter_mut().for_each(|d| *d = 1);
        outs.push(ValueType::new(stash, s.clone()));
        outs.push(ValueType::new(stash, s));
    }
    let op = Op::LayerNorm {
        axis,
        epsilon: node.float("epsilon").unwrap_or(1e-5),
    };
    let ys = cx.emit(node, op, &operands, outs)?;
    for (i, y) in ys.into_iter().enumerate() {
        cx.bind(node, i, y);
    }
    Ok(())
}

/// InstanceNormalization: per sample and channel over the spatial axes.
pub(super) fn instance_norm(cx: Cx, node: &Node) -> Result<()> {
    let (x, s, b) = (cx.required(node, 0)?, cx.required(node, 1)?, cx.required(node, 2)?);
    let t = cx.ty(&x);
    if t.rank() < 3 || cx.ty(&s).numel() != t.shape[1] || cx.ty(&b).numel() != t.shape[1] {
        return Err(cx.node_error(
            node,
            format!(
                "input {:?} needs channels on axis 1 and a scale and bias per channel",
                t.shape
            ),
        ));
    }
    let op = Op::InstanceNorm {
        epsilon: node.float("epsilon").unwrap_or(1e-5),
    };
    let y = cx.emit1(node, op, &[x, s, b], t)?;
    cx.bind(node, 0, y);
    Ok(())
}

pub(super) fn batch_norm(cx: Cx, node: &Node) -> Result<()> {
    let vals: Vec<Val> = (0..5).map(|i| cx.required(node, i)).collect::<Result<_>>()?;
    let t = cx.ty(&vals[0]);
    if node.int("training_mode").unwrap_or(0) != 0 || (1..5).any(|i| cx.output_used(node, i)) {
        return Err(unsupported(node, "training-mode batch normalization".into()));
    }
    if t.rank() < 2 || vals[1..].iter().any(|v| cx.ty(v).numel() != t.shape[1]) {
        return Err(cx.node_error(
            node,
            format!(
                "input {:?} needs one scale, bias, mean and variance per channel",
                t.shape
            ),
        ));
    }
    let op = Op::BatchNorm {
        epsilon: node.float("epsilon").unwrap_or(1e-5),
    };
    let y = cx.emit1(node, op, &vals, t)?;
    cx.bind(node, 0, y);
    Ok(())
}

pub(super) fn reduce(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    let kind = match node.op_type.as_str() {
        "ReduceSum" => ReduceKind::Sum,
        "ReduceMean" => ReduceKind::Mean,
        "ReduceMax" => ReduceKind::Max,
        "ReduceMin" => ReduceKind::Min,
        "ReduceProd" => ReduceKind::Prod,
        "ReduceL1" => ReduceKind::L1,
        "ReduceL2" => ReduceKind::L2,
        "ReduceSumSquare" => ReduceKind::SumSquare,
        "ReduceLogSum" => ReduceKind::LogSum,
        _ => ReduceKind::LogSumExp,
    };
    let axes_from_input = if kind == ReduceKind::Sum { 13 } else { 18 };
    let keepdims = node.int("keepdims").unwrap_or(1) != 0;
    let axes = match axes_of(cx, node, axes_from_input, t.rank())? {
        Some(a) if !a.is_empty() => a,
        _ if node.int("noop_with_empty_axes").unwrap_or(0) != 0 => {
            let x = cx.required(node, 0)?;
            cx.bind(node, 0, x);
            return Ok(());
        }
        _ => (0..t.rank()).collect(),
    };
    let shape: Vec<usize> = if keepdims {
        t.shape
            .iter()
            .enumerate()
            .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
            .collect()
    } else {
        t.shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect()
    };
    let y = cx.emit1(
        node,
        Op::Reduce { kind, axes, keepdims },
        &[x],
        ValueType::new(t.dtype, shape),
    )?;
    cx.bind(node, 0, y);
    Ok(())
}

/// ArgMax and ArgMin: int64 indices along one axis.
pub(super) fn arg_reduce(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    let axis = norm_axis(cx, node, node.int("axis").unwrap_or(0), t.rank())?;
    let keepdims = node.int("keepdims").unwrap_or(1) != 0;
    let mut shape = t.shape.clone();
    if keepdims {
        shape[axis] = 1;
    } else {
        shape.remove(axis);
    }
    if t.shape[axis] == 0 {
        return Err(cx.node_error(node, "reduces an axis of size 0"));
    }
    let op = Op::ArgReduce {
        max: node.op_type == "ArgMax",
        axis,
        keepdims,
        select_last: node.int("select_last_index").unwrap_or(0) != 0,
    };
    let y = cx.emit1(node, op, &[x], ValueType::new(DType::I64, shape))?;
    cx.bind(node, 0, y);
    Ok(())
}

/// GlobalAveragePool and GlobalMaxPool: a mean or maximum over the spatial axes, kept as size 1.
pub(super) fn global_pool(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    if t.rank() < 3 {
        return Err(cx.node_error(node, "needs (N, C, spatial...)"));
    }
    let axes: Vec<usize> = (2..t.rank()).collect();
    let mut shape = t.shape.clone();
    axes.iter().for_each(|&a| shape[a] = 1);
    let kind = if node.op_type == "GlobalMaxPool" {
        ReduceKind::Max
    } else {
        ReduceKind::Mean
    };
    let y = cx.emit1(
        node,
        Op::Reduce {
            kind,
            axes,
            keepdims: true,
        },
        &[x],
        ValueType::new(t.dtype, shape),
    )?;
    cx.bind(node, 0, y);
    Ok(())
}

/// Explicit pads and output sizes of a convolution or pooling window along each spatial axis.
pub(super) struct Window {
    pads: Vec<(usize, usize)>,
    out: Vec<usize>,
}

pub(super) fn window(
    cx: &Specializer,
    node: &Node,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    ceil: bool,
) -> Result<Window> {
    let n = input.len();
    let auto = node.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
    let given = node.ints("pads").map(<[i64]>::to_vec).unwrap_or_else(|| vec![0; 2 * n]);
    if given.len() != 2 * n || given.iter().any(|&p| p < 0) {
        return Err(cx.node_error(node, format!("pads {given:?} for {n} spatial axes")));
    }
    let mut pads = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let ext = dilations[i] * (kernel[i].max(1) - 1) + 1;
        let (b, e) = match auto.as_str() {
            "NOTSET" => (given[i] as usize, given[i + n] as usize),
            "VALID" => (0, 0),
            "SAME_UPPER" | "SAME_LOWER" => {
                let o = input[i].div_ceil(strides[i]);
                let total = ((o - 1) * strides[i] + ext).saturating_sub(input[i]);
                if auto == "SAME_UPPER" {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                }
            }
            other => return Err(cx.node_error(node, format!("unknown auto_pad `{other}`"))),
        };
        let padded = input[i] + b + e;
        if padded < ext {
            return Err(cx.node_error(node, format!("a window of {ext} does not fit an axis of {padded}")));
        }
        let span = padded - ext;
        let mut o = if ceil {
            span.div_ceil(strides[i]) + 1
        } else {
            span / strides[i] + 1
        };
        // With ceil_mode, the last window must start inside the input or its left padding.
        if ceil && (o - 1) * strides[i] >= input[i] + b {
            o -= 1;
        }
        pads.push((b, e));
        out.push(o);
    }
    Ok(Window { pads, out })
}

pub(super) fn spatial_attr(cx: &Specializer, node: &Node, name: &str, n: usize) -> Result<Vec<usize>> {
    match node.ints(name) {
        Some(v) if v.len() == n && v.iter().all(|&x| x >= 1) => Ok(v.iter().map(|&x| x as usize).collect()),
        Some(v) => Err(cx.node_error(node, format!("{name} {v:?} for {n} spatial axes"))),
        None => Ok(vec![1; n]),
    }
}

pub(super) fn conv(cx: Cx, node: &Node) -> Result<()> {
    let (x, w) = (cx.required(node, 0)?, cx.required(node, 1)?);
    let b = cx.input(node, 2)?;
    let (tx, tw) = (cx.ty(&x), cx.ty(&w));
    if tx.rank() < 3 || tw.rank() != tx.rank() {
        return Err(cx.node_error(node, format!("input {:?} and weight {:?}", tx.shape, tw.shape)));
    }
    let n = tx.rank() - 2;
    let group = node.int("group").unwrap_or(1).max(1) as usize;
    let kernel = tw.shape[2..].to_vec();
    let strides = spatial_attr(cx, node, "strides", n)?;
    let dilations = spatial_attr(cx, node, "dilations", n)?;
    if tx.shape[1] != tw.shape[1] * group || tw.shape[0] % group != 0 {
        return Err(cx.node_error(
            node,
            format!(
                "input {:?}, weight {:?} and group {group} disagree on channels",
                tx.shape, tw.shape
            ),
        ));
    }
    if let Some(b) = &b
        && cx.ty(b).shape != [tw.shape[0]]
    {
        return Err(cx.node_error(
            node,
            format!("bias {:?} for {} output channels", cx.ty(b).shape, tw.shape[0]),
        ));
    }
    let win = window(cx, node, &tx.shape[2..], &kernel, &strides, &dilations, false)?;
    let mut shape = vec![tx.shape[0], tw.shape[0]];
    shape.extend(&win.out);
    let mut operands = vec![x, w];
    operands.extend(b);
    let op = Op::Conv {
        strides,
        pads: win.pads,
        dilations,
        group,
    };
    let y = cx.emit1(node, op, &operands, ValueType::new(tx.dtype, shape))?;
    cx.bind(node, 0, y);
    Ok(())
}

pub(super) fn pool(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    if t.rank() < 3 {
        return Err(cx.node_error(node, "needs (N, C, spatial...)"));
    }
    let n = t.rank() - 2;
    let kernel = spatial_attr(cx, node, "kernel_shape", n)?;
    if node.ints("kernel_shape").is_none() {
        return Err(cx.node_error(node, "has no kernel_shape"));
    }
    let strides = spatial_attr(cx, node, "strides", n)?;
    let dilations = spatial_attr(cx, node, "dilations", n)?;
    let ceil = node.int("ceil_mode").unwrap_or(0) != 0;
    let win = window(cx, node, &t.shape[2..], &kernel, &strides, &dilations, ceil)?;
    let mut shape = t.shape[..2].to_vec();
    shape.extend(&win.out);
    let op = if node.op_type == "MaxPool" {
        Op::MaxPool {
            kernel,
            strides,
            pads: win.pads,
            dilations,
            column_major: node.int("storage_order").unwrap_or(0) != 0,
        }
    } else {
        Op::AveragePool {
            kernel,
            strides,
            pads: win.pads,
            dilations,
            count_include_pad: node.int("count_include_pad").unwrap_or(0) != 0,
        }
    };
    let mut outs = vec![ValueType::new(t.dtype, shape.clone())];
    if node.op_type == "MaxPool" && cx.output_used(node, 1) {
        outs.push(ValueType::new(DType::I64, shape));
    }
    let ys = cx.emit(node, op, &[x], outs)?;
    for (i, y) in ys.into_iter().enumerate() {
        cx.bind(node, i, y);
    }
    Ok(())
}

pub(super) fn resize(cx: Cx, node: &Node) -> Result<()> {
    let x = cx.required(node, 0)?;
    let t = cx.ty(&x);
    let r = t.rank();
    let s = |name: &str, default: &str| node.string(name).unwrap_or_else(|| default.to_string());
    let mode = match s("mode", "nearest").as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" | "bilinear" | "trilinear" => ResizeMode::Linear,
        "cubic" | "bicubic" => ResizeMode::Cubic,
        other => return Err(cx.node_error(node, format!("unknown mode `{other}`"))),
    };
    let default_transform = if cx.opset() < 11 { "asymmetric" } else { "half_pixel" };
    let transform = match s("coordinate_transformation_mode", default_transform).as_str() {
        "half_pixel" => CoordinateTransform::HalfPixel,
        "half_pixel_symmetric" => CoordinateTransform::HalfPixelSymmetric,
        "pytorch_half_pixel" => CoordinateTransform::PytorchHalfPixel,
        "align_corners" => CoordinateTransform::AlignCorners,
        "asymmetric" => CoordinateTransform::Asymmetric,
        "tf_crop_and_resize" => CoordinateTransform::TfCropAndResize,
        other => return Err(cx.node_error(node, format!("unknown coordinate_transformation_mode `{other}`"))),
    };
    let nearest = match s("nearest_mode", "round_prefer_floor").as_str() {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        other => return Err(cx.node_error(node, format!("unknown nearest_mode `{other}`"))),
    };
    // Inputs: opset 10 (X, scales); 11 and later (X, roi, scales, sizes).
    let (roi, scales, sizes) = if cx.opset() < 11 {
        (None, cx.constant(node, 1, "scales")?, None)
    } else {
        (
            cx.constant(node, 1, "roi")?,
            cx.constant(node, 2, "scales")?,
            cx.constant(node, 3, "sizes")?,
        )
    };
    let axes: Vec<usize> = match node.ints("axes") {
        Some(a) => a.iter().map(|&v| norm_axis(cx, node, v, r)).collect::<Result<_>>()?,
        None => (0..r).collect(),
    };
    let scales: Option<Vec<f64>> = scales.filter(|t| !t.is_empty()).map(|t| t.to_f64_vec());
    let sizes: Option<Vec<i64>> = sizes.filter(|t| !t.is_empty()).map(|t| ints(&t));
    let mut scale_of = vec![1f64; r];
    let mut out = t.shape.clone();
    match (&scales, &sizes) {
        (Some(sc), None) => {
            if sc.len() != axes.len() || sc.iter().any(|&v| v <= 0.0) {
                return Err(cx.node_error(node, format!("scales {sc:?} for axes {axes:?}")));
            }
            for (i, &a) in axes.iter().enumerate() {
                scale_of[a] = sc[i];
                out[a] = (t.shape[a] as f64 * sc[i]).floor() as usize;
            }
        }
        (None, Some(sz)) => {
            if sz.len() != axes.len() || sz.iter().any(|&v| v < 0) {
                return Err(cx.node_error(node, format!("sizes {sz:?} for axes {axes:?}")));
            }
            let policy = s("keep_aspect_ratio_policy", "stretch");
            let ratios: Vec<f64> = axes
                .iter()
                .zip(sz)
                .map(|(&a, &v)| v as f64 / t.shape[a] as f64)
                .collect();
            let pick = match policy.as_str() {
                "stretch" => None,
                "not_larger" => ratios.iter().copied().reduce(f64::min),
                "not_smaller" => ratios.iter().copied().reduce(f64::max),
                other => return Err(cx.node_error(node, format!("unknown keep_aspect_ratio_policy `{other}`"))),
            };
            for (i, &a) in axes.iter().enumerate() {
                match pick {
                    None => {
                        scale_of[a] = ratios[i];
                        out[a] = sz[i] as usize;
                    }
                    Some(p) => {
                        scale_of[a] = p;
                        out[a] = (t.shape[a] as f64 * p + 0.5).floor() as usize;
                    }
                }
            }
        }
        _ => return Err(cx.node_error(node, "needs exactly one of scales and sizes")),
    }
    let mut roi_of = vec![(0f64, 1f64); r];
    if transform == CoordinateTransform::TfCropAndResize {
        let roi = roi.ok_or_else(|| cx.node_error(node, "tf_crop_and_resize needs roi"))?;
        let v: Vec<f64> = roi.to_f64_vec();
        if v.len() != 2 * axes.len() {
            return Err(cx.node_error(node, format!("roi {v:?} for axes {axes:?}")));
        }
        for (i, &a) in axes.iter().enumerate() {
            roi_of[a] = (v[i], v[i + axes.len()]);
        }
    }
    let op = Op::Resize(Resize {
        mode,
        transform,
        nearest,
        cubic_coeff_a: node.float("cubic_coeff_a").unwrap_or(-0.75),
        exclude_outside: node.int("exclude_outside").unwrap_or(0) != 0,
        extrapolation_value: node.float("extrapolation_value").unwrap_or(0.0),
        antialias: node.int("antialias").unwrap_or(0) != 0,
        scales: scale_of,
        roi: roi_of,
    });
    let y = cx.emit1(node, op, &[x], ValueType::new(t.dtype, out))?;
    cx.bind(node, 0, y);
    Ok(())
}

pub(super) fn einsum(cx: Cx, node: &Node) -> Result<()> {
    let eq = node
        .string("equation")
        .ok_or_else(|| cx.node_error(node, "has no equation"))?;
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let vals: Vec<Val> = (0..node.inputs.len())
        .map(|i| cx.required(node, i))
        .collect::<Result<_>>()?;
    let types: Vec<ValueType> = vals.iter().map(|v| cx.ty(v)).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != vals.len() {
        return Err(cx.node_error(
            node,
            format!("equation `{eq}` has {} operands, the node {}", terms.len(), vals.len()),
        ));
    }
    // An ellipsis stands for the axes not named, right-aligned across operands as broadcasting
    // aligns them; its axes become fresh upper-case letters.
    let used: Vec<u8> = eq.bytes().filter(u8::is_ascii_alphabetic).collect();
    let fresh: Vec<u8> = (b'A'..=b'Z').filter(|c| !used.contains(c)).collect();
    let mut ell_rank = 0;
    for (term, t) in terms.iter().zip(&types) {
        if term.contains("...") {
            let named = term.bytes().filter(u8::is_ascii_alphabetic).count();
            let k = t
                .rank()
                .checked_sub(named)
                .ok_or_else(|| cx.node_error(node, format!("`{term}` for {t}")))?;
            ell_rank = ell_rank.max(k);
        }
    }
    if ell_rank > fresh.len() {
        return Err(cx.node_error(node, "too many axes under the ellipsis"));
    }
    let ell: Vec<u8> = fresh[..ell_rank].to_vec();
    let mut inputs = Vec::new();
    for (term, t) in terms.iter().zip(&types) {
        let mut subs = Vec::new();
        if let Some((pre, post)) = term.split_once("...") {
            let named = term.bytes().filter(u8::is_ascii_alphabetic).count();
            let k = t.rank() - named;
            subs.extend(pre.bytes());
            subs.extend(&ell[ell_rank - k..]);
            subs.extend(post.bytes());
        } else {
            subs.extend(term.bytes());
        }
        if subs.len() != t.rank() || !subs.iter().all(u8::is_ascii_alphabetic) {
            return Err(cx.node_error(node, format!("term `{term}` for an operand of rank {}", t.rank())));
        }
        inputs.push(subs);
    }
    let output: Vec<u8> = match rhs {
        Some(r) => {
            let mut o = Vec::new();
            if let Some((pre, post)) = r.split_once("...") {
                o.extend(pre.bytes());
                o.extend(&ell);
                o.extend(post.bytes());
            } else {
                o.extend(r.bytes());
            }
            o
        }
        None => {
            let mut once: Vec<u8> = inputs
                .iter()
                .flatten()
                .copied()
                .filter(|c| !ell.contains(c))
                .filter(|c| inputs.iter().flatten().filter(|d| *d == c).count() == 1)
                .collect();
            once.sort_unstable();
            let mut o = ell.clone();
            o.extend(once);
            o
        }
    };
    let mut size = std::collections::BTreeMap::new();
    for (subs, t) in inputs.iter().zip(&types) {
        for (&c, &d) in subs.iter().zip(&t.shape) {
            let e = size.entry(c).or_insert(d);
            if *e == 1 {
                *e = d;
            } else if d != 1 && d != *e {
                return Err(cx.node_error(node, format!("`{}` has sizes {d} and {e}", c as char)));
            }
        }
    }
    let shape: Vec<usize> = output
        .iter()
        .map(|c| {
            size.get(c)
                .copied()
                .ok_or_else(|| cx.node_error(node, format!("output `{}` is in no input", *c as char)))
        })
        .collect::<Result<_>>()?;
    let dtype = types[0].dtype;
    let y = cx.emit1(node, Op::Einsum { inputs, output }, &vals, ValueType::new(dtype, shape))?;
    cx.bind(node, 0, y);
    Ok(())
}
