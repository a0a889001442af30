//! The wgpu device: one per process, opened on first use, with the adapter's own limits; compute
//! pipelines compiled once per WGSL source; device errors turned into errors that say what failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use hwcov_core::{Error, Result};

/// The device and what it can do.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    /// Read-back staging buffers between read backs (`record_read`), the smallest first: making and
    /// mapping a host-visible buffer for every run cost more than the copy through it.
    staging: Mutex<Vec<wgpu::Buffer>>,
}

/// Staging buffers kept between read backs, and the largest one kept.
const STAGING_KEPT: usize = 4;
const STAGING_KEPT_BYTES: u64 = 256 << 20;
/// The smallest staging buffer made: small read backs (a status word, a decoding step's logits)
/// then share one.
const STAGING_MIN: u64 = 1 << 20;

static GPU: OnceLock<std::result::Result<Arc<Gpu>, String>> = OnceLock::new();

/// The process's device, opened on first use; the error says why there is none.
pub fn gpu() -> Result<Arc<Gpu>> {
    GPU.get_or_init(|| Gpu::open().map(Arc::new))
        .clone()
        .map_err(|reason| Error::Unavailable {
            platform: "webgpu".into(),
            reason,
        })
}

fn backend_name(b: wgpu::Backend) -> &'static str {
    match b {
        wgpu::Backend::Vulkan => "Vulkan",
        wgpu::Backend::Metal => "Metal",
        wgpu::Backend::Dx12 => "DX12",
        wgpu::Backend::Gl => "GL",
        wgpu::Backend::BrowserWebGpu => "WebGPU",
        wgpu::Backend::Noop => "none",
    }
}

fn device_type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete GPU",
        wgpu::DeviceType::IntegratedGpu => "integrated GPU",
        wgpu::DeviceType::VirtualGpu => "virtual GPU",
        wgpu::DeviceType::Cpu => "CPU",
        wgpu::DeviceType::Other => "other",
    }
}

impl Gpu {
    fn open() -> std::result::Result<Gpu, String> {
        // Vulkan, Metal and DX12 only: GL has no compute shaders worth the name.
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            ..Default::default()
        }))
        .map_err(|e| {
            format!(
                "no Vulkan, Metal or DX12 adapter ({e}); on Linux install a Vulkan driver and loader \
                 (`cargo xtask setup --platform webgpu`: Debian's mesa-vulkan-drivers and libvulkan1)"
            )
        })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let wanted = wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY;
        let features = adapter.features() & wanted;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("hwcov"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| format!("the adapter {} refused a device: {e}", info.name))?;
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            features,
            pipelines: Mutex::new(HashMap::new()),
            staging: Mutex::new(Vec::new()),
        })
    }

    /// The adapter in words: name, backend, driver, device type.
    pub fn describe(&self) -> String {
        let driver = [self.info.driver.as_str(), self.info.driver_info.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "{} ({}, {}{}, {})",
            self.info.name,
            backend_name(self.info.backend),
            device_type_name(self.info.device_type),
            if self.features.contains(wgpu::Features::SHADER_F16) {
                ", shader-f16"
            } else {
                ""
            },
            if driver.is_empty() {
                "driver unknown".to_string()
            } else {
                driver
            }
        )
    }

    /// The largest buffer a kernel can bind, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Every WGSL source compiled so far (each kernel of every plan run in this process).
    pub fn sources(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The compute pipeline of a WGSL source (entry point `main`), compiled once.
    pub fn pipeline(&self, source: &str) -> Result<Arc<wgpu::ComputePipeline>> {
        if let Some(p) = self.pipelines.lock().unwrap_or_else(|e| e.into_inner()).get(source) {
            return Ok(p.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: None,
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Runtime {
                context: "compiling a WGSL kernel".into(),
                message: format!("{e}\n--- kernel source ---\n{source}"),
            });
        }
        let p = Arc::new(pipeline);
        self.pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(source.to_string(), p.clone());
        Ok(p)
    }

    /// Creates a buffer, turning an allocation failure into an error that names `what`.
    pub fn buffer(&self, what: &str, size: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        // Whole vec4s, so that any buffer binds as an array of vec4.
        let size = size.max(16).next_multiple_of(16);
        if size > self.limits.max_buffer_size {
            return Err(Error::Unsupported {
                platform: "webgpu".into(),
                what: format!("tensor `{what}` ({size} bytes)"),
                reason: format!(
                    "larger than the adapter's largest buffer ({} bytes, {})",
                    self.limits.max_buffer_size, self.info.name
                ),
            });
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Runtime {
                context: format!("allocating {size} bytes for `{what}` on {}", self.info.name),
                message: format!("the device ran out of memory: {e}"),
            });
        }
        Ok(buffer)
    }

    /// The bind group of a pipeline: the parameter block at binding 0, then `buffers` from 1 on.
    pub fn bind_group(
        &self,
        pipeline: &wgpu::ComputePipeline,
        params: wgpu::BindingResource,
        buffers: &[std::sync::Arc<wgpu::Buffer>],
    ) -> wgpu::BindGroup {
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: params,
        }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.as_entire_binding(),
            });
        }
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }

    /// Waits for the queue to finish.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Runtime {
                context: format!("waiting for {}", self.info.name),
                message: e.to_string(),
            })
    }

    /// Copies the first bytes of several buffers back to the host, through one staging buffer
    /// and one wait.
    pub fn read_many(&self, parts: &[(std::sync::Arc<wgpu::Buffer>, u64)]) -> Result<Vec<Vec<u8>>> {
        let ranges: Vec<_> = parts.iter().map(|(b, n)| (b.clone(), 0, *n)).collect();
        let mut enc = self.device.create_command_encoder(&Default::default());
        let read = self.record_read(&mut enc, &ranges)?;
        self.queue.submit([enc.finish()]);
        Ok(read.submitted().finish(self)?.0)
    }

    /// Records the copies of a read back into `enc`; once it is submitted, `PendingRead::submitted`
    /// asks for the mapping.
    pub fn record_read(
        &self,
        enc: &mut wgpu::CommandEncoder,
        parts: &[(std::sync::Arc<wgpu::Buffer>, u64, u64)],
    ) -> Result<PendingRead> {
        let sizes: Vec<u64> = parts.iter().map(|(_, _, n)| (*n).max(4).next_multiple_of(4)).collect();
        let total: u64 = sizes.iter().sum();
        let staging = self.staging_buffer(total)?;
        let mut at = 0;
        for ((src, offset, _), &n) in parts.iter().zip(&sizes) {
            enc.copy_buffer_to_buffer(src, *offset, &staging, at, n);
            at += n;
        }
        Ok(PendingRead {
            staging,
            rx: None,
            parts: parts.iter().map(|(_, _, want)| *want).zip(sizes).collect(),
            total,
        })
    }

    /// A staging buffer of at least `bytes`: the smallest kept one that holds them, else a new one
    /// with room (a power of two, so that a read back that grows step by step keeps its buffer).
    fn staging_buffer(&self, bytes: u64) -> Result<wgpu::Buffer> {
        {
            let mut kept = self.staging.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = kept.iter().position(|b| b.size() >= bytes) {
                return Ok(kept.remove(i));
            }
        }
        let room = bytes.next_power_of_two().max(STAGING_MIN);
        let size = if room <= self.limits.max_buffer_size {
            room
        } else {
            bytes
        };
        self.buffer(
            "readback",
            size,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )
    }

    /// Keeps an unmapped staging buffer for the next read back (a few, none very large).
    fn return_staging(&self, buffer: wgpu::Buffer) {
        if buffer.size() > STAGING_KEPT_BYTES {
            return;
        }
        let mut kept = self.staging.lock().unwrap_or_else(|e| e.into_inner());
        let at = kept.partition_point(|b| b.size() < buffer.size());
        kept.insert(at, buffer);
        if kept.len() > STAGING_KEPT {
            // The smallest goes: a larger one serves its read backs too.
            kept.remove(0);
        }
    }
}

