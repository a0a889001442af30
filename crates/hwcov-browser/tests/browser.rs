//! The browser's failure modes end in errors that name the binary, within the limit, with the
//! process gone: a missing binary, one that exits at once, one that never answers. Where a
//! Chromium is installed (`cargo xtask setup --platform webnn`, or `HWCOV_CHROMIUM`), a real one
//! evaluates scripts, moves bytes both ways as binary, and fails cleanly when it hangs or dies.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hwcov_browser::{Browser, FLAGS};

fn script(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hwcov-browser-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn page() -> String {
    "<html><body>hwcov</body></html>".to_string()
}

#[test]
fn a_missing_browser_is_named() {
    let e = Browser::launch(
        Path::new("/nonexistent/chromium"),
        FLAGS,
        page(),
        Duration::from_secs(5),
    )
    .err()
    .expect("no browser there")
    .to_string();
    assert!(e.contains("/nonexistent/chromium"), "{e}");
}

#[test]
fn a_browser_that_exits_at_once_is_an_error_naming_it() {
    let bin = script("exits", "echo 'cannot open display' >&2; exit 3");
    let e = Browser::launch(&bin, FLAGS, page(), Duration::from_secs(20))
        .err()
        .expect("it exited")
        .to_string();
    assert!(e.contains(&bin.display().to_string()) && e.contains("exited"), "{e}");
    assert!(e.contains("cannot open display"), "its stderr is shown: {e}");
}

#[test]
fn a_browser_that_never_answers_is_stopped_within_the_limit() {
    let pid_file = std::env::temp_dir().join(format!("hwcov-browser-hang-{}.pid", std::process::id()));
    let bin = script("hangs", &format!("echo $$ > {}; exec sleep 600", pid_file.display()));
    let t = Instant::now();
    let e = Browser::launch(&bin, FLAGS, page(), Duration::from_secs(2))
        .err()
        .expect("it never answered")
        .to_string();
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    assert!(e.contains(&bin.display().to_string()) && e.contains("DevTools"), "{e}");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let _ = std::fs::remove_file(&pid_file);
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .unwrap_or_default()
                .contains(" Z "),
        "the hung process {pid} is still running"
    );
}

/// The Chromium that `cargo xtask setup --platform webnn` installs, or `HWCOV_CHROMIUM`.
fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("HWCOV_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.hwcov/webnn/chromium/chromium");
    if local.is_file() {
        return Some(local);
    }
    let required = std::env::var("HWCOV_REQUIRE_PLATFORMS").unwrap_or_default();
    assert!(
        !required.split(',').any(|p| p == "webnn"),
        "no Chromium: run `cargo xtask setup --platform webnn`"
    );
    eprintln!("skipped: no Chromium installed");
    None
}

#[test]
fn a_real_browser_evaluates_and_moves_bytes_as_binary() {
    let Some(bin) = chromium() else { return };
    let mut b = Browser::launch(&bin, FLAGS, page(), Duration::from_secs(60)).expect("starts");
    assert!(b.version().unwrap().contains("Chrome"));
    assert_eq!(b.eval("1 + 2", Duration::from_secs(10)).unwrap(), serde_json::json!(3));
    let bytes: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    let (blob, back) = (b.server.blob(bytes.clone()), b.server.upload_id());
    let script = format!(
        "(async () => {{ const r = await fetch('/blob/{blob}'); const buf = await r.arrayBuffer(); \
         await fetch('/out/{back}', {{method: 'POST', body: buf}}); return buf.byteLength; }})()"
    );
    assert_eq!(
        b.eval(&script, Duration::from_secs(30)).unwrap(),
        serde_json::json!(1 << 20)
    );
    assert_eq!(b.server.take_upload(back).expect("posted back"), bytes);
    let e = b
        .eval("throw new Error('bad graph')", Duration::from_secs(10))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad graph"), "{e}");
}

#[test]
fn a_real_browser_that_hangs_or_dies_gives_an_error() {
    let Some(bin) = chromium() else { return };
    let mut b = Browser::launch(&bin, FLAGS, page(), Duration::from_secs(60)).expect("starts");
    let t = Instant::now();
    let e = b
        .eval("new Promise(() => {})", Duration::from_secs(2))
        .unwrap_err()
        .to_string();
    assert!(t.elapsed() < Duration::from_secs(10) && e.contains("hangs"), "{e}");
    b.kill_for_test();
    let e = b.eval("1", Duration::from_secs(10)).unwrap_err().to_string();
    assert!(e.contains(&bin.display().to_string()), "{e}");
}

/// The processes of a process group (a browser's, with its zygote, GPU and renderer processes).
fn group_members(pgid: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command's closing parenthesis: state, ppid, pgrp.
        let rest: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if rest.first() != Some(&"Z") && rest.get(2) == Some(&pgid.to_string().as_str()) {
            members.push(pid);
        }
    }
    members
}

#[test]
fn a_dropped_browser_leaves_no_process() {
    let Some(bin) = chromium() else { return };
    let b = Browser::launch(&bin, FLAGS, page(), Duration::from_secs(60)).expect("starts");
    let pid = b.pid();
    let profile = b.profile().to_path_buf();
    assert!(group_members(pid).len() > 1, "Chromium runs several processes");
    drop(b);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(group_members(pid), Vec::<u32>::new(), "processes left behind");
    assert!(!profile.exists(), "profile {} left behind", profile.display());
}

/// Not a test of its own: started by the next one as a process that keeps a browser in a static
/// (never dropped), writes its process id and exits.
#[test]
#[ignore]
fn keeps_a_browser_until_exit() {
    static KEPT: std::sync::Mutex<Option<Browser>> = std::sync::Mutex::new(None);
    let (Some(bin), Ok(out)) = (chromium(), std::env::var("HWCOV_BROWSER_PID_FILE")) else {
        return;
    };
    let b = Browser::launch(&bin, FLAGS, page(), Duration::from_secs(60)).expect("starts");
    std::fs::write(out, format!("{}\n{}", b.pid(), b.profile().display())).unwrap();
    *KEPT.lock().unwrap() = Some(b);
}

#[test]
fn a_browser_never_dropped_is_stopped_when_the_process_exits() {
    if chromium().is_none() {
        return;
    }
    let file = std::env::temp_dir().join(format!("hwcov-browser-kept-{}.pid", std::process::id()));
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "keeps_a_browser_until_exit", "--ignored", "--quiet"])
        .env("HWCOV_BROWSER_PID_FILE", &file)
        .status()
        .unwrap();
    assert!(status.success());
    let written = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let (pid, profile) = written.split_once('\n').unwrap();
    let pid: u32 = pid.parse().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(group_members(pid), Vec::<u32>::new(), "processes left behind");
    assert!(!Path::new(profile).exists(), "profile {profile} left behind");
}
