//! A headless Chromium driven from Rust, for the platforms that run inside a browser (WebNN, and
//! WebGPU in the page).
//!
//! `Browser::launch` starts the binary with a fresh profile and `--remote-debugging-port=0`, reads
//! the DevTools address it prints, opens a page served from 127.0.0.1 (`server`), and evaluates
//! scripts in it over the DevTools protocol (`cdp`): a plain WebSocket client, since three commands
//! (create a target, attach, evaluate) are all hwcov needs. Tensors never cross as JSON: the page
//! fetches them as binary from the server and posts its outputs back the same way. The browser is
//! killed and its profile removed when the `Browser` is dropped, on errors too; every wait has a
//! limit, and a browser that fails to start, exits or stops answering gives an error naming the
//! binary.

mod cdp;
mod server;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hwcov_core::{Error, Result};

pub use server::Server;

/// Flags for a headless Chromium with WebNN and WebGPU, no network beyond 127.0.0.1 and no
/// first-run work.
pub const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-features=WebMachineLearningNeuralNetwork",
    "--enable-unsafe-webgpu",
];

/// Lines of the browser's stderr kept for errors.
const STDERR_LINES: usize = 30;

/// A running browser with one page open.
pub struct Browser {
    binary: PathBuf,
    child: Child,
    profile: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
    cdp: cdp::Connection,
    session: String,
    pub server: Server,
}

