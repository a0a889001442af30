//! hwcov's CUDA kernels (`kernels/`: the NVRTC kernels, cuBLASLt's products, cuDNN's convolutions,
//! the staged host copies), reached through hwcov-candle's layers, against the plain candle sequence
//! run in f32 on the CPU, at the shapes the models meet: every row length a row kernel is
//! compiled for, rows that do and do not divide into quads of four, Linear products of one and of many
//! rows, keys padded to a multiple of 8. The fixtures' tiny models reach only the shortest rows.
//!
//! Built only with the `cuda` feature, and it needs a CUDA device (docs/platforms/cuda.md: how to run
//! it on a GPU host).
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Module, Result, Tensor};
use hwcov_candle::activation::Activation;
use hwcov_candle::models::common::eager_attention;
use hwcov_candle::nn;

fn gpu() -> Device {
    // Opened as the platform opens it, with hwcov's kernels installed for it.
    hwcov_cuda::open(0)
        .expect("the CUDA kernel tests run on a CUDA device")
        .0
}

/// Random values on the CPU, already rounded to `dtype`, so that both sides start from the same numbers.
fn values(shape: &[usize], dtype: DType) -> Result<Tensor> {
    Tensor::randn(0f32, 1.0, shape, &Device::Cpu)?.to_dtype(dtype)
}

/// The same numbers in f32: the reference runs the plain candle sequence on the CPU in f32, which is
/// what the CUDA kernels compute in before their one rounding to `dtype` (the CPU sequence in bf16
/// would round after every step and drift by several bf16 steps on its own).
fn f32(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::F32)
}

/// How many elements of `a` and `b` (any dtype and device) differ, compared in f32 on the CPU.
fn differing(a: &Tensor, b: &Tensor) -> Result<f32> {
    f32(&a.to_device(&Device::Cpu)?)?
        .ne(&f32(&b.to_device(&Device::Cpu)?)?)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()
}

/// Each element of the CUDA result (computed in `dtype`) within tol * (|ref| + rms(ref)) of the f32
/// CPU reference. The rms term is the scale of the operation: a value that cancels to near zero still
/// carries the rounding of its rms-sized terms (a product before its residual, a score before its
/// softmax). tol is 1e-4 at f32 (accumulation order) and 1/64 at bf16, four bf16 steps of that scale;
/// a wrong index, a lost bias or mask, or a wrong normalisation is off by about the rms itself.
fn assert_close(what: &str, dtype: DType, cuda: &Tensor, reference: &Tensor) -> Result<()> {
    assert_close_at(what, dtype, cuda, reference, None)
}

/// `assert_close` with the operation's scale given in place of the reference's rms: where the result
/// is a small average of larger terms (attention's output, an average of unit-sized values), those
/// terms' rounding sets the error.
fn assert_close_at(what: &str, dtype: DType, cuda: &Tensor, reference: &Tensor, scale: Option<f32>) -> Result<()> {
    assert_eq!(cuda.dims(), reference.dims(), "{what}: shape");
    assert_eq!(cuda.dtype(), dtype, "{what}: dtype");
    assert_eq!(reference.dtype(), DType::F32, "{what}: the reference is f32");
    let tol = match dtype {
        DType::F32 => 1e-4,
        _ => 1.0 / 64.0,
    };
    let a = cuda
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let b = reference.flatten_all()?.to_vec1::<f32>()?;
    let scale = scale.unwrap_or_else(|| (b.iter().map(|y| y * y).sum::<f32>() / b.len().max(1) as f32).sqrt());
    let worst = a
        .iter()
        .zip(&b)
        .enumerate()
        // A NaN on either side counts as the worst element.
        .map(|(i, (x, y))| (i, (x - y).abs() - tol * (y.abs() + scale)))
        .map(|(i, e)| (i, if e.is_nan() { f32::INFINITY } else { e }))
        .fold((0, f32::MIN), |w, e| if e.1 > w.1 { e } else { w });
    assert!(
        worst.1 <= 0.0,
        "{what}: element {} is {} on CUDA, {} in the f32 reference (scale {scale})",
        worst.0,
        a[worst.0],
        b[worst.0]
    );
    Ok(())
}

