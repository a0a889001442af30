//! The page's server on 127.0.0.1 (a secure context for WebNN and WebGPU): the page itself, blobs
//! the page fetches as binary (`GET /blob/<id>`), and bytes the page sends back
//! (`POST /out/<id>`). One request per connection; nothing else is served.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The largest body the page may send back (an output tensor).
const MAX_UPLOAD: usize = 4 << 30;

#[derive(Default)]
struct Store {
    page: String,
    blobs: HashMap<u64, Arc<Vec<u8>>>,
    uploads: HashMap<u64, Vec<u8>>,
}

/// A running server; stops when dropped.
pub struct Server {
    port: u16,
    store: Arc<Mutex<Store>>,
    next: AtomicU64,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn start(page: String) -> std::io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let store = Arc::new(Mutex::new(Store {
            page,
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, halt) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        let _ = serve(c, &s);
                    });
                }
            }
        });
        Ok(Server {
            port,
            store,
            next: AtomicU64::new(1),
            stop,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Serves `bytes` at `/blob/<id>` until `forget`.
    pub fn blob(&self, bytes: Vec<u8>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        lock(&self.store).blobs.insert(id, Arc::new(bytes));
        id
    }

    pub fn forget(&self, id: u64) {
        lock(&self.store).blobs.remove(&id);
    }

    /// A fresh id for the page to send bytes back to (`POST /out/<id>`).
    pub fn upload_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }

    /// The bytes the page sent to `/out/<id>`, once.
    pub fn take_upload(&self, id: u64) -> Option<Vec<u8>> {
        lock(&self.store).uploads.remove(&id)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

fn serve(conn: TcpStream, store: &Mutex<Store>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let id = |prefix: &str| path.strip_prefix(prefix).and_then(|s| s.parse::<u64>().ok());
    let mut out = conn;
    match method {
        "GET" if path == "/" => {
            let page = lock(store).page.clone();
            reply(&mut out, 200, "text/html; charset=utf-8", page.as_bytes())
        }
        "GET" => match id("/blob/").and_then(|i| lock(store).blobs.get(&i).cloned()) {
            Some(b) => reply(&mut out, 200, "application/octet-stream", &b),
            None => reply(&mut out, 404, "text/plain", b"no such blob"),
        },
        "POST" => match id("/out/") {
            Some(i) if length <= MAX_UPLOAD => {
                let mut body = vec![0u8; length];
                reader.read_exact(&mut body)?;
                lock(store).uploads.insert(i, body);
                reply(&mut out, 200, "text/plain", b"ok")
            }
            _ => reply(&mut out, 400, "text/plain", b"bad upload"),
        },
        _ => reply(&mut out, 404, "text/plain", b"not found"),
    }
}

fn reply(out: &mut TcpStream, status: u16, kind: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        if status == 200 { "OK" } else { "Error" },
        body.len()
    )?;
    out.write_all(body)?;
    out.flush()
}
