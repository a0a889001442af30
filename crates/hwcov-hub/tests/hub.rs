//! Models by Hub id against a Hub on 127.0.0.1 (tests/support/hub_server.rs): what lands in the
//! cache and how, and each failure a user can meet.

mod support {
    pub mod hub_server;
}

use std::path::{Path, PathBuf};

use hwcov_hub::{ModelId, Need, Settings, model_folder};
use support::hub_server::{Fault, HubServer, RepoFiles, sha256};

const COMMIT: &str = "4f2a9c1e0b7d3a5968e1c2b4d6f8a0c1e3b5d7f9";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name)
}

fn settings(server: &HubServer, home: &Path) -> Settings {
    Settings {
        endpoint: server.endpoint.clone(),
        cache: home.join("hub"),
        token: None,
        offline: false,
    }
}

fn id(s: &str) -> ModelId {
    s.parse().unwrap()
}

fn repo_dir(home: &Path, folder: &str) -> PathBuf {
    home.join("hub").join(folder)
}

/// A Hub serving fixtures/bert as test/bert, an empty cache, and the settings that reach both.
fn bert_hub() -> (HubServer, tempfile::TempDir, Settings) {
    let server = HubServer::start();
    server.add("test/bert", RepoFiles::from_folder(&fixture("bert"), COMMIT));
    let home = tempfile::tempdir().unwrap();
    let s = settings(&server, home.path());
    (server, home, s)
}

/// The error `model_folder` ends in.
fn fails(model: &str, need: Need, s: &Settings) -> String {
    model_folder(&id(model), need, s).unwrap_err().to_string()
}

/// Files of the folder, as repository paths, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