const DTYPES: [DType; 2] = [DType::F32, DType::BF16];

#[test]
fn linear_products_with_and_without_bias() -> Result<()> {
    let dev = gpu();
    for dtype in DTYPES {
        for (rows, k, n) in [
            (1, 64, 96),
            (2, 64, 96),
            (37, 96, 200),
            (197, 768, 3072),
            (512, 896, 151),
        ] {
            for bias in [false, true] {
                let w = values(&[n, k], dtype)?;
                let b = if bias { Some(values(&[n], dtype)?) } else { None };
                let x = values(&[1, rows, k], dtype)?;
                let r = values(&[1, rows, n], dtype)?;
                let cpu = nn::Linear::new(f32(&w)?, b.as_ref().map(f32).transpose()?);
                let (xc, rc) = (f32(&x)?, f32(&r)?);
                let b = b.as_ref().map(|b| b.to_device(&dev)).transpose()?;
                let gpu = nn::Linear::new(w.to_device(&dev)?, b);
                let (xg, rg) = (x.to_device(&dev)?, r.to_device(&dev)?);
                let what = format!("{dtype:?} {rows}x{k} -> {n}, bias {bias}");
                let check = |step: &str, g: Tensor, c: Tensor| assert_close(&format!("{step} {what}"), dtype, &g, &c);
                check("linear", gpu.forward(&xg)?, cpu.forward(&xc)?)?;
                check(
                    "linear + gelu",
                    gpu.forward_act(&xg, Activation::Gelu)?,
                    cpu.forward_act(&xc, Activation::Gelu)?,
                )?;
                check(
                    "linear + residual",
                    gpu.forward_residual(&xg, &rg)?,
                    cpu.forward_residual(&xc, &rc)?,
                )?;
            }
        }
    }
    Ok(())
}

/// The convolutions of the models (Whisper's stem, Wav2Vec2's feature encoder and grouped positional
/// convolution, a ResNet stem, a ViT patch embedding, CLAP's per-axis stride) and a dilated one.
#[test]
fn convolutions_through_cudnn() -> Result<()> {
    let dev = gpu();
    let conv1 = |stride, padding, dilation, groups| candle_nn::Conv1dConfig {
        stride,
        padding,
        dilation,
        groups,
        cudnn_fwd_algo: None,
    };
    let cases1 = [
        ("whisper conv1", [1, 80, 300], [384, 80, 3], conv1(1, 1, 1, 1)),
        ("whisper conv2", [2, 64, 300], [64, 64, 3], conv1(2, 1, 1, 1)),
        ("wav2vec2 conv0", [1, 1, 4000], [32, 1, 10], conv1(5, 0, 1, 1)),
        ("wav2vec2 pos conv", [1, 64, 49], [64, 4, 16], conv1(1, 8, 1, 16)),
        ("dilated", [1, 8, 50], [8, 8, 3], conv1(1, 2, 2, 1)),
    ];
    let geometry = |stride: [usize; 2], padding: [usize; 2], groups| nn::Geometry {
        stride,
        padding,
        dilation: [1, 1],
        groups,
    };
    let cases2 = [
        (
            "resnet stem",
            [1, 3, 64, 64],
            [16, 3, 7, 7],
            geometry([2, 2], [3, 3], 1),
        ),
        (
            "vit patch",
            [2, 3, 64, 64],
            [96, 3, 16, 16],
            geometry([16, 16], [0, 0], 1),
        ),
        ("clap patch", [1, 1, 64, 32], [24, 1, 4, 4], geometry([4, 2], [0, 1], 1)),
        ("grouped 3x3", [1, 16, 9, 9], [16, 4, 3, 3], geometry([1, 1], [1, 1], 4)),
    ];
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        for (name, xs, ws, cfg) in &cases1 {
            let (x, w, b) = (values(xs, dtype)?, values(ws, dtype)?, values(&ws[..1], dtype)?);
            let cpu = nn::Conv1d::new(f32(&w)?, Some(f32(&b)?), *cfg).forward(&f32(&x)?)?;
            let gpu =
                nn::Conv1d::new(w.to_device(&dev)?, Some(b.to_device(&dev)?), *cfg).forward(&x.to_device(&dev)?)?;
            assert_close(&format!("{dtype:?} {name}"), dtype, &gpu, &cpu)?;
        }
        for (name, xs, ws, g) in &cases2 {
            let (x, w, b) = (values(xs, dtype)?, values(ws, dtype)?, values(&ws[..1], dtype)?);
            let cpu = nn::Conv2d::with_geometry(f32(&w)?, Some(f32(&b)?), *g).forward(&f32(&x)?)?;
            let gpu = nn::Conv2d::with_geometry(w.to_device(&dev)?, Some(b.to_device(&dev)?), *g);
            assert_close(
                &format!("{dtype:?} {name}"),
                dtype,
                &gpu.forward(&x.to_device(&dev)?)?,
                &cpu,
            )?;
        }
    }
    Ok(())
}

