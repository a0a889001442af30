//! A strided f32 tensor made contiguous (attention's head transposes), rows split over the threads.

use candle_core::{DType, Device, Result, Storage, Tensor};

use super::{for_rows, tensor};

pub fn contiguous(x: &Tensor) -> Result<Option<Tensor>> {
    if x.dtype() != DType::F32 || !matches!(x.device(), Device::Cpu) || x.elem_count() == 0 {
        return Ok(None);
    }
    let (guard, layout) = x.storage_and_layout();
    let Storage::Cpu(candle_core::CpuStorage::F32(src)) = &*guard else {
        return Ok(None);
    };
    let (dims, strides, start) = (layout.dims(), layout.stride(), layout.start_offset());
    let Some((&cols, outer)) = dims.split_last() else {
        return Ok(None);
    };
    let col_stride = strides[dims.len() - 1];
    let mut out = vec![0f32; x.elem_count()];
    for_rows(&mut out, cols, |r, row| {
        // The row's offset in the source, from its index over the outer dimensions.
        let (mut rest, mut at) = (r, start);
        for (&d, &s) in outer.iter().zip(strides).rev() {
            at += (rest % d) * s;
            rest /= d;
        }
        for (c, o) in row.iter_mut().enumerate() {
            *o = src[at + c * col_stride];
        }
    });
    drop(guard);
    tensor(out, x.dims()).map(Some)
}
