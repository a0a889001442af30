//! One progress bar for the files of a fetch: bytes, rate and time left, on a terminal; a line per
//! file elsewhere (a log keeps what was fetched).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct SetProgress {
    bar: Option<ProgressBar>,
    files: usize,
    done: AtomicUsize,
    what: String,
}

impl SetProgress {
    /// Progress of fetching `files` files of `bytes` in all for `what` (the model id).
    pub fn new(what: &str, bytes: u64, files: usize) -> Self {
        let bar = (files > 0 && std::io::stderr().is_terminal()).then(|| {
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}, {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr()).with_style(style);
            bar.set_message(format!("fetching {what}: 0/{files} files"));
            bar
        });
        SetProgress {
            bar,
            files,
            done: AtomicUsize::new(0),
            what: what.to_string(),
        }
    }

    pub fn add(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    /// Takes back `bytes` counted before (a server that ignored a resume sends the file again).
    pub fn rewind(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bar.position().saturating_sub(bytes));
        }
    }

    pub fn file_done(&self, name: &str, size: u64) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        match &self.bar {
            Some(bar) => bar.set_message(format!("fetching {}: {done}/{} files", self.what, self.files)),
            None => eprintln!(
                "{}: {name} ({}), {done} of {} files",
                self.what,
                HumanBytes(size),
                self.files
            ),
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_with_message(format!("fetched {}: {} files", self.what, self.files));
        }
    }
}
