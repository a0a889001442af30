//! Results: one verification, one cell of the matrix, one coverage run of a machine.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::compare::{OutputComparison, Tolerance};
use crate::platform::{PlatformId, Precision};

/// The status of a cell, and nothing else (DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A real run on the platform matched the transformers reference within tolerance.
    Verified,
    /// It ran (or tried to) and did not match, or errored.
    Failed,
    /// The platform will not run this model, for a stated reason.
    Unsupported,
    /// The platform's hardware or runtime is not on the machine that measured.
    NotVerifiedHere,
    /// No code for this model on this platform yet.
    NotImplemented,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Verified => "verified",
            Status::Failed => "failed",
            Status::Unsupported => "unsupported",
            Status::NotVerifiedHere => "not verified here",
            Status::NotImplemented => "not implemented",
        }
    }

    /// A real measurement (verified or failed), as opposed to a statement of why nothing ran.
    pub fn is_measured(self) -> bool {
        matches!(self, Status::Verified | Status::Failed)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `hwcov verify`: a model folder and io file run on one platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub model_dir: String,
    pub io: String,
    pub model_type: String,
    pub platform: PlatformId,
    pub device: String,
    pub precision: Precision,
    pub tolerance: Tolerance,
    pub outputs: Vec<OutputComparison>,
    pub passed: bool,
    pub load_seconds: f64,
    pub run_seconds: f64,
}

impl VerifyReport {
    /// The largest absolute error over the float outputs.
    pub fn max_abs_err(&self) -> f64 {
        self.outputs
            .iter()
            .filter(|o| !o.exact)
            .map(|o| o.max_abs_err)
            .fold(0.0, f64::max)
    }

    /// The outputs outside the tolerance, each with its errors, joined by "; ".
    pub fn failures(&self) -> String {
        let bad: Vec<String> = self
            .outputs
            .iter()
            .filter(|o| !o.passed)
            .map(|o| o.to_string())
            .collect();
        bad.join("; ")
    }

    /// One line: passed or failed, counts, the largest error.
    pub fn summary(&self) -> String {
        let failed = self.outputs.iter().filter(|o| !o.passed).count();
        format!(
            "{}: {} on {} ({}, {}): {} of {} outputs within {} (max abs err {:.3e}), load {:.3}s, run {:.3}s",
            if self.passed { "VERIFIED" } else { "FAILED" },
            self.model_type,
            self.platform,
            self.device,
            self.precision,
            self.outputs.len() - failed,
            self.outputs.len(),
            self.tolerance,
            self.max_abs_err(),
            self.load_seconds,
            self.run_seconds,
        )
    }
}

/// One cell of the matrix as measured on one machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub model: String,
    pub platform: PlatformId,
    pub status: Status,
    /// Why it failed, is unsupported, not here or not implemented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The device that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Where verification ran: a verified or failed cell keeps its machine and date when runs merge.
    pub host: String,
    pub date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<VerifyReport>,
}

impl CellResult {
    pub fn max_abs_err(&self) -> Option<f64> {
        self.report.as_ref().map(VerifyReport::max_abs_err)
    }

    /// Seconds spent loading plus running, when something ran.
    pub fn seconds(&self) -> Option<f64> {
        self.report.as_ref().map(|r| r.load_seconds + r.run_seconds)
    }
}

/// All cells one machine measured in one `coverage` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoverageRun {
    pub host: String,
    pub date: String,
    pub hwcov_version: String,
    /// The platforms compiled into the binary that measured.
    pub platforms_compiled: Vec<PlatformId>,
    pub cells: Vec<CellResult>,
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs)
}

/// Formats seconds since the Unix epoch as an RFC 3339 UTC time (civil-from-days, H. Hinnant).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// A name for this machine: the hostname, as the kernel reports it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_795_651_200 + 3661), "2026-11-26T01:01:01Z");
    }
}
