//! A Hugging Face Hub on 127.0.0.1 for tests, speaking the HTTP API as huggingface_hub and hwcov
//! use it: the model-info listing (`/api/models/{repo}/revision/{rev}?blobs=true`), `resolve` with
//! its ETag / X-Repo-Commit / X-Linked-Etag / X-Linked-Size headers (LFS files redirect to a storage
//! path that honours Range requests), the Hub's X-Error-Code on refusals, and faults a test asks
//! for: a gated repository, a connection dropped mid-file, wrong bytes.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sha1::Digest;

/// What a repository's file does when fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The first GET of the file sends half of it, then closes the connection.
    DropOnce,
    /// Every GET sends half of it, then closes.
    DropAlways,
    /// Its bytes are served with one flipped (the headers name the right hash).
    WrongBytes,
}

#[derive(Clone)]
pub struct RepoFiles {
    pub commit: String,
    pub files: BTreeMap<String, Vec<u8>>,
    /// The token a request must carry (a gated repository), if any.
    pub token: Option<String>,
    pub faults: BTreeMap<String, Fault>,
}

impl RepoFiles {
    /// The files of a local folder (recursively), as a repository at `commit`.
    pub fn from_folder(dir: &std::path::Path, commit: &str) -> Self {
        let mut files = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let name = p.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
                    files.insert(name, std::fs::read(&p).unwrap());
                }
            }
        }
        RepoFiles {
            commit: commit.to_string(),
            files,
            token: None,
            faults: BTreeMap::new(),
        }
    }
}

/// LFS files are the large ones, as `.gitattributes` of a Hub repository makes them.
fn is_lfs(name: &str) -> bool {
    [".safetensors", ".onnx", ".onnx_data", ".onnx.data", ".bin"]
        .iter()
        .any(|e| name.ends_with(e))
}

pub fn sha256(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

pub fn git_sha1(bytes: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, RepoFiles>,
    /// Requests seen, as "METHOD path".
    log: Vec<String>,
    dropped: BTreeMap<String, usize>,
}

pub struct HubServer {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    /// The Hub's address and the storage's: another host, as the Hub's storage is, so that
    /// clients treat a redirect to it as leaving the Hub (no token, the metadata from the Hub's answer).
    addrs: [std::net::SocketAddr; 2],
}

impl HubServer {
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        // Linux routes all of 127.0.0.0/8 to the loopback device.
        let listeners = [
            TcpListener::bind("127.0.0.1:0").unwrap(),
            TcpListener::bind("127.0.0.2:0").unwrap(),
        ];
        let addrs = [listeners[0].local_addr().unwrap(), listeners[1].local_addr().unwrap()];
        let storage = addrs[1].to_string();
        for listener in listeners {
            let (s, st, storage) = (state.clone(), stop.clone(), storage.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if st.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (s, storage) = (s.clone(), storage.clone());
                    std::thread::spawn(move || {
                        let _ = serve(stream, &s, &storage);
                    });
                }
            });
        }
        HubServer {
            endpoint: format!("http://{}", addrs[0]),
            state,
            stop,
            addrs,
        }
    }

    pub fn add(&self, repo: &str, files: RepoFiles) {
        self.state.lock().unwrap().repos.insert(repo.to_string(), files);
    }

    /// The requests seen so far, as "METHOD path".
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for addr in self.addrs {
            let _ = TcpStream::connect(addr);
        }
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many bytes of the body, then close (a dropped connection).
    cut: Option<usize>,
}

fn answer(status: u16, body: &str) -> Answer {
    Answer {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
        cut: None,
    }
}

fn refuse(status: u16, code: &str) -> Answer {
    let mut a = answer(status, &format!("{{\"error\": \"{code}\"}}"));
    a.headers.push(("X-Error-Code".into(), code.into()));
    a
}

fn serve(stream: TcpStream, state: &Mutex<State>, storage: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let a = route(&method, &target, &headers, state, storage);
    let mut out = stream;
    let reason = match a.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\nConnection: close\r\n", a.status);
    if !a.headers.iter().any(|(k, _)| k == "Content-Length") {
        head.push_str(&format!("Content-Length: {}\r\n", a.body.len()));
    }
    for (k, v) in &a.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if method != "HEAD" {
        let n = a.cut.unwrap_or(a.body.len()).min(a.body.len());
        out.write_all(&a.body[..n])?;
    }
    out.flush()?;
    let _ = out.shutdown(std::net::Shutdown::Both);
    let _ = reader.read(&mut [0u8; 1]);
    Ok(())
}

