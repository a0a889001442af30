//! The cache is shared with Python's huggingface_hub, both ways: what one fetched, the other reads
//! offline. Python's client runs against the same local Hub (tests/support/hub_server.rs), which
//! also checks that the server speaks the API as huggingface_hub uses it. huggingface_hub comes
//! from `.hwcov/python-hub` (`cargo xtask test` installs tools/hub/requirements.txt there); without
//! it the test says so and passes, unless HWCOV_REQUIRE_HUB_PEER=1.

mod support {
    pub mod hub_server;
}

use std::path::{Path, PathBuf};
use std::process::Command;

use hwcov_hub::{ModelId, Need, Settings, model_folder};
use support::hub_server::{HubServer, RepoFiles};

const COMMIT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";
const FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `python3` with huggingface_hub importable, or None (with the reason printed).
fn python() -> Option<Command> {
    let path = root().join(".hwcov/python-hub");
    let probe = Command::new("python3")
        .args(["-c", "import huggingface_hub; print(huggingface_hub.__version__)"])
        .env("PYTHONPATH", &path)
        .output();
    match probe {
        Ok(out) if out.status.success() => {
            let mut cmd = Command::new("python3");
            cmd.env("PYTHONPATH", &path);
            Some(cmd)
        }
        _ => {
            let required = std::env::var("HWCOV_REQUIRE_HUB_PEER").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "huggingface_hub is required here but not importable from {}",
                path.display()
            );
            eprintln!(
                "skipped: huggingface_hub is not installed in {} (cargo xtask test installs it)",
                path.display()
            );
            None
        }
    }
}

/// Python's `hf_hub_download` of each of FILES; prints the local paths.
fn python_download(server: &HubServer, home: &Path, offline: bool) -> Vec<PathBuf> {
    let script = format!(
        "from huggingface_hub import hf_hub_download\nfor f in {FILES:?}:\n    print(hf_hub_download('test/bert', f))\n"
    );
    let mut cmd = python().expect("checked by the caller");
    cmd.args(["-c", &script])
        .env("HF_ENDPOINT", &server.endpoint)
        .env("HF_HOME", home)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN");
    if offline {
        cmd.env("HF_HUB_OFFLINE", "1");
    } else {
        cmd.env_remove("HF_HUB_OFFLINE");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect()
}

#[test]
fn python_and_hwcov_reuse_each_others_downloads() {
    if python().is_none() {
        return;
    }
    let server = HubServer::start();
    server.add(
        "test/bert",
        RepoFiles::from_folder(&root().join("fixtures/bert"), COMMIT),
    );
    let id: ModelId = "test/bert".parse().unwrap();

    // Python fetches; hwcov reads Python's cache offline.
    let home = tempfile::tempdir().unwrap();
    let paths = python_download(&server, home.path(), false);
    let offline = Settings {
        endpoint: server.endpoint.clone(),
        cache: home.path().join("hub"),
        token: None,
        offline: true,
    };
    let folder = model_folder(&id, Need::Safetensors, &offline).unwrap();
    for (file, path) in FILES.iter().zip(&paths) {
        assert_eq!(&folder.join(file), path, "the same snapshot path as Python's");
        assert_eq!(
            std::fs::read(path).unwrap(),
            std::fs::read(root().join("fixtures/bert").join(file)).unwrap()
        );
    }

    // hwcov fetches; Python reads hwcov's cache offline.
    let home = tempfile::tempdir().unwrap();
    let online = Settings {
        offline: false,
        cache: home.path().join("hub"),
        ..offline
    };
    let folder = model_folder(&id, Need::Safetensors, &online).unwrap();
    let before = server.log().len();
    let paths = python_download(&server, home.path(), true);
    assert_eq!(server.log().len(), before, "Python made no request");
    for (file, path) in FILES.iter().zip(&paths) {
        assert_eq!(&folder.join(file), path);
    }
}
