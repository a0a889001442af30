//! One file of a repository into the cache.
//!
//! The file is fetched into `blobs/<etag>.incomplete` (resumed with a Range request after an
//! interruption, from what an earlier run left, as huggingface_hub resumes its own), checked against
//! the hash the Hub names it by (its etag: the sha256 of an LFS file, the git blob sha1 of any other),
//! and only then renamed to `blobs/<etag>` and linked from `snapshots/<commit>/<path>`. hf-hub's own
//! download renames the blob into place before any check, which is why this step is ours. A lock
//! per blob (`.locks/models--org--name/<etag>.lock`, huggingface_hub's lock file) lets several
//! processes fetch one repository at once: the second waits, then finds the blob there.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hwcov_core::{Error, Result};
use sha1::Digest;

use crate::progress::SetProgress;
use crate::{ModelId, Settings, http, hub_error, select};

/// Tries of one file before giving up (each resumes where the last stopped).
const ATTEMPTS: u32 = 4;

/// How the Hub's etag of a file is computed, and so how the file is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// An LFS file: the sha256 of its bytes.
    Sha256,
    /// A file kept in git: the git blob sha1 (of `blob <size>\0` and the bytes).
    GitSha1,
}

impl Check {
    fn of(etag: &str) -> Option<Check> {
        let hex = etag.bytes().all(|b| b.is_ascii_hexdigit());
        match etag.len() {
            64 if hex => Some(Check::Sha256),
            40 if hex => Some(Check::GitSha1),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Check::Sha256 => "sha256",
            Check::GitSha1 => "git blob sha1",
        }
    }

