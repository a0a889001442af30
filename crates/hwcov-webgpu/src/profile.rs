//! Device time of each dispatch, for tuning kernels (`HWCOV_WEBGPU_PROFILE=kernels`).
//!
//! Each dispatch is recorded in a compute pass of its own whose start and end write timestamps;
//! after the run the timestamps are read back and added up per dispatch (op, node, workgroups).
//! Passes of their own add the time between passes to every dispatch, so the sum is a little more
//! than a run takes when its dispatches share one pass: the numbers rank kernels, they are not
//! the benchmark. The table goes to stderr when the session closes.

use std::collections::HashMap;
use std::sync::Arc;

use hwcov_core::{Error, Result};

use crate::gpu::Gpu;

/// The most timestamps one query set holds (wgpu's limit).
const QUERIES_PER_SET: usize = 4096;
/// Rows of the report.
const TOP: usize = 30;

/// What a dispatch is, as the report names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DispatchName {
    /// The ONNX op, or `fused A+B+C` for an elementwise group.
    pub op: String,
    pub node: String,
    pub groups: [u32; 3],
}

/// A dispatch to record: its name, pipeline, bind group and workgroups.
pub struct Timed<'a> {
    pub name: &'a DispatchName,
    pub pipeline: &'a wgpu::ComputePipeline,
    pub bind: &'a wgpu::BindGroup,
}

/// Timestamps recorded for one run, to read back once it is submitted.
pub struct Pending {
    resolved: Vec<(Arc<wgpu::Buffer>, u64)>,
    names: Vec<DispatchName>,
}

/// Device time per dispatch, over the runs of a session.
#[derive(Default)]
pub struct KernelTimes {
    /// Calls and total nanoseconds per dispatch.
    totals: HashMap<DispatchName, (u64, f64)>,
    runs: u64,
    label: String,
}

impl KernelTimes {
    /// Profiling of `label`'s runs where `HWCOV_WEBGPU_PROFILE=kernels` asks for it and the device
    /// can write timestamps.
    pub fn requested(gpu: &Gpu, label: String) -> Option<KernelTimes> {
        let wanted = std::env::var("HWCOV_WEBGPU_PROFILE").is_ok_and(|v| v == "kernels");
        if !wanted {
            return None;
        }
        if !gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            eprintln!(
                "webgpu: HWCOV_WEBGPU_PROFILE=kernels: {} cannot write timestamps; no kernel times",
                gpu.info.name
            );
            return None;
        }
        Some(KernelTimes {
            label,
            ..Default::default()
        })
    }

    /// Records each dispatch in a pass of its own that writes timestamps at its start and end,
    /// and the copies of the timestamps into buffers that `collect` reads.
    pub fn record(&self, gpu: &Gpu, enc: &mut wgpu::CommandEncoder, dispatches: &[Timed]) -> Result<Pending> {
        let mut resolved = Vec::new();
        for chunk in dispatches.chunks(QUERIES_PER_SET / 2) {
            let count = (chunk.len() * 2) as u32;
            let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel times"),
                ty: wgpu::QueryType::Timestamp,
                count,
            });
            for (i, d) in chunk.iter().enumerate() {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &set,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                pass.set_pipeline(d.pipeline);
                pass.set_bind_group(0, d.bind, &[]);
                let [x, y, z] = d.name.groups;
                pass.dispatch_workgroups(x, y, z);
            }
            let bytes = count as u64 * 8;
            let buffer = gpu.buffer(
                "kernel times",
                bytes,
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            )?;
            enc.resolve_query_set(&set, 0..count, &buffer, 0);
            resolved.push((Arc::new(buffer), bytes));
        }
        Ok(Pending {
            resolved,
            names: dispatches.iter().map(|d| d.name.clone()).collect(),
        })
    }

    /// Reads a submitted run's timestamps back and adds them up.
    pub fn collect(&mut self, gpu: &Gpu, pending: Pending) -> Result<()> {
        let period = f64::from(gpu.queue.get_timestamp_period());
        let parts = gpu.read_many(&pending.resolved)?;
        let ticks: Vec<u64> = parts
            .iter()
            .flat_map(|p| {
                p.chunks_exact(8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            })
            .collect();
        if ticks.len() != pending.names.len() * 2 {
            return Err(Error::runtime("reading kernel times", "a timestamp is missing"));
        }
        for (name, t) in pending.names.into_iter().zip(ticks.chunks_exact(2)) {
            let ns = t[1].saturating_sub(t[0]) as f64 * period;
            let e = self.totals.entry(name).or_default();
            e.0 += 1;
            e.1 += ns;
        }
        self.runs += 1;
        Ok(())
    }

    /// The table: device time per op, then the dispatches that took the most.
    pub fn report(&self) -> String {
        let total: f64 = self.totals.values().map(|v| v.1).sum();
        if self.runs == 0 || total <= 0.0 {
            return String::new();
        }
        let per_run = |ns: f64| ns / self.runs as f64 / 1e3;
        let mut out = format!(
            "webgpu kernel times, {}: {} runs, {:.1} us of device time a run (each dispatch in a pass of its own)\n",
            self.label,
            self.runs,
            per_run(total)
        );
        let mut by_op: HashMap<&str, (u64, f64)> = HashMap::new();
        for (name, &(calls, ns)) in &self.totals {
            let e = by_op.entry(name.op.as_str()).or_default();
            e.0 += calls;
            e.1 += ns;
        }
        let mut ops: Vec<_> = by_op.into_iter().collect();
        ops.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
        out.push_str("  by op:      us a run   share  dispatches a run\n");
        for (op, (calls, ns)) in ops.iter().take(TOP) {
            out.push_str(&format!(
                "  {:>10.1} {:>6.1}%  {:>6}  {op}\n",
                per_run(*ns),
                100.0 * ns / total,
                calls / self.runs
            ));
        }
        let mut each: Vec<_> = self.totals.iter().collect();
        each.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
        out.push_str("  by dispatch:  us a call  share  workgroups  op  node\n");
        for (name, (calls, ns)) in each.iter().take(TOP) {
            out.push_str(&format!(
                "  {:>10.1} {:>6.1}%  {:?}  {}  {}\n",
                ns / *calls as f64 / 1e3,
                100.0 * ns / total,
                name.groups,
                name.op,
                name.node
            ));
        }
        out
    }
}
