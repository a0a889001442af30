//! `--model org/name` as a new user meets it: against a Hub endpoint (a local one, started here),
//! then again offline from the cache, with the answer the same as from the fixture's folder.

#[path = "../../hwcov-hub/tests/support/hub_server.rs"]
mod hub_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hub_server::{HubServer, RepoFiles};

const COMMIT: &str = "9d1c6b0a2e4f5a7c8b9d0e1f2a3b4c5d6e7f8091";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name)
}

fn hwcov(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hwcov"));
    cmd.args(args);
    for var in [
        "HF_ENDPOINT",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
        "XDG_CACHE_HOME",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn run_by_hub_id_then_offline_from_the_cache() {
    let server = HubServer::start();
    server.add("tiny/qwen2", RepoFiles::from_folder(&fixture("qwen2"), COMMIT));
    let home = tempfile::tempdir().unwrap();
    let home_dir = home.path().to_str().unwrap();
    let args = [
        "run",
        "--model",
        "tiny/qwen2",
        "--text",
        "Hello",
        "--max-new-tokens",
        "4",
        "--json",
    ];

    let online = hwcov(&args, &[("HF_ENDPOINT", &server.endpoint), ("HF_HOME", home_dir)]);
    let (stdout, stderr) = text(&online);
    assert!(online.status.success(), "{stdout}\n{stderr}");
    let from_dir = hwcov(
        &[
            "run",
            "--model-dir",
            fixture("qwen2").to_str().unwrap(),
            "--text",
            "Hello",
            "--max-new-tokens",
            "4",
            "--json",
        ],
        &[],
    );
    assert!(from_dir.status.success(), "{}", text(&from_dir).1);
    assert_eq!(
        stdout,
        text(&from_dir).0,
        "the Hub id and the folder give the same answer"
    );
    // Without a terminal, each fetched file is a line of the log.
    assert!(stderr.contains("tiny/qwen2@main: model.safetensors"), "{stderr}");

    drop(server);
    let offline = hwcov(&args, &[("HF_HOME", home_dir), ("HF_HUB_OFFLINE", "1")]);
    let (offline_out, offline_err) = text(&offline);
    assert!(offline.status.success(), "{offline_err}");
    assert_eq!(offline_out, stdout);
    assert!(
        !offline_err.contains("model.safetensors"),
        "nothing fetched offline: {offline_err}"
    );

    // The cache serves only what was fetched: the graph platforms need the ONNX graph.
    let graph = hwcov(
        &[
            "run",
            "--model",
            "tiny/qwen2",
            "--text",
            "Hello",
            "--platform",
            "openvino",
        ],
        &[("HF_HOME", home_dir), ("HF_HUB_OFFLINE", "1")],
    );
    let (_, e) = text(&graph);
    assert_eq!(graph.status.code(), Some(2), "{e}");
    assert!(e.contains("HF_HUB_OFFLINE is set") && e.contains("graph"), "{e}");
}

#[test]
fn verify_by_hub_id() {
    let server = HubServer::start();
    server.add("tiny/bert", RepoFiles::from_folder(&fixture("bert"), COMMIT));
    let home = tempfile::tempdir().unwrap();
    let io = fixture("bert/io.safetensors");
    let out = hwcov(
        &["verify", "--model", "tiny/bert", "--io", io.to_str().unwrap()],
        &[
            ("HF_ENDPOINT", &server.endpoint),
            ("HF_HOME", home.path().to_str().unwrap()),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("VERIFIED"), "{stdout}");
}

/// fixtures/bert with its weights in two shards and their index, as save_pretrained writes a large
/// checkpoint.
fn sharded_bert() -> RepoFiles {
    let mut repo = RepoFiles::from_folder(&fixture("bert"), COMMIT);
    let bytes = repo.files.remove("model.safetensors").unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    let half = names.len() / 2;
    let mut map = serde_json::Map::new();
    for (i, part) in [&names[..half], &names[half..]].into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> =
            part.iter().map(|n| (n.to_string(), st.tensor(n).unwrap())).collect();
        repo.files
            .insert(file.clone(), safetensors::serialize(views, None).unwrap());
        for n in part {
            map.insert(n.to_string(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": bytes.len()}, "weight_map": map});
    repo.files
        .insert("model.safetensors.index.json".into(), index.to_string().into_bytes());
    repo
}

#[test]
fn sharded_checkpoints_verify_and_processes_share_the_cache() {
    let server = HubServer::start();
    server.add("tiny/bert-sharded", sharded_bert());
    let home = tempfile::tempdir().unwrap();
    let io = fixture("bert/io.safetensors");
    let home_dir = home.path().to_str().unwrap();
    // Three processes fetch the same repository at once.
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_hwcov"));
            cmd.args(["verify", "--model", "tiny/bert-sharded", "--io", io.to_str().unwrap()])
                .env("HF_ENDPOINT", &server.endpoint)
                .env("HF_HOME", home_dir)
                .env_remove("HF_HUB_CACHE")
                .env_remove("HF_HUB_OFFLINE");
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("VERIFIED"), "{stdout}");
    }
    let blobs = home.path().join("hub/models--tiny--bert-sharded/blobs");
    let left: Vec<String> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains('.'))
        .collect();
    assert!(left.is_empty(), "nothing half-made is left: {left:?}");
}

#[test]
fn model_and_model_dir_exclude_each_other_and_ids_are_checked() {
    let out = hwcov(&["run", "--text", "x"], &[]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("--model-dir"), "{}", text(&out).1);
    let both = hwcov(&["run", "--model", "a/b", "--model-dir", "x", "--text", "x"], &[]);
    assert!(text(&both).1.contains("cannot be used with"), "{}", text(&both).1);
    let bad = hwcov(&["run", "--model", "a/b/c", "--text", "x"], &[]);
    assert!(text(&bad).1.contains("at most one `/`"), "{}", text(&bad).1);
}