    /// The hash of the file at `path`, of `size` bytes, as the Hub computes it.
    fn hash(self, path: &Path, size: u64) -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut feed = |update: &mut dyn FnMut(&[u8])| -> std::io::Result<()> {
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                update(&buf[..n]);
            }
        };
        Ok(match self {
            Check::Sha256 => {
                let mut h = sha2::Sha256::new();
                feed(&mut |b| h.update(b))?;
                hex(&h.finalize())
            }
            Check::GitSha1 => {
                let mut h = sha1::Sha1::new();
                h.update(format!("blob {size}\0").as_bytes());
                feed(&mut |b| h.update(b))?;
                hex(&h.finalize())
            }
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A commit hash: 40 lowercase hex digits.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What the Hub says of one file.
struct Remote {
    etag: String,
    size: u64,
    check: Check,
    /// Where the bytes are: the storage an LFS file redirects to, else the `resolve` address.
    url: String,
}

/// Why one try of a transfer ended early.
enum Stop {
    /// The connection broke: the next try resumes.
    Broken(String),
    /// Nothing to retry.
    Fatal(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Fatal(e)
    }
}

/// Fetches the files of one repository's snapshot.
pub struct Transfer<'a> {
    id: &'a ModelId,
    settings: &'a Settings,
    blobs: PathBuf,
    locks: PathBuf,
    snapshot: &'a Path,
    agent: ureq::Agent,
    head_agent: ureq::Agent,
}

impl<'a> Transfer<'a> {
    pub fn new(id: &'a ModelId, settings: &'a Settings, repo_dir: &Path, snapshot: &'a Path) -> Self {
        let folder = repo_dir.file_name().map(PathBuf::from).unwrap_or_default();
        Transfer {
            id,
            settings,
            blobs: repo_dir.join("blobs"),
            locks: settings.cache.join(".locks").join(folder),
            snapshot,
            agent: http::agent(),
            head_agent: http::head_agent(),
        }
    }

    /// Fetches the repository file `name` from `url` (its `resolve` address) into the blobs, checked,
    /// and links it into the snapshot.
    pub fn fetch(&self, url: &str, name: &str, progress: &SetProgress) -> Result<()> {
        let name = select::repo_path(Path::new(name)).ok_or_else(|| {
            hub_error(
                self.id,
                format!("the Hub lists a file `{name}` that leaves the repository"),
            )
        })?;
        let remote = self.head(url, &name)?;
        let blob = self.blobs.join(&remote.etag);
        if !blob.is_file() {
            self.download(&name, &remote, &blob, progress)?;
        } else {
            progress.add(remote.size);
        }
        link(self.snapshot, &name, &remote.etag)?;
        progress.file_done(&name, remote.size);
        Ok(())
    }

    fn authorized(&self, request: ureq::Request) -> ureq::Request {
        match &self.settings.token {
            Some(t) => request.set("Authorization", &format!("Bearer {t}")),
            None => request,
        }
    }

    /// The file's etag and size: the headers of the Hub's first answer to a HEAD of `url`
    /// (`X-Linked-Etag` / `X-Linked-Size` where it redirects an LFS file to its storage).
    fn head(&self, url: &str, name: &str) -> Result<Remote> {
        let mut url = url.to_string();
        for _ in 0..5 {
            let request = self.head_agent.head(&url).set("Accept-Encoding", "identity");
            let response = self
                .authorized(request)
                .call()
                .map_err(|e| http::refused(self.id, self.settings, name, e))?;
            let linked = response.header("X-Linked-Etag");
            // A redirect within the Hub (a renamed repository) is followed; one to the storage
            // carries the file's headers already.
            if (300..400).contains(&response.status())
                && linked.is_none()
                && let Some(location) = response.header("Location").filter(|l| l.starts_with('/'))
            {
                url = format!("{}{location}", self.settings.endpoint);
                continue;
            }
            let bad = |what: &str| hub_error(self.id, format!("{name}: the Hub's answer {what}"));
            let etag = linked
                .or_else(|| response.header("ETag"))
                .ok_or_else(|| bad("has no ETag"))?
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_string();
            let check = Check::of(&etag).ok_or_else(|| {
                bad(&format!(
                    "names it by `{etag}`, not a sha256 or git sha1: hwcov does not cache a file it cannot check"
                ))
            })?;
            let size = response
                .header("X-Linked-Size")
                .or_else(|| response.header("Content-Length"))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| bad("gives no size"))?;
            let location = match response.header("Location") {
                Some(l) if l.starts_with('/') => format!("{}{l}", self.settings.endpoint),
                Some(l) if (300..400).contains(&response.status()) => l.to_string(),
                _ => url.clone(),
            };
            return Ok(Remote {
                etag: etag.to_ascii_lowercase(),
                size,
                check,
                url: location,
            });
        }
        Err(hub_error(
            self.id,
            format!("{name}: more than 5 redirects within the Hub"),
        ))
    }

    /// Fetches the blob of `remote` under its lock, resuming what is there, and checks it.
    fn download(&self, name: &str, remote: &Remote, blob: &Path, progress: &SetProgress) -> Result<()> {
        for dir in [&self.blobs, &self.locks] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let lock_path = self.locks.join(format!("{}.lock", remote.etag));
        let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        // Waits while another process fetches the same blob.
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
        if blob.is_file() {
            progress.add(remote.size);
            return Ok(());
        }
        let part = PathBuf::from(format!("{}.incomplete", blob.display()));
        let mut tries = 0;
        loop {
            match self.resume(name, remote, &part, progress, tries == 0) {
                Ok(()) => break,
                Err(Stop::Fatal(e)) => return Err(e),
                Err(Stop::Broken(why)) => {
                    tries += 1;
                    if tries == ATTEMPTS {
                        return Err(hub_error(
                            self.id,
                            format!(
                                "{name}: the transfer broke off {ATTEMPTS} times (last: {why}); what arrived is kept in {} and the next run resumes from there",
                                part.display()
                            ),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(200 << tries));
                }
            }
        }
        let actual = remote.check.hash(&part, remote.size).map_err(|e| Error::io(&part, e))?;
        if actual != remote.etag {
            let _ = std::fs::remove_file(&part);
            return Err(hub_error(
                self.id,
                format!(
                    "{name}: the bytes received have {} {actual}, the Hub names the file {}; they were deleted and nothing entered the cache",
                    remote.check.name(),
                    remote.etag
                ),
            ));
        }
        std::fs::rename(&part, blob).map_err(|e| Error::io(blob, e))?;
        drop(lock);
        Ok(())
    }

    /// One try: appends to `part` from where it ends to the file's size.
    fn resume(
        &self,
        name: &str,
        remote: &Remote,
        part: &Path,
        progress: &SetProgress,
        first: bool,
    ) -> std::result::Result<(), Stop> {
        let io = |e: std::io::Error| Stop::Fatal(Error::io(part, e));
        let mut file = OpenOptions::new().create(true).append(true).open(part).map_err(io)?;
        let mut have = file.metadata().map_err(io)?.len();
        if have > remote.size {
            file.set_len(0).map_err(io)?;
            have = 0;
        }
        if first {
            progress.add(have);
        }
        if have == remote.size {
            return Ok(());
        }
        // The token goes to the Hub only, never to the storage it redirects to.
        let request = self.agent.get(&remote.url);
        let mut request = if remote.url.starts_with(&format!("{}/", self.settings.endpoint)) {
            self.authorized(request)
        } else {
            request
        };
        if have > 0 {
            request = request.set("Range", &format!("bytes={have}-"));
        }
        let response = match request.call() {
            Ok(r) => r,
            Err(ureq::Error::Transport(t)) => return Err(Stop::Broken(t.to_string())),
            Err(e) => return Err(Stop::Fatal(http::refused(self.id, self.settings, name, e))),
        };
        if have > 0 && response.status() != 206 {
            // The server sent the whole file: start over.
            file.set_len(0).map_err(io)?;
            progress.rewind(have);
            have = 0;
        }
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(Stop::Broken(e.to_string())),
            };
            if have + n as u64 > remote.size {
                drop(file);
                let _ = std::fs::remove_file(part);
                return Err(Stop::Fatal(hub_error(
                    self.id,
                    format!(
                        "{name}: the server sent more than the {} bytes the Hub gives as its size",
                        remote.size
                    ),
                )));
            }
            file.write_all(&buf[..n]).map_err(io)?;
            have += n as u64;
            progress.add(n as u64);
        }
        file.flush().map_err(io)?;
        if have < remote.size {
            return Err(Stop::Broken(format!(
                "the connection closed after {have} of {} bytes",
                remote.size
            )));
        }
        Ok(())
    }
}

