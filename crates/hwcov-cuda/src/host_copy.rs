//! Copies between host memory and a CUDA device through one page-locked staging buffer, with the
//! host side of each copy (into or out of that buffer) spread over threads. Copies larger than the
//! buffer's cap go through it in parts.
//!
//! Why: a copy from or to pageable memory goes through the driver's own staging, one thread of
//! memcpy at a time: 5 to 14 GB/s on the H100 hosts of docs/measurements, against 50 to 55 GB/s
//! from page-locked memory. For ViT-base at batch 32 (19 MB in, 19 MB out) that was 3 to 5 ms of a
//! 36 ms pass (docs/benchmarks.md). Through the staging buffer the link runs at its own speed, and
//! the host's share is split over cores. Half-precision outputs also cross the link in their own
//! dtype and are widened on the host, which is exact (every f16 and bf16 value is an f32 value).

use std::mem::MaybeUninit;

#[cfg(feature = "cuda")]
pub use cuda::{from_host_f32, to_host_f32};

/// The fewest bytes worth a host thread of their own.
const BYTES_PER_THREAD: usize = 2 << 20;
const MAX_THREADS: usize = 8;

/// Writes `f` of each element of `src` into `dst` (of the same length), split over threads.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn parallel_map<T: Copy + Sync, U: Send>(src: &[T], dst: &mut [MaybeUninit<U>], f: impl Fn(T) -> U + Sync) {
    // The callers take every element of `dst` as written afterwards.
    assert_eq!(src.len(), dst.len(), "parallel_map fills dst exactly");
    let bytes = src.len() * size_of::<T>().max(size_of::<U>());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (bytes / BYTES_PER_THREAD).clamp(1, cores.min(MAX_THREADS));
    let chunk = src.len().div_ceil(threads).max(1);
    let map = |src: &[T], dst: &mut [MaybeUninit<U>]| {
        for (d, &x) in dst.iter_mut().zip(src) {
            d.write(f(x));
        }
    };
    std::thread::scope(|scope| {
        let mut parts = src.chunks(chunk).zip(dst.chunks_mut(chunk));
        // The first part on this thread, the others on threads of their own.
        let first = parts.next();
        for (s, d) in parts {
            scope.spawn(|| map(s, d));
        }
        if let Some((s, d)) = first {
            map(s, d);
        }
    });
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use std::sync::{Arc, Mutex, MutexGuard};

    use candle_core::cuda_backend::cudarc::driver::{
        self, CudaContext, CudaEvent, CudaStream, CudaView, DevicePtr, DevicePtrMut, DeviceRepr, PinnedHostSlice,
    };
    use candle_core::cuda_backend::{CudaStorage, WrapErr};
    use candle_core::op::BackpropOp;
    use candle_core::{CudaDevice, DType, Device, Storage, Tensor};
    use half::{bf16, f16};

    /// Below this many bytes a plain copy is as fast: the staging's fixed costs (a lock, thread
    /// starts, an event) would outweigh what it saves.
    const STAGED_FROM_BYTES: usize = 1 << 20;
    /// The most the staging buffer holds: page-locked memory is taken from what the system can page,
    /// so larger copies (a causal LM's logits for every position) go through it in parts.
    const STAGING_BYTES: usize = 64 << 20;

    struct Staging {
        buffer: PinnedHostSlice<u8>,
        /// The last copy from the buffer to a device: the buffer must not be written before it lands.
        pending: Option<CudaEvent>,
    }

    /// One buffer for the process, grown to the largest part copied. It is allocated as portable, so
    /// it counts as page-locked for every device's context.
    static STAGING: Mutex<Option<Staging>> = Mutex::new(None);

    /// The staging buffer, at least `bytes` long.
    fn staging(ctx: &Arc<CudaContext>, bytes: usize) -> candle_core::Result<MutexGuard<'static, Option<Staging>>> {
        let mut guard = STAGING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.as_ref().is_none_or(|s| s.buffer.num_bytes() < bytes) {
            // Let the old buffer's last copy land and drop it before taking the new one, so the two
            // are never held at once.
            if let Some(pending) = guard.take().and_then(|s| s.pending) {
                pending.synchronize().w()?;
            }
            let rounded = bytes.next_multiple_of(STAGED_FROM_BYTES);
            // SAFETY: the buffer's bytes are only read after a copy has written them.
            let buffer =
                unsafe { ctx.alloc_pinned_with_flags::<u8>(rounded, driver::sys::CU_MEMHOSTALLOC_PORTABLE) }.w()?;
            *guard = Some(Staging { buffer, pending: None });
        }
        Ok(guard)
    }

    /// The first `len` elements of the staging buffer as `T`s not yet written, once the buffer's last
    /// copy to a device has landed.
    fn staged<T>(staging: &mut Staging, len: usize) -> candle_core::Result<&mut [MaybeUninit<T>]> {
        assert!(
            len * size_of::<T>() <= staging.buffer.num_bytes(),
            "staging() sized the buffer"
        );
        if let Some(pending) = staging.pending.take() {
            pending.synchronize().w()?;
        }
        let ptr = staging.buffer.as_mut_ptr().w()?;
        // SAFETY: the buffer is page-aligned and holds at least `len` Ts; MaybeUninit<T> has T's
        // layout and makes no claim on the bytes' contents.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<MaybeUninit<T>>(), len) })
    }

    /// A float CUDA tensor's values as f32 on the host, or `None` for tensors that are not float CUDA
    /// tensors. Copied once, from the device straight into the returned vector's memory by way of the
    /// staging buffer (candle's `to_vec1` copies into a vector of its own first, then again).
    pub fn to_host_f32(flat: &Tensor) -> candle_core::Result<Option<Vec<f32>>> {
        let Device::Cuda(dev) = flat.device() else {
            return Ok(None);
        };
        if !flat.dtype().is_float() {
            return Ok(None);
        }
        let (storage, layout) = flat.storage_and_layout();
        let (Storage::Cuda(storage), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
            return Ok(None);
        };
        let stream = dev.cuda_stream();
        let values = match flat.dtype() {
            DType::F32 => copy_out(&stream, &storage.as_cuda_slice::<f32>()?.slice(start..end), |x| x)?,
            DType::BF16 => copy_out(
                &stream,
                &storage.as_cuda_slice::<bf16>()?.slice(start..end),
                bf16::to_f32,
            )?,
            DType::F16 => copy_out(&stream, &storage.as_cuda_slice::<f16>()?.slice(start..end), f16::to_f32)?,
            _ => return to_host_f32(&flat.to_dtype(DType::F32)?),
        };
        Ok(Some(values))
    }

    /// Copies `src` to the host, widening each element to f32 with `widen`.
    fn copy_out<T: DeviceRepr + Copy + Sync>(
        stream: &Arc<CudaStream>,
        src: &CudaView<T>,
        widen: impl Fn(T) -> f32 + Sync,
    ) -> candle_core::Result<Vec<f32>> {
        let len = src.len();
        if len * size_of::<T>() < STAGED_FROM_BYTES {
            // For f32 the identity map collects into the copy's own vector, without another copy.
            return Ok(stream.clone_dtoh(src).w()?.into_iter().map(widen).collect());
        }
        let part = len.min(STAGING_BYTES / size_of::<T>());
        let mut guard = staging(stream.context(), part * size_of::<T>())?;
        let staging = guard.as_mut().expect("staging() leaves a buffer");
        let mut out = Vec::with_capacity(len);
        for (i, dst) in out.spare_capacity_mut()[..len].chunks_mut(part).enumerate() {
            let buffer = staged::<T>(staging, dst.len())?;
            {
                let from = i * part;
                let src = src.slice(from..from + dst.len());
                let (src_ptr, _record) = src.device_ptr(stream);
                // SAFETY: the buffer is page-locked and holds as many Ts as `src`; the stream is
                // synchronized before the buffer is read.
                unsafe {
                    driver::result::memcpy_dtoh_async(&mut *buffer, src_ptr, stream.cu_stream()).w()?;
                }
            }
            stream.synchronize().w()?;
            // SAFETY: the copy above has written every element of the buffer.
            let buffer = unsafe { &*(buffer as *const [MaybeUninit<T>] as *const [T]) };
            parallel_map(buffer, dst, &widen);
        }
        // SAFETY: the parts above have written the first `len` elements.
        unsafe { out.set_len(len) };
        Ok(out)
    }

    /// f32 host values as a tensor of `shape` on a CUDA device, copied through the staging buffer.
    pub fn from_host_f32(values: &[f32], shape: &[usize], dev: &CudaDevice) -> candle_core::Result<Tensor> {
        let (len, bytes) = (values.len(), size_of_val(values));
        if shape.iter().product::<usize>() != len {
            candle_core::bail!("{len} values for a tensor of shape {shape:?}");
        }
        if bytes < STAGED_FROM_BYTES {
            return Tensor::from_slice(values, shape, &Device::Cuda(dev.clone()));
        }
        let stream = dev.cuda_stream();
        let part = len.min(STAGING_BYTES / size_of::<f32>());
        let mut guard = staging(stream.context(), part * size_of::<f32>())?;
        let staging = guard.as_mut().expect("staging() leaves a buffer");
        // SAFETY: the parts below write all `len` elements.
        let mut slice = unsafe { dev.alloc::<f32>(len)? };
        for (i, src) in values.chunks(part).enumerate() {
            let buffer = staged::<f32>(staging, src.len())?;
            parallel_map(src, buffer, |x| x);
            // SAFETY: parallel_map has written every element of the buffer.
            let buffer = unsafe { &*(buffer as *const [MaybeUninit<f32>] as *const [f32]) };
            {
                let from = i * part;
                let mut dst = slice.slice_mut(from..from + src.len());
                let (dst_ptr, _record) = dst.device_ptr_mut(&stream);
                // SAFETY: the buffer is page-locked and holds as many f32s as `dst`; it is not written
                // again before the event recorded below has passed (`staged` waits for it).
                unsafe {
                    driver::result::memcpy_htod_async(dst_ptr, buffer, stream.cu_stream()).w()?;
                }
            }
            staging.pending = Some(stream.record_event(None).w()?);
        }
        let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, dev.clone()));
        Ok(Tensor::from_storage(storage, shape, BackpropOp::none(), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_map_writes_every_element_in_order() {
        // Enough elements for several threads, and a length that does not split evenly.
        let src: Vec<u32> = (0..3_000_017).collect();
        let mut dst = Vec::with_capacity(src.len());
        parallel_map(&src, &mut dst.spare_capacity_mut()[..src.len()], |x| x as f32 * 0.5);
        unsafe { dst.set_len(src.len()) };
        assert!(dst.iter().enumerate().all(|(i, &v)| v == i as f32 * 0.5));
    }
}