fn route(
    method: &str,
    target: &str,
    headers: &BTreeMap<String, String>,
    state: &Mutex<State>,
    storage: &str,
) -> Answer {
    let mut st = state.lock().unwrap();
    st.log.push(format!("{method} {target}"));
    let path = target.split('?').next().unwrap_or("");
    // Storage: /cdn/<repo>/<sha256>/<name>, with Range.
    if let Some(rest) = path.strip_prefix("/cdn/") {
        let mut it = rest.splitn(4, '/');
        let (org, name, _sha, file) = (it.next(), it.next(), it.next(), it.next());
        let (Some(org), Some(name), Some(file)) = (org, name, file) else {
            return refuse(404, "EntryNotFound");
        };
        let repo_id = format!("{org}/{name}");
        let Some(repo) = st.repos.get(&repo_id).cloned() else {
            return refuse(404, "RepoNotFound");
        };
        let Some(bytes) = repo.files.get(file).cloned() else {
            return refuse(404, "EntryNotFound");
        };
        return file_body(&mut st, &repo, file, bytes, headers, method);
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((repo_id, rev)) = rest.split_once("/revision/") else {
            return refuse(404, "RepoNotFound");
        };
        let Some(repo) = st.repos.get(repo_id) else {
            return refuse(404, "RepoNotFound");
        };
        if rev != "main" && rev != repo.commit {
            return refuse(404, "RevisionNotFound");
        }
        let siblings: Vec<serde_json::Value> = repo
            .files
            .iter()
            .map(|(name, bytes)| {
                let mut s = serde_json::json!({"rfilename": name, "blobId": git_sha1(bytes), "size": bytes.len()});
                if is_lfs(name) {
                    s["lfs"] = serde_json::json!({"sha256": sha256(bytes), "size": bytes.len(), "pointerSize": 134});
                }
                s
            })
            .collect();
        let body = serde_json::json!({"id": repo_id, "sha": repo.commit, "siblings": siblings});
        return answer(200, &body.to_string());
    }
    // /{org}/{name}/resolve/{rev}/{file}
    let segs: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if segs.len() != 5 || segs[2] != "resolve" {
        return refuse(404, "EntryNotFound");
    }
    let repo_id = format!("{}/{}", segs[0], segs[1]);
    let (rev, file) = (segs[3], segs[4]);
    let Some(repo) = st.repos.get(&repo_id).cloned() else {
        return refuse(401, "RepoNotFound");
    };
    if rev != "main" && rev != repo.commit {
        return refuse(404, "RevisionNotFound");
    }
    if let Some(token) = &repo.token
        && headers.get("authorization") != Some(&format!("Bearer {token}"))
    {
        return refuse(
            if headers.contains_key("authorization") {
                403
            } else {
                401
            },
            "GatedRepo",
        );
    }
    let Some(bytes) = repo.files.get(file).cloned() else {
        return refuse(404, "EntryNotFound");
    };
    let commit = ("X-Repo-Commit".to_string(), repo.commit.clone());
    if is_lfs(file) {
        let sha = sha256(&bytes);
        return Answer {
            status: 302,
            headers: vec![
                commit,
                ("ETag".into(), format!("\"{}\"", git_sha1(b"pointer"))),
                ("X-Linked-Etag".into(), format!("\"{sha}\"")),
                ("X-Linked-Size".into(), bytes.len().to_string()),
                (
                    "Location".into(),
                    format!("http://{storage}/cdn/{repo_id}/{sha}/{file}"),
                ),
            ],
            body: Vec::new(),
            cut: None,
        };
    }
    let mut a = file_body(&mut st, &repo, file, bytes.clone(), headers, method);
    a.headers.push(commit);
    a.headers.push(("ETag".into(), format!("\"{}\"", git_sha1(&bytes))));
    a
}

/// The bytes of a file (a Range of them where asked), with its faults.
fn file_body(
    st: &mut State,
    repo: &RepoFiles,
    file: &str,
    mut bytes: Vec<u8>,
    headers: &BTreeMap<String, String>,
    method: &str,
) -> Answer {
    let fault = repo.faults.get(file).copied();
    if fault == Some(Fault::WrongBytes)
        && let Some(b) = bytes.last_mut()
    {
        *b ^= 0xff;
    }
    let total = bytes.len();
    let start = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse::<usize>().ok());
    let mut a = match start {
        Some(s) if s >= total => Answer {
            status: 416,
            headers: vec![("Content-Range".into(), format!("bytes */{total}"))],
            body: Vec::new(),
            cut: None,
        },
        Some(s) => Answer {
            status: 206,
            headers: vec![("Content-Range".into(), format!("bytes {s}-{}/{total}", total - 1))],
            body: bytes[s..].to_vec(),
            cut: None,
        },
        None => Answer {
            status: 200,
            headers: Vec::new(),
            body: bytes,
            cut: None,
        },
    };
    if method == "GET" {
        let dropped = st.dropped.entry(file.to_string()).or_insert(0);
        let drop_now = match fault {
            Some(Fault::DropAlways) => true,
            Some(Fault::DropOnce) => *dropped == 0,
            _ => false,
        };
        if drop_now && a.body.len() > 1 {
            *dropped += 1;
            a.cut = Some(a.body.len() / 2);
        }
    }
    a
}
