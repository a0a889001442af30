//! What the fuzz targets share: a scratch folder per process, where each input is written as the
//! file a user would hand hwcov, so that every target enters at the public function that reads it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// This process's scratch folder (libFuzzer runs one input at a time in a process).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hwcov-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the scratch folder can be made");
        dir
    })
}

/// A fresh folder `name` in the scratch folder, emptied of the last input's files.
pub fn folder(name: &str) -> PathBuf {
    let dir = scratch().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the scratch folder can be made");
    dir
}

/// Writes `bytes` as `dir/name` and returns its path.
pub fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("the scratch file can be written");
    path
}

/// A fixture file, read once (the fixed files beside the fuzzed one).
pub fn fixture(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