/// Links `snapshot/name` to its blob, `blobs/<etag>`, by a relative link as huggingface_hub makes
/// them; the link is made beside and renamed into place, so that a reader never sees half of it.
fn link(snapshot: &Path, name: &str, etag: &str) -> Result<()> {
    let path = snapshot.join(name);
    let dir = path.parent().unwrap_or(snapshot);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let depth = name.split('/').count();
    let target = PathBuf::from("../".repeat(depth + 1)).join("blobs").join(etag);
    if std::fs::read_link(&path).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = beside(dir, &file_name);
    let _ = std::fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&target, &tmp).map_err(|e| Error::io(&tmp, e))?;
    #[cfg(not(unix))]
    std::fs::copy(dir.join(&target), &tmp).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}

/// A name in `dir` for a file being made, unique to this process and call (a hidden file, which
/// readers of the snapshot skip).
fn beside(dir: &Path, stem: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{stem}.{}.{n}.tmp", std::process::id()))
}

/// Records that `revision` names `commit` (`refs/<revision>`), written beside and renamed into place.
pub fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> Result<()> {
    if revision == commit {
        return Ok(());
    }
    let path = repo_dir.join("refs").join(revision);
    let dir = path.parent().unwrap_or(repo_dir);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = beside(dir, "ref");
    std::fs::write(&tmp, commit).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}

/// The files of a snapshot folder, as repository paths.
pub fn snapshot_files(snapshot: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut folders = vec![snapshot.to_path_buf()];
    while let Some(dir) = folders.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                folders.push(path);
            } else if let Some(name) = path.strip_prefix(snapshot).ok().and_then(select::repo_path) {
                out.push(name);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_as_the_hub_names_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello\n").unwrap();
        // `git hash-object` of the same bytes, and `sha256sum`.
        let sha1 = "ce013625030ba8dba906f756967f9e9ca394464a";
        let sha256 = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        assert_eq!(Check::of(sha1), Some(Check::GitSha1));
        assert_eq!(Check::of(sha256), Some(Check::Sha256));
        assert_eq!(Check::GitSha1.hash(&path, 6).unwrap(), sha1);
        assert_eq!(Check::Sha256.hash(&path, 6).unwrap(), sha256);
        assert_eq!(Check::of("not-a-hash"), None);
        assert!(is_commit(sha1) && !is_commit("main") && !is_commit(&sha1.to_uppercase()));
    }

    #[test]
    fn links_are_relative_into_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = dir.path().join("snapshots/abc");
        std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("blobs/e1"), b"x").unwrap();
        link(&snapshot, "onnx/model.onnx", "e1").unwrap();
        link(&snapshot, "onnx/model.onnx", "e1").unwrap();
        let path = snapshot.join("onnx/model.onnx");
        assert_eq!(std::fs::read_link(&path).unwrap(), PathBuf::from("../../../blobs/e1"));
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
        assert_eq!(snapshot_files(&snapshot).unwrap(), ["onnx/model.onnx"]);
    }
}