/// A read back recorded (`Gpu::record_read`), then submitted and not yet waited for.
pub struct PendingRead {
    staging: wgpu::Buffer,
    /// The mapping's outcome, once asked for (`submitted`).
    rx: Option<std::sync::mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>>,
    /// Bytes wanted and bytes copied of each part.
    parts: Vec<(u64, u64)>,
    /// Bytes copied in all: the mapped range (the staging buffer may be larger).
    total: u64,
}

/// Where a read back's time went, in ms: waiting for the device (`poll`), then for the mapping's
/// callback, then copying the mapped bytes out, then (the session's part) turning them into
/// tensors (`HWCOV_WEBGPU_PROFILE=1` prints them).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadTimes {
    pub wait: f64,
    pub map: f64,
    pub copy: f64,
    pub convert: f64,
}

impl PendingRead {
    /// Asks for the mapping, after the submission that holds the copies (a buffer waiting to be
    /// mapped cannot be used by a later submission).
    pub fn submitted(mut self) -> PendingRead {
        let (tx, rx) = std::sync::mpsc::channel();
        self.staging.map_async(wgpu::MapMode::Read, ..self.total, move |r| {
            let _ = tx.send(r);
        });
        self.rx = Some(rx);
        self
    }

    /// Waits for the copies and returns each part's bytes, with where the time went.
    pub fn finish(self, gpu: &Gpu) -> Result<(Vec<Vec<u8>>, ReadTimes)> {
        let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1e3;
        let t = std::time::Instant::now();
        gpu.wait()?;
        let wait = ms(t);
        let t = std::time::Instant::now();
        self.rx
            .as_ref()
            .ok_or_else(|| Error::runtime("reading back", "the read back was never submitted"))?
            .recv()
            .map_err(|e| Error::runtime("reading back", e))?
            .map_err(|e| Error::runtime("reading back", e))?;
        let map = ms(t);
        let t = std::time::Instant::now();
        let view = self
            .staging
            .get_mapped_range(..self.total)
            .map_err(|e| Error::runtime("reading back", e))?;
        let mut out = Vec::with_capacity(self.parts.len());
        let mut at = 0usize;
        for &(want, n) in &self.parts {
            out.push(view[at..at + want as usize].to_vec());
            at += n as usize;
        }
        drop(view);
        self.staging.unmap();
        gpu.return_staging(self.staging);
        Ok((
            out,
            ReadTimes {
                wait,
                map,
                copy: ms(t),
                convert: 0.0,
            },
        ))
    }
}