impl Browser {
    /// Starts `binary` with `flags` and opens `page` (HTML) from the server; waits at most
    /// `limit` for the browser to answer and the page to load.
    pub fn launch(binary: &Path, flags: &[&str], page: String, limit: Duration) -> Result<Browser> {
        if !binary.is_file() {
            return Err(Error::Unavailable {
                platform: "browser".into(),
                reason: format!("no browser at {}", binary.display()),
            });
        }
        let server = Server::start(page).map_err(|e| Error::runtime("serving the page on 127.0.0.1", e))?;
        let profile = std::env::temp_dir().join(format!(
            "hwcov-browser-{}-{}",
            std::process::id(),
            server.url().rsplit(':').next().unwrap_or("0").trim_end_matches('/')
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).map_err(|e| Error::io(&profile, e))?;
        let mut command = Command::new(binary);
        own_group(&mut command);
        let mut child = command
            .args(flags)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Unavailable {
                platform: "browser".into(),
                reason: format!("cannot start {}: {e}", binary.display()),
            })?;
        started(child.id(), &profile);
        // The DevTools address comes on stderr; the rest of stderr is kept for errors.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(err) = child.stderr.take() {
            let kept = stderr.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
                    if let Some(url) = line.split("DevTools listening on ").nth(1)
                        && let Some(t) = tx.take()
                    {
                        let _ = t.send(url.trim().to_string());
                        continue;
                    }
                    let mut k = kept.lock().unwrap_or_else(|e| e.into_inner());
                    k.push(line);
                    if k.len() > STDERR_LINES {
                        k.remove(0);
                    }
                }
            });
        }
        let mut browser = Browser {
            binary: binary.to_path_buf(),
            child,
            profile,
            stderr,
            cdp: cdp::Connection::none(),
            session: String::new(),
            server,
        };
        let deadline = Instant::now() + limit;
        let url = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(url) => break url,
                Err(_) => browser.check_alive("starting")?,
            }
            if Instant::now() > deadline {
                return Err(browser.failure(format!("printed no DevTools address in {} s", limit.as_secs())));
            }
        };
        browser.cdp = cdp::Connection::open(&url).map_err(|e| browser.failure(format!("DevTools at {url}: {e}")))?;
        let page_url = browser.server.url();
        let target = browser.command(
            "",
            "Target.createTarget",
            serde_json::json!({ "url": page_url }),
            deadline,
        )?;
        let id = target["targetId"].as_str().unwrap_or_default().to_string();
        let attached = browser.command(
            "",
            "Target.attachToTarget",
            serde_json::json!({ "targetId": id, "flatten": true }),
            deadline,
        )?;
        browser.session = attached["sessionId"].as_str().unwrap_or_default().to_string();
        // The new target starts on about:blank and then loads the page: wait until it has.
        loop {
            let step = Instant::now() + Duration::from_secs(5);
            let href = browser.eval_until(
                "document.readyState === 'complete' && location.href",
                step.min(deadline),
            );
            match href {
                Ok(serde_json::Value::String(h)) if h == page_url => break,
                Err(e) if Instant::now() > deadline => return Err(e),
                _ if Instant::now() > deadline => {
                    return Err(browser.failure(format!("did not load {page_url} in {} s", limit.as_secs())));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        Ok(browser)
    }

    /// The browser's product and version, e.g. "HeadlessChrome/153.0.8010.0".
    pub fn version(&mut self) -> Result<String> {
        let v = self.command(
            "",
            "Browser.getVersion",
            serde_json::json!({}),
            Instant::now() + Duration::from_secs(30),
        )?;
        Ok(v["product"].as_str().unwrap_or("unknown").to_string())
    }

    /// Evaluates `expression` in the page (awaiting a promise), with `limit` to answer; the value
    /// comes back as JSON. A thrown exception is an error with its message.
    pub fn eval(&mut self, expression: &str, limit: Duration) -> Result<serde_json::Value> {
        self.eval_until(expression, Instant::now() + limit)
    }

    fn eval_until(&mut self, expression: &str, deadline: Instant) -> Result<serde_json::Value> {
        let session = self.session.clone();
        let r = self.command(
            &session,
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            deadline,
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            // The first line: the message without the page's stack (whose address changes).
            let message = ex["exception"]["description"]
                .as_str()
                .or_else(|| ex["text"].as_str())
                .unwrap_or("an exception")
                .lines()
                .next()
                .unwrap_or("an exception")
                .to_string();
            return Err(Error::runtime(format!("in {}", self.binary.display()), message));
        }
        Ok(r["result"]["value"].clone())
    }

    fn command(
        &mut self,
        session: &str,
        method: &str,
        params: serde_json::Value,
        deadline: Instant,
    ) -> Result<serde_json::Value> {
        let id = self
            .cdp
            .send(session, method, params)
            .map_err(|e| self.failure(format!("sending {method}: {e}")))?;
        loop {
            match self.cdp.receive(id, Duration::from_millis(200)) {
                Ok(Some(reply)) => {
                    if let Some(e) = reply.get("error") {
                        return Err(Error::runtime(
                            format!("{method} in {}", self.binary.display()),
                            e.to_string(),
                        ));
                    }
                    return Ok(reply["result"].clone());
                }
                Ok(None) => {}
                Err(e) => return Err(self.failure(format!("waiting for {method}: {e}"))),
            }
            self.check_alive(method)?;
            if Instant::now() > deadline {
                return Err(self.failure(format!("no answer to {method} in time: the browser hangs")));
            }
        }
    }

    /// Kills the browser process, as a crash would (for tests of what follows).
    pub fn kill_for_test(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The browser's process id (its processes' group).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The profile folder it was started with (removed with it).
    pub fn profile(&self) -> &Path {
        &self.profile
    }

    /// An error if the browser has exited.
    fn check_alive(&mut self, doing: &str) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(self.failure(format!("exited ({status}) while {doing}"))),
            _ => Ok(()),
        }
    }

    /// An error naming the binary, what went wrong and the end of its stderr.
    fn failure(&self, what: String) -> Error {
        let tail = self.stderr.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
        Error::Runtime {
            context: format!("the browser {}", self.binary.display()),
            message: if tail.is_empty() {
                what
            } else {
                format!("{what}; its last messages:\n{tail}")
            },
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        stop(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Browsers started and not yet stopped, by process group: the ones a process still holds when it
/// exits (a browser kept in a static is never dropped) are killed at exit.
static RUNNING: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());

/// Chromium starts zygote, GPU, network and renderer processes that outlive a killed parent: the
/// browser gets a process group of its own, so that one signal stops them all.
fn own_group(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
}

fn started(pid: u32, profile: &Path) {
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain function with no state of its own to run at exit.
    AT_EXIT.call_once(|| unsafe {
        libc::atexit(stop_all);
    });
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((pid, profile.to_path_buf()));
}

/// Kills a browser's process group.
fn stop(pid: u32) {
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(p, _)| *p != pid);
    // SAFETY: a signal to the group this crate made for the browser (`own_group`).
    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
}

extern "C" fn stop_all() {
    let running = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(|e| e.into_inner()));
    for (pid, profile) in running {
        // SAFETY: as in `stop`.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        let _ = std::fs::remove_dir_all(profile);
    }
}
