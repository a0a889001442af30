//! DETR's sine position embedding against transformers' own (fixtures/detr/sine_position.safetensors,
//! made by tools/fixtures/detr_sine_position.py): DetrModel builds it in the pixel values' dtype, so at
//! bfloat16 and float16 every step rounds (10000 itself is 9984 in bfloat16), and hwcov must round
//! where transformers does to give the same embedding.

use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};
use hwcov_candle::models::detr::sine_position_embedding;

fn reference() -> Result<std::collections::HashMap<String, Tensor>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/detr/sine_position.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu)
}

fn mask(t: &Tensor) -> Result<Vec<Vec<Vec<bool>>>> {
    Ok(t.to_vec3::<u8>()?
        .into_iter()
        .map(|m| {
            m.into_iter()
                .map(|row| row.into_iter().map(|v| v != 0).collect())
                .collect()
        })
        .collect())
}

/// The number of elements that differ, and the largest difference.
fn differ(a: &Tensor, b: &Tensor) -> Result<(usize, f32)> {
    let a = a.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let b = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(a.len(), b.len());
    Ok(a.iter().zip(&b).fold((0, 0f32), |(n, m), (x, y)| {
        ((x != y) as usize + n, m.max((x - y).abs()))
    }))
}

#[test]
fn sine_position_embedding_rounds_as_transformers_builds_it() -> Result<()> {
    let r = reference()?;
    let m = mask(&r["mask"])?;
    for (name, dtype) in [("bf16", DType::BF16), ("f16", DType::F16)] {
        let ours = sine_position_embedding(&m, 16, dtype, &Device::Cpu)?;
        assert_eq!(ours.dtype(), dtype);
        assert_eq!(ours.dims(), r[name].dims(), "{name}: shape");
        let (n, max) = differ(&ours, &r[name])?;
        assert_eq!(n, 0, "{name}: {n} elements differ from transformers' (largest {max})");
    }
    let ours = sine_position_embedding(&m, 16, DType::F32, &Device::Cpu)?;
    let (_, max) = differ(&ours, &r["f32"])?;
    assert!(max <= 1e-6, "f32: {max} from transformers'");
    Ok(())
}

/// Had the embedding been built in f32 and rounded once, as transformers 4 did, it would not match:
/// the test above can tell the two apart.
#[test]
fn one_rounding_would_differ() -> Result<()> {
    let r = reference()?;
    let m = mask(&r["mask"])?;
    let once = sine_position_embedding(&m, 16, DType::F32, &Device::Cpu)?.to_dtype(DType::BF16)?;
    let (n, _) = differ(&once, &r["bf16"])?;
    assert!(
        n > 0,
        "rounding once gives transformers' bf16 embedding too; the test above proves nothing"
    );
    Ok(())
}