#[test]
fn fetches_what_the_platform_reads_into_the_cache_layout_then_reuses_it() {
    let server = HubServer::start();
    let repo = RepoFiles::from_folder(&fixture("bert"), COMMIT);
    let weights = repo.files["model.safetensors"].clone();
    server.add("test/bert", repo);
    let home = tempfile::tempdir().unwrap();
    let s = settings(&server, home.path());

    let folder = model_folder(&id("test/bert"), Need::Safetensors, &s).unwrap();
    let repo = repo_dir(home.path(), "models--test--bert");
    assert_eq!(folder, repo.join("snapshots").join(COMMIT));
    // The configs, tokenizer and safetensors; not the ONNX graph, not the io files.
    assert_eq!(
        names(&folder),
        [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    // huggingface_hub's layout: relative links into blobs named by the etag, refs/main.
    let blob = format!("../../blobs/{}", sha256(&weights));
    assert_eq!(
        std::fs::read_link(folder.join("model.safetensors")).unwrap(),
        PathBuf::from(blob)
    );
    assert_eq!(std::fs::read(folder.join("model.safetensors")).unwrap(), weights);
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap(), COMMIT);
    assert!(names(&repo.join("blobs")).iter().all(|n| !n.ends_with(".incomplete")));

    // Again: one listing request, nothing fetched.
    let before = server.log().len();
    assert_eq!(model_folder(&id("test/bert"), Need::Safetensors, &s).unwrap(), folder);
    let again: Vec<String> = server.log()[before..].to_vec();
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(
        again[0].starts_with("GET /api/models/test/bert/revision/main"),
        "{again:?}"
    );

    // Offline: the cache alone, with the server gone.
    drop(server);
    let offline = Settings {
        offline: true,
        ..s.clone()
    };
    assert_eq!(
        model_folder(&id("test/bert"), Need::Safetensors, &offline).unwrap(),
        folder
    );
    assert_eq!(
        model_folder(&id(&format!("test/bert@{COMMIT}")), Need::Safetensors, &offline).unwrap(),
        folder
    );
    // The graph was never fetched: offline says which file is missing.
    let e = fails("test/bert", Need::Graph, &offline);
    assert!(e.contains("HF_HUB_OFFLINE") && e.contains("no graph"), "{e}");
}

#[test]
fn graph_platforms_get_the_graph_and_its_external_data() {
    let server = HubServer::start();
    server.add(
        "test/bert-export",
        RepoFiles::from_folder(&fixture("user-exports/bert"), COMMIT),
    );
    let home = tempfile::tempdir().unwrap();
    let folder = model_folder(&id("test/bert-export"), Need::Graph, &settings(&server, home.path())).unwrap();
    assert_eq!(names(&folder), ["config.json", "model.onnx", "model.onnx.data"]);
    // The graph's external data resolves through the cache's links into blobs/.
    let model = hwcov_onnx::Model::load(&folder.join("model.onnx")).unwrap();
    assert_eq!(model.external_files(), [folder.join("model.onnx.data")]);
}

#[test]
fn sharded_checkpoints_fetch_the_shards_their_index_names() {
    let server = HubServer::start();
    let mut repo = RepoFiles::from_folder(&fixture("bert"), COMMIT);
    repo.files.remove("model.safetensors");
    let index = r#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#;
    repo.files
        .insert("model.safetensors.index.json".into(), index.as_bytes().to_vec());
    repo.files
        .insert("model-00001-of-00002.safetensors".into(), b"shard one".to_vec());
    repo.files
        .insert("model-00002-of-00002.safetensors".into(), b"shard two".to_vec());
    repo.files
        .insert("model-00003-of-00002.safetensors".into(), b"not in the index".to_vec());
    server.add("test/sharded", repo);
    let home = tempfile::tempdir().unwrap();
    let folder = model_folder(&id("test/sharded"), Need::Safetensors, &settings(&server, home.path())).unwrap();
    let got = names(&folder);
    assert!(got.contains(&"model-00001-of-00002.safetensors".to_string()), "{got:?}");
    assert!(got.contains(&"model-00002-of-00002.safetensors".to_string()), "{got:?}");
    assert!(
        !got.contains(&"model-00003-of-00002.safetensors".to_string()),
        "{got:?}"
    );
}

#[test]
fn unknown_repositories_and_revisions_are_named() {
    let (_server, _home, s) = bert_hub();
    let e = fails("test/nothing", Need::Safetensors, &s);
    assert!(
        e.contains("no repository test/nothing") && e.contains("HF_TOKEN"),
        "{e}"
    );
    let e = fails("test/bert@v9", Need::Safetensors, &s);
    assert!(e.contains("no revision v9"), "{e}");
    let unreachable = Settings {
        endpoint: "http://127.0.0.1:9".into(),
        ..s
    };
    let e = fails("test/bert", Need::Safetensors, &unreachable);
    assert!(
        e.contains("cannot reach http://127.0.0.1:9") && e.contains("HF_HUB_OFFLINE"),
        "{e}"
    );
}

#[test]
fn gated_repositories_need_a_token_with_access() {
    let server = HubServer::start();
    let mut repo = RepoFiles::from_folder(&fixture("bert"), COMMIT);
    repo.token = Some("hf_right".into());
    server.add("test/gated", repo);
    let home = tempfile::tempdir().unwrap();
    let s = settings(&server, home.path());
    let e = fails("test/gated", Need::Safetensors, &s);
    assert!(
        e.contains("gated") && e.contains("HTTP 401") && e.contains("set HF_TOKEN"),
        "{e}"
    );
    let wrong = Settings {
        token: Some("hf_wrong".into()),
        ..s.clone()
    };
    let e = fails("test/gated", Need::Safetensors, &wrong);
    assert!(e.contains("HTTP 403") && e.contains("has no access"), "{e}");
    let right = Settings {
        token: Some("hf_right".into()),
        ..s
    };
    model_folder(&id("test/gated"), Need::Safetensors, &right).unwrap();
}

#[test]
fn a_dropped_connection_resumes_where_it_stopped() {
    let server = HubServer::start();
    let mut repo = RepoFiles::from_folder(&fixture("bert"), COMMIT);
    repo.faults.insert("model.safetensors".into(), Fault::DropOnce);
    server.add("test/flaky", repo);
    let home = tempfile::tempdir().unwrap();
    let folder = model_folder(&id("test/flaky"), Need::Safetensors, &settings(&server, home.path())).unwrap();
    assert_eq!(
        std::fs::read(folder.join("model.safetensors")).unwrap(),
        std::fs::read(fixture("bert/model.safetensors")).unwrap()
    );
    let gets: Vec<String> = server
        .log()
        .into_iter()
        .filter(|l| l.contains("/cdn/") && l.contains("model.safetensors"))
        .collect();
    assert_eq!(gets.len(), 2, "one dropped, one resumed: {gets:?}");
}

#[test]
fn a_connection_that_keeps_dropping_keeps_what_arrived_for_the_next_run() {
    let server = HubServer::start();
    let mut repo = RepoFiles::from_folder(&fixture("bert"), COMMIT);
    repo.faults.insert("model.safetensors".into(), Fault::DropAlways);
    server.add("test/flaky", repo.clone());
    let home = tempfile::tempdir().unwrap();
    let s = settings(&server, home.path());
    let e = fails("test/flaky", Need::Safetensors, &s);
    assert!(e.contains("broke off") && e.contains("resumes"), "{e}");
    let blobs = repo_dir(home.path(), "models--test--flaky").join("blobs");
    let kept = names(&blobs);
    assert!(kept.iter().any(|n| n.ends_with(".incomplete")), "{kept:?}");
    assert!(
        kept.iter().filter(|n| n.len() == 64).count() < 4,
        "the weights' blob must not be there: {kept:?}"
    );
    // The next run, with the connection healthy, resumes from the kept bytes.
    repo.faults.clear();
    server.add("test/flaky", repo);
    let folder = model_folder(&id("test/flaky"), Need::Safetensors, &s).unwrap();
    assert_eq!(
        std::fs::read(folder.join("model.safetensors")).unwrap(),
        std::fs::read(fixture("bert/model.safetensors")).unwrap()
    );
    let last = server.log().into_iter().rfind(|l| l.contains("/cdn/")).unwrap();
    assert!(last.starts_with("GET"), "{last}");
}

#[test]
fn wrong_bytes_never_enter_the_cache() {
    let server = HubServer::start();
    let mut repo = RepoFiles::from_folder(&fixture("bert"), COMMIT);
    repo.faults.insert("model.safetensors".into(), Fault::WrongBytes);
    let right = sha256(&repo.files["model.safetensors"]);
    server.add("test/corrupt", repo);
    let home = tempfile::tempdir().unwrap();
    let e = fails("test/corrupt", Need::Safetensors, &settings(&server, home.path()));
    assert!(
        e.contains("model.safetensors") && e.contains(&right) && e.contains("nothing entered the cache"),
        "{e}"
    );
    let repo = repo_dir(home.path(), "models--test--corrupt");
    assert!(!repo.join("blobs").join(&right).exists());
    assert!(!repo.join("blobs").join(format!("{right}.incomplete")).exists());
    assert!(!repo.join("snapshots").join(COMMIT).join("model.safetensors").exists());
}

#[test]
fn offline_with_a_cold_cache_says_so() {
    let home = tempfile::tempdir().unwrap();
    let s = Settings {
        endpoint: "http://127.0.0.1:9".into(),
        cache: home.path().join("hub"),
        token: None,
        offline: true,
    };
    let e = fails("test/bert", Need::Safetensors, &s);
    assert!(
        e.contains("HF_HUB_OFFLINE is set") && e.contains("run once with the network"),
        "{e}"
    );
}

#[test]
fn processes_fetching_one_repository_at_once_leave_a_sound_cache() {
    let (_server, home, s) = bert_hub();
    let folders: Vec<PathBuf> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| model_folder(&id("test/bert"), Need::Safetensors, &s).unwrap()))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert!(folders.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        std::fs::read(folders[0].join("model.safetensors")).unwrap(),
        std::fs::read(fixture("bert/model.safetensors")).unwrap()
    );
    let blobs = names(&repo_dir(home.path(), "models--test--bert").join("blobs"));
    assert!(blobs.iter().all(|n| !n.contains('.')), "{blobs:?}");
}
