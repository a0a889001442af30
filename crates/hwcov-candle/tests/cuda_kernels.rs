//! hwcov's CUDA paths (`nn.rs`'s kernels, `nn/cublaslt.rs`'s products) against the plain candle
//! sequence on the CPU, at the shapes the models meet: every row length a row kernel is compiled for,
//! rows that do and do not divide into quads of four, Linear products of one and of many rows, keys
//! padded to a multiple of 8. The fixtures' tiny models reach only the shortest rows.
//!
//! Built only with the `cuda` feature, and it needs a CUDA device (docs/platforms/cuda.md: how to run
//! it on a GPU host).
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Module, Result, Tensor};
use hwcov_candle::activation::Activation;
use hwcov_candle::models::common::eager_attention;
use hwcov_candle::nn;

fn gpu() -> Device {
    Device::new_cuda(0).expect("the CUDA kernel tests run on a CUDA device")
}

/// Random values on the CPU, already rounded to `dtype`, so that both sides start from the same numbers.
fn values(shape: &[usize], dtype: DType) -> Result<Tensor> {
    Tensor::randn(0f32, 1.0, shape, &Device::Cpu)?.to_dtype(dtype)
}

/// Each element of the CUDA result within atol + rtol * |cpu| of the CPU result (both read as f32):
/// accumulation order may differ, and at half precision a result rounds to a neighbouring value.
fn assert_close(what: &str, cuda: &Tensor, cpu: &Tensor) -> Result<()> {
    assert_eq!(cuda.dims(), cpu.dims(), "{what}: shape");
    let (atol, rtol) = match cpu.dtype() {
        DType::F32 => (1e-4, 1e-4),
        _ => (1e-2, 1e-2),
    };
    let a = cuda
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let b = cpu.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let worst = a
        .iter()
        .zip(&b)
        .enumerate()
        .map(|(i, (x, y))| (i, (x - y).abs() - (atol + rtol * y.abs())))
        .fold((0, f32::MIN), |w, e| if e.1 > w.1 { e } else { w });
    assert!(
        worst.1 <= 0.0,
        "{what}: element {} is {} on CUDA, {} on the CPU",
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
                let on = |d: &Device| -> Result<(nn::Linear, Tensor, Tensor)> {
                    let b = b.as_ref().map(|b| b.to_device(d)).transpose()?;
                    Ok((nn::Linear::new(w.to_device(d)?, b), x.to_device(d)?, r.to_device(d)?))
                };
                let ((lc, xc, rc), (lg, xg, rg)) = (on(&Device::Cpu)?, on(&dev)?);
                let what = format!("{dtype:?} {rows}x{k} -> {n}, bias {bias}");
                assert_close(&format!("linear {what}"), &lg.forward(&xg)?, &lc.forward(&xc)?)?;
                let (g, c) = (
                    lg.forward_act(&xg, Activation::Gelu)?,
                    lc.forward_act(&xc, Activation::Gelu)?,
                );
                assert_close(&format!("linear + gelu {what}"), &g, &c)?;
                let (g, c) = (lg.forward_residual(&xg, &rg)?, lc.forward_residual(&xc, &rc)?);
                assert_close(&format!("linear + residual {what}"), &g, &c)?;
            }
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
                let cpu = nn::attention_softmax(&scores, 0.125, mask)?;
                let mg = mask.map(|m| m.to_device(&dev)).transpose()?;
                let cuda = nn::attention_softmax(&scores.to_device(&dev)?, 0.125, mg.as_ref())?;
                assert_close(
                    &format!("softmax {dtype:?} {cols} columns, mask {:?}", mask.map(|m| m.dims())),
                    &cuda,
                    &cpu,
                )?;
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
            let vb = |d: &Device| candle_nn::VarBuilder::from_tensors(params.clone(), dtype, d);
            let (ln_c, ln_g) = (
                nn::layer_norm(cols, 1e-5, vb(&Device::Cpu))?,
                nn::layer_norm(cols, 1e-5, vb(&dev))?,
            );
            let xg = x.to_device(&dev)?;
            assert_close(
                &format!("layer norm {dtype:?} {cols}"),
                &ln_g.forward(&xg)?,
                &ln_c.forward(&x)?,
            )?;
            let (rms_c, rms_g) = (
                nn::RmsNorm::new(cols, 1e-6, vb(&Device::Cpu))?,
                nn::RmsNorm::new(cols, 1e-6, vb(&dev))?,
            );
            assert_close(
                &format!("rms norm {dtype:?} {cols}"),
                &rms_g.forward(&xg)?,
                &rms_c.forward(&x)?,
            )?;
        }
    }
    Ok(())
}

#[test]
fn elementwise_steps_and_copies() -> Result<()> {
    let dev = gpu();
    for dtype in DTYPES {
        // Lengths that do and do not divide into the kernels' eight elements a thread.
        for n in [1, 7, 8, 1001, 4096] {
            let (x, r) = (values(&[n], dtype)?, values(&[n], dtype)?);
            let cuda = nn::add(&x.to_device(&dev)?, &r.to_device(&dev)?)?;
            assert_close(&format!("add {dtype:?} {n}"), &cuda, &nn::add(&x, &r)?)?;
        }
        let x = values(&[2, 9, 5, 2 * 6], dtype)?;
        let cuda = nn::gated_act(&x.to_device(&dev)?, Activation::Silu)?;
        assert_close(
            &format!("silu * up {dtype:?}"),
            &cuda,
            &nn::gated_act(&x, Activation::Silu)?,
        )?;
        let (x, pos) = (values(&[4, 197, 48], dtype)?, values(&[1, 197, 48], dtype)?);
        let cuda = nn::add_broadcast(&x.to_device(&dev)?, &pos.to_device(&dev)?)?;
        assert_close(&format!("position add {dtype:?}"), &cuda, &nn::add_broadcast(&x, &pos)?)?;
        let (scores, mask) = (values(&[4, 2, 197, 48], dtype)?, values(&[4, 1, 1, 48], dtype)?);
        let cuda = nn::add_broadcast(&scores.to_device(&dev)?, &mask.to_device(&dev)?)?;
        assert_close(
            &format!("mask add {dtype:?}"),
            &cuda,
            &nn::add_broadcast(&scores, &mask)?,
        )?;
        // The head transposes of attention, with rows of 8-byte units (64 wide) and without (3 wide).
        for d in [64, 3] {
            let x = values(&[2, 11, 4, d], dtype)?;
            let cuda = nn::contiguous(&x.to_device(&dev)?.transpose(1, 2)?)?;
            assert_close(
                &format!("head transpose {dtype:?} {d}"),
                &cuda,
                &x.transpose(1, 2)?.contiguous()?,
            )?;
            for pad in [1, 3, 5] {
                let cuda = nn::pad_rows(&x.to_device(&dev)?, pad)?;
                assert_close(
                    &format!("pad rows {dtype:?} {d} + {pad}"),
                    &cuda,
                    &nn::pad_rows(&x, pad)?,
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
            let cpu = eager_attention(&q, &k, &v, None, 0.125)?;
            let cuda = eager_attention(
                &q.to_device(&dev)?,
                &k.to_device(&dev)?,
                &v.to_device(&dev)?,
                None,
                0.125,
            )?;
            assert_close(&format!("attention {dtype:?} {kv} keys"), &cuda, &cpu)?;
        }
    }
    Ok(())
}