#[test]
fn attention_softmax_at_every_row_length() -> Result<()> {
    let dev = gpu();
    for dtype in DTYPES {
        for cols in [5, 128, 197, 256, 300, 1024, 1500, 2048, 3001] {
            let (b, h, q) = (2, 3, 4);
            let scores = values(&[b, h, q, cols], dtype)?;
            let keep: Vec<f32> = (0..b * cols)
                .map(|i| if i % cols < cols - i / cols { 1.0 } else { 0.0 })
                .collect();
            let padding = hwcov_candle::models::common::additive_padding_mask(
                &Tensor::from_vec(keep, (b, cols), &Device::Cpu)?,
                dtype,
            )?;
            let row = values(&[1, 1, 1, cols], dtype)?;
            for mask in [None, Some(&padding), Some(&row)] {
                // Here the reference runs in `dtype`: the kernel rounds the scaled and the masked
                // scores to it as transformers does (`attention_softmax`'s contract), and the CPU
                // sequence rounds the same two steps; the softmax itself is f32 on both sides.
                let cpu = f32(&nn::attention_softmax(&scores, 0.125, mask)?)?;
                let mg = mask.map(|m| m.to_device(&dev)).transpose()?;
                let cuda = nn::attention_softmax(&scores.to_device(&dev)?, 0.125, mg.as_ref())?;
                let what = format!("softmax {dtype:?} {cols} columns, mask {:?}", mask.map(|m| m.dims()));
                assert_close(&what, dtype, &cuda, &cpu)?;
            }
        }
    }
    Ok(())
}

#[test]
fn layer_and_rms_norm_at_every_row_length() -> Result<()> {
    let dev = gpu();
    for dtype in DTYPES {
        for cols in [32, 197, 384, 768, 1500, 3584, 5000] {
            let x = values(&[3, 7, cols], dtype)?;
            let params = std::collections::HashMap::from([
                ("weight".to_string(), values(&[cols], dtype)?),
                ("bias".to_string(), values(&[cols], dtype)?),
            ]);
            // The VarBuilder hands out its tensors in its own dtype: f32 on the CPU side.
            let vb = |dt: DType, d: &Device| candle_nn::VarBuilder::from_tensors(params.clone(), dt, d);
            let (xc, xg) = (f32(&x)?, x.to_device(&dev)?);
            let (ln_c, ln_g) = (
                nn::layer_norm(cols, 1e-5, vb(DType::F32, &Device::Cpu))?,
                nn::layer_norm(cols, 1e-5, vb(dtype, &dev))?,
            );
            let what = format!("layer norm {dtype:?} {cols}");
            assert_close(&what, dtype, &ln_g.forward(&xg)?, &ln_c.forward(&xc)?)?;
            let (rms_c, rms_g) = (
                nn::RmsNorm::new(cols, 1e-6, vb(DType::F32, &Device::Cpu))?,
                nn::RmsNorm::new(cols, 1e-6, vb(dtype, &dev))?,
            );
            let what = format!("rms norm {dtype:?} {cols}");
            assert_close(&what, dtype, &rms_g.forward(&xg)?, &rms_c.forward(&xc)?)?;
        }
    }
    Ok(())
}

