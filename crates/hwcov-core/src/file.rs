//! Writing output files so that no reader ever sees half of one: the bytes go to a temporary file
//! beside the target, then a rename puts it in place. A run killed mid-way leaves the old file (and
//! at worst a stray temporary), never a truncated one; two runs writing the same file at once each
//! leave a whole file, the later rename winning.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_beside(path)?;
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        // On disk before the rename, so a crash cannot leave the new name on missing data.
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// A name beside `path` no other writer (thread or process) uses at the same time.
fn temporary_beside(path: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        )
    })?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.{n}.tmp", std::process::id()));
    Ok(path.with_file_name(tmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hwcov-core-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = scratch("atomic-replace");
        let path = dir.join("run.json");
        std::fs::write(&path, "old").unwrap();
        write_atomic(&path, b"new contents").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("run.json")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_names_the_file_and_keeps_the_old_one() {
        let dir = scratch("atomic-fail");
        let path = dir.join("missing-folder").join("run.json");
        let err = write_atomic(&path, b"x").unwrap_err().to_string();
        assert!(err.contains("run.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writers on several threads and a reader at once: every read is one writer's whole file.
    #[test]
    fn concurrent_writers_never_leave_a_partial_file() {
        let dir = scratch("atomic-race");
        let path = dir.join("coverage.json");
        let contents: Vec<Vec<u8>> = (0..4u8).map(|k| vec![b'a' + k; 256 * 1024]).collect();
        write_atomic(&path, &contents[0]).unwrap();
        std::thread::scope(|s| {
            for c in &contents {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(path, c).unwrap();
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..200 {
                    let read = std::fs::read(&path).unwrap();
                    assert!(contents.contains(&read), "a partial file of {} bytes", read.len());
                }
            });
        });
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "temporaries left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