/// GroupNorm over rows shorter and longer than 512 elements (one warp or 512 threads a row), and rsqrt.
#[test]
fn group_norm_and_rsqrt() -> Result<()> {
    let dev = gpu();
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        for (shape, groups) in [(vec![2, 32, 999], 32), (vec![1, 8, 20], 2), (vec![2, 6, 4, 5], 3)] {
            let c = shape[1];
            let (x, w, b) = (values(&shape, dtype)?, values(&[c], dtype)?, values(&[c], dtype)?);
            let cpu = nn::group_norm(&f32(&x)?, &f32(&w)?, &f32(&b)?, groups, 1e-5)?;
            let gpu = nn::group_norm(
                &x.to_device(&dev)?,
                &w.to_device(&dev)?,
                &b.to_device(&dev)?,
                groups,
                1e-5,
            )?;
            assert_close(
                &format!("{dtype:?} group norm {shape:?} in {groups}"),
                dtype,
                &gpu,
                &cpu,
            )?;
        }
        let x = (values(&[1000], dtype)?.abs()? + 0.01)?.to_dtype(dtype)?;
        let cpu = nn::rsqrt(&f32(&x)?)?;
        assert_close(
            &format!("{dtype:?} rsqrt"),
            dtype,
            &nn::rsqrt(&x.to_device(&dev)?)?,
            &cpu,
        )?;
    }
    Ok(())
}

#[test]
fn elementwise_steps_and_copies() -> Result<()> {
    let dev = gpu();
    for dtype in DTYPES {
        let check = |what: String, g: Tensor, c: Tensor| assert_close(&what, dtype, &g, &c);
        // Lengths that do and do not divide into the kernels' eight elements a thread.
        for n in [1, 7, 8, 1001, 4096] {
            let (x, r) = (values(&[n], dtype)?, values(&[n], dtype)?);
            let cuda = nn::add(&x.to_device(&dev)?, &r.to_device(&dev)?)?;
            check(format!("add {dtype:?} {n}"), cuda, nn::add(&f32(&x)?, &f32(&r)?)?)?;
        }
        let x = values(&[2, 9, 5, 2 * 6], dtype)?;
        check(
            format!("silu * up {dtype:?}"),
            nn::gated_act(&x.to_device(&dev)?, Activation::Silu)?,
            nn::gated_act(&f32(&x)?, Activation::Silu)?,
        )?;
        let (x, pos) = (values(&[4, 197, 48], dtype)?, values(&[1, 197, 48], dtype)?);
        check(
            format!("position add {dtype:?}"),
            nn::add_broadcast(&x.to_device(&dev)?, &pos.to_device(&dev)?)?,
            nn::add_broadcast(&f32(&x)?, &f32(&pos)?)?,
        )?;
        let (scores, mask) = (values(&[4, 2, 197, 48], dtype)?, values(&[4, 1, 1, 48], dtype)?);
        check(
            format!("mask add {dtype:?}"),
            nn::add_broadcast(&scores.to_device(&dev)?, &mask.to_device(&dev)?)?,
            nn::add_broadcast(&f32(&scores)?, &f32(&mask)?)?,
        )?;
        // The head transposes of attention, with rows of 8-byte units (64 wide) and without (3 wide).
        for d in [64, 3] {
            let x = values(&[2, 11, 4, d], dtype)?;
            check(
                format!("head transpose {dtype:?} {d}"),
                nn::contiguous(&x.to_device(&dev)?.transpose(1, 2)?)?,
                f32(&x)?.transpose(1, 2)?.contiguous()?,
            )?;
            for pad in [1, 3, 5] {
                check(
                    format!("pad rows {dtype:?} {d} + {pad}"),
                    nn::pad_rows(&x.to_device(&dev)?, pad)?,
                    nn::pad_rows(&f32(&x)?, pad)?,
                )?;
            }
        }
    }
    Ok(())
}

#[test]
fn attention_with_padded_keys() -> Result<()> {
    let dev = gpu();
    for dtype in DTYPES {
        for kv in [197, 1500, 13] {
            let (q, k, v) = (
                values(&[2, 3, 197, 64], dtype)?,
                values(&[2, 3, kv, 64], dtype)?,
                values(&[2, 3, kv, 64], dtype)?,
            );
            let cpu = eager_attention(&f32(&q)?, &f32(&k)?, &f32(&v)?, None, 0.125)?;
            let on_gpu = |t: &Tensor| t.to_device(&dev);
            let cuda = eager_attention(&on_gpu(&q)?, &on_gpu(&k)?, &on_gpu(&v)?, None, 0.125)?;
            // q, k and v are unit-sized; the output averages about 1/sqrt(keys) of v's scale, and
            // at bf16 the rounding of the scores and of v, not of that average, sets the error. The
            // f32 pass (tol 1e-4 at scale 1) is the one that would see a key padding leak.
            let what = format!("attention {dtype:?} {kv} keys");
            assert_close_at(&what, dtype, &cuda, &cpu, Some(1.0))?;
        }
    }
    Ok(())
}

/// RoPE rounds as torch's sequence of kernels does (`q * cos`, `rotate_half(q) * sin`, their sum,
/// each stored in the dtype), so here the reference is that sequence on the CPU in the dtype
/// itself (candle's CPU arithmetic rounds each step the same way), and the kernel must match it
/// bit for bit. cos and sin per position, and per batch row as the decoders pass them.
#[test]
fn rope_matches_the_rounded_sequence_exactly() -> Result<()> {
    let dev = gpu();
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        for (b, h, t, d) in [(2, 3, 5, 8), (1, 14, 37, 64), (2, 2, 19, 128)] {
            let x = values(&[b, h, t, d], dtype)?;
            let angles = Tensor::arange(0f32, (b * t * d / 2) as f32, &Device::Cpu)?
                .affine(0.37, 0.0)?
                .reshape((b, t, d / 2))?;
            for batched in [true, false] {
                let angles = if batched { angles.clone() } else { angles.get(0)? };
                let (cos, sin) = (angles.cos()?.to_dtype(dtype)?, angles.sin()?.to_dtype(dtype)?);
                let full = |c: &Tensor| Tensor::cat(&[c, c], candle_core::D::Minus1);
                let (cos_full, sin_full) = (full(&cos)?, full(&sin)?);
                let (cos_full, sin_full) = if batched {
                    (cos_full, sin_full)
                } else {
                    (
                        cos_full.unsqueeze(0)?.repeat((b, 1, 1))?,
                        sin_full.unsqueeze(0)?.repeat((b, 1, 1))?,
                    )
                };
                let (reference, _) = hwcov_candle::models::rope::apply_rotary_pos_emb(&x, &x, &cos_full, &sin_full)?;
                let cuda = nn::rope(&x.to_device(&dev)?, &cos.to_device(&dev)?, &sin.to_device(&dev)?)?;
                let differing = differing(&cuda, &reference)?;
                assert_eq!(
                    differing,
                    0.0,
                    "rope {dtype:?} {:?}, cos per batch row: {batched}: {differing} elements differ from the rounded sequence",
                    x.dims()
                );
            }
        }
    }
    Ok(())
}

/// A Linear with bias rounds once, as torch's (its addmm adds the bias in cuBLASLt's epilogue, in
/// f32, or for a single row as the C of `cublasGemmEx` with beta 1): R(x W^T + b). With small
/// multiples of 1/8 as inputs every dot product is exact in f32 in any order, so the result must
/// equal the f32 CPU sum plus the bias, rounded to the dtype, bit for bit, whatever kernel cuBLASLt
/// picks; a kernel that rounded the product before adding the bias would part from it.
/// `forward_strided` (torch's Linear of a non-contiguous input: at::matmul, then the bias added by a
/// kernel of its own) must give R(R(x W^T) + b) instead.
#[test]
fn linear_bias_is_rounded_as_torch_rounds() -> Result<()> {
    let dev = gpu();
    let eighths = |shape: &[usize], dtype: DType| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| ((i * 7919 + 13) % 7) as f32 / 8.0 - 0.375).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)
    };
    for dtype in [DType::BF16, DType::F16] {
        for (rows, k, n) in [
            (40, 32, 74),
            (40, 37, 32),
            (38, 32, 37),
            (2, 64, 96),
            (1, 64, 96),
            (1, 768, 3072),
            (197, 768, 3072),
        ] {
            let (x, w, b) = (
                eighths(&[1, rows, k], dtype)?,
                eighths(&[n, k], dtype)?,
                values(&[n], dtype)?,
            );
            let product = f32(&x)?.broadcast_matmul(&f32(&w)?.t()?)?;
            let reference = product.broadcast_add(&f32(&b)?)?.to_dtype(dtype)?;
            // A strided input's Linear, as torch's at::matmul then add: R(R(x W^T) + b).
            let strided_reference = nn::round_to(&product, dtype)?
                .broadcast_add(&f32(&b)?)?
                .to_dtype(dtype)?;
            let gpu = nn::Linear::new(w.to_device(&dev)?, Some(b.to_device(&dev)?));
            let x = x.to_device(&dev)?;
            for (what, out, reference) in [
                ("R(x W^T + b)", gpu.forward(&x)?, &reference),
                ("R(R(x W^T) + b)", gpu.forward_strided(&x)?, &strided_reference),
            ] {
                let differing = differing(&out, reference)?;
                assert_eq!(
                    differing, 0.0,
                    "linear {dtype:?} {rows}x{k} -> {n}: {differing} elements not {what}"
                );
            }
        }
    }
    Ok(())
}

/// The staged copies (`host_copy`) return exactly what candle's own pageable copies return, in
/// both directions, for copies small enough to go the plain way, large enough to be staged and split
/// over threads, and larger than the staging buffer's 64 MiB (in parts), and for each float dtype
/// (half outputs cross in their dtype and are widened on the host). Two inputs in a row check that
/// the second waits for the first to leave the buffer.
#[test]
fn staged_host_copies_are_exact() -> Result<()> {
    let dev = gpu();
    let Device::Cuda(cuda) = &dev else {
        unreachable!("gpu() is a CUDA device")
    };
    // 16 Mi + 3 elements (64 MiB and 12 bytes at f32: two parts), 5 Mi + 3 (staged in one part, an
    // uneven split over threads) and 4 Ki (plain); the larger first, so that the smaller reuse the
    // grown buffer.
    for len in [16 * (1 << 20) + 3, 5 * (1 << 20) + 3, 4096] {
        let host: Vec<f32> = Tensor::randn(0f32, 1.0, len, &Device::Cpu)?.to_vec1()?;
        let second: Vec<f32> = host.iter().map(|v| v * 3.0).collect();
        let a = hwcov_cuda::host_copy::from_host_f32(&host, &[len], cuda)?;
        let b = hwcov_cuda::host_copy::from_host_f32(&second, &[len], cuda)?;
        assert_eq!(a.to_vec1::<f32>()?, host, "from_host_f32, {len} elements");
        assert_eq!(
            b.to_vec1::<f32>()?,
            second,
            "from_host_f32 straight after another, {len} elements"
        );
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let t = a.to_dtype(dtype)?;
            let staged = hwcov_cuda::host_copy::to_host_f32(&t)?.expect("a float CUDA tensor");
            let plain = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            assert!(
                staged.iter().zip(&plain).all(|(s, p)| s.to_bits() == p.to_bits()) && staged.len() == plain.len(),
                "to_host_f32, {dtype:?}, {len} elements"
            );
        }
    }
    Ok(())
}
