//! `cargo xtask setup --platform P` installs what a platform needs into the project-local `.hwcov/`,
//! and `cargo xtask build --platform P` builds the `hwcov` binary for it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The CUDA 13.0 toolchain as pip wheels (docs/platforms/cuda.md says why 13.0 and not newer).
const CUDA_WHEELS: [&str; 8] = [
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-cccl==13.0.85",
    "nvidia-cublas==13.1.0.3",
    "nvidia-curand==10.4.0.35",
    "nvidia-cuda-nvrtc==13.0.88",
];

/// The OpenVINO runtime as a pip wheel (no torch needed); its libraries land in openvino/libs.
const OPENVINO_WHEEL: &str = "openvino==2026.4.1";

/// A runtime's pip wheel installed with `--target` into `.hwcov/<install>`, unless the library
/// `<libs>/<prefix>*` is already there; returns the folder of the library.
fn pip_runtime(root: &Path, install: &str, libs: &str, prefix: &str, wheel: &str, what: &str) -> Result<PathBuf> {
    let target = root.join(".hwcov").join(install);
    let dir = target.join(libs);
    let installed = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
        })
        .unwrap_or(false);
    if !installed {
        println!("installing {what} ({wheel}) into .hwcov/{install}");
        run(Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
            .arg(&target)
            .arg(wheel))?;
    }
    Ok(dir)
}

/// Installs the OpenVINO runtime (about 60 MB) into .hwcov/openvino, where hwcov-openvino finds it.
pub fn setup_openvino(root: &Path) -> Result<()> {
    let dir = pip_runtime(
        root,
        "openvino",
        "openvino/libs",
        "libopenvino_c.so",
        OPENVINO_WHEEL,
        "the OpenVINO runtime",
    )?;
    println!("OpenVINO runtime ready in {}", dir.display());
    Ok(())
}

/// ONNX Runtime's CPU build as a pip wheel: the runtime the rocm platform's session code is tested on
/// here (an AMD host uses AMD's onnxruntime-migraphx build instead: docs/platforms/rocm.md).
const ONNXRUNTIME_WHEEL: &str = "onnxruntime==1.31.1";

/// Installs ONNX Runtime's CPU build (about 20 MB) into .hwcov/onnxruntime, where hwcov-rocm finds it.
pub fn setup_rocm(root: &Path) -> Result<()> {
    let what = "ONNX Runtime's CPU build";
    let dir = pip_runtime(
        root,
        "onnxruntime",
        "onnxruntime/capi",
        "libonnxruntime.so",
        ONNXRUNTIME_WHEEL,
        what,
    )?;
    println!("ONNX Runtime (CPU build) ready in {}", dir.display());
    println!("the rocm platform itself needs an AMD GPU and AMD's onnxruntime-migraphx build (docs/platforms/rocm.md)");
    Ok(())
}

/// The unversioned names the linker looks for, and the versioned files the wheels ship.
const CUDA_LINKS: [(&str, &str); 5] = [
    ("libcudart.so", "libcudart.so.13"),
    ("libcublas.so", "libcublas.so.13"),
    ("libcublasLt.so", "libcublasLt.so.13"),
    ("libcurand.so", "libcurand.so.10"),
    ("libnvrtc.so", "libnvrtc.so.13"),
];

pub fn cuda_root(root: &Path) -> PathBuf {
    root.join(".hwcov/cuda/nvidia/cu13")
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn symlink(target: &str, link: &Path) -> Result<()> {
    if link.symlink_metadata().is_ok() {
        return Ok(());
    }
    std::os::unix::fs::symlink(target, link).with_context(|| format!("symlink {}", link.display()))
}

/// Installs the pinned CUDA 13.0 wheels into .hwcov/cuda and arranges them as a toolkit tree.
pub fn setup_cuda(root: &Path) -> Result<PathBuf> {
    let cuda = cuda_root(root);
    if !cuda.join("bin/nvcc").is_file() {
        println!("installing the CUDA 13.0 toolchain wheels into .hwcov/cuda (about 1.2 GB)");
        run(Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
            .arg(root.join(".hwcov/cuda"))
            .args(CUDA_WHEELS))?;
    }
    // nvcc looks for its headers under targets/<arch>/include.
    let targets = cuda.join("targets/x86_64-linux");
    std::fs::create_dir_all(&targets)?;
    symlink("../../include", &targets.join("include"))?;
    for (link, file) in CUDA_LINKS {
        symlink(file, &cuda.join("lib").join(link))?;
    }
    // No wheel ships the driver library, and candle links it: the linker gets a stand-in with one
    // empty function per driver symbol that cudarc declares, named libcuda.so.1 like the real one,
    // which the target machine's driver provides at run time.
    let stubs = cuda.join("lib/stubs");
    std::fs::create_dir_all(&stubs)?;
    let stub = stubs.join("libcuda.so");
    if !stub.is_file() {
        let src = stubs.join("libcuda_stub.c");
        let mut c = String::from(
            "/* Generated by `cargo xtask setup --platform cuda`: link-time stand-in for libcuda.so.1. */\n",
        );
        for name in driver_symbols(root)? {
            c.push_str(&format!("void {name}(void) {{}}\n"));
        }
        std::fs::write(&src, c)?;
        run(Command::new("gcc")
            .args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
            .arg(&stub)
            .arg(&src))?;
    }
    println!("CUDA toolchain ready in {}", cuda.display());
    Ok(cuda)
}

/// The driver functions cudarc declares (`fn cu...(` in its driver bindings), found through cargo's
/// own view of the dependency graph.
fn driver_symbols(root: &Path) -> Result<Vec<String>> {
    let out = Command::new("cargo")
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--features", "hwcov/cuda"])
        .output()
        .context("cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let manifest = meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "cudarc"))
        .and_then(|p| p["manifest_path"].as_str())
        .context("cudarc is not in the dependency graph of hwcov/cuda")?;
    let bindings = Path::new(manifest).with_file_name("src/driver/sys/mod.rs");
    let text = std::fs::read_to_string(&bindings).with_context(|| bindings.display().to_string())?;
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("fn cu"))
        .filter_map(|rest| rest.split_once('(').map(|(name, _)| format!("cu{name}")))
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    names.sort();
    names.dedup();
    if names.len() < 100 {
        bail!("found only {} driver functions in {}", names.len(), bindings.display());
    }
    Ok(names)
}

/// The compute capability to build for: CUDA_COMPUTE_CAP, else the local GPU's.
fn compute_cap() -> Result<String> {
    if let Ok(cap) = std::env::var("CUDA_COMPUTE_CAP") {
        return Ok(cap);
    }
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let cap = String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .replace('.', "");
            if cap.is_empty() {
                bail!("nvidia-smi reported no GPU; set CUDA_COMPUTE_CAP (90 for H100/H200)");
            }
            Ok(cap)
        }
        _ => bail!(
            "no GPU here to read the compute capability from: set CUDA_COMPUTE_CAP (90 for H100/H200, 89 for L4/4090, 80 for A100)"
        ),
    }
}

/// Builds target/cuda/release/hwcov with candle's CUDA kernels for one compute capability.
pub fn build_cuda(root: &Path) -> Result<()> {
    let cuda = setup_cuda(root)?;
    let cap = compute_cap()?;
    let path = format!(
        "{}:{}",
        cuda.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let lib = format!("{}:{}", cuda.join("lib").display(), cuda.join("lib/stubs").display());
    println!("building hwcov with CUDA kernels for compute capability {cap} (a clean build takes 10-20 minutes)");
    run(Command::new("cargo")
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "hwcov",
            "--features",
            "cuda",
            "--target-dir",
            "target/cuda",
        ])
        .env("CUDA_HOME", &cuda)
        .env("CUDA_PATH", &cuda)
        .env("CUDA_ROOT", &cuda)
        .env("CUDA_COMPUTE_CAP", &cap)
        .env("PATH", path)
        .env("LIBRARY_PATH", lib)
        .env(
            "CUDAFORGE_THREADS",
            std::env::var("CUDAFORGE_THREADS").unwrap_or_else(|_| "2".to_string()),
        ))?;
    let bin = root.join("target/cuda/release/hwcov");
    run(Command::new("strip").arg(&bin))?;
    println!(
        "built {} (sm_{cap}); docs/platforms/cuda.md says what the target machine needs",
        bin.display()
    );
    Ok(())
}

/// Whether this machine has a Vulkan loader and at least one driver for it.
fn vulkan_present() -> bool {
    let loader = Command::new("ldconfig")
        .arg("-p")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("libvulkan.so.1"))
        .unwrap_or(false);
    let driver = [
        "/usr/share/vulkan/icd.d",
        "/etc/vulkan/icd.d",
        "/usr/local/share/vulkan/icd.d",
    ]
    .iter()
    .any(|d| std::fs::read_dir(d).map(|mut e| e.next().is_some()).unwrap_or(false));
    loader && driver
}

/// Where wgpu's Vulkan loader may keep its runtime files when the session has no XDG_RUNTIME_DIR.
pub fn runtime_dir(root: &Path) -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        return Ok(PathBuf::from(d));
    }
    let d = root.join(".hwcov/run");
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Makes a Vulkan adapter available to the WebGPU platform: on Linux without one, Debian's
/// mesa-vulkan-drivers (lavapipe, a Vulkan driver on the CPU) and libvulkan1 (the loader).
pub fn setup_webgpu(root: &Path) -> Result<()> {
    if cfg!(target_os = "linux") && !vulkan_present() {
        println!("installing a Vulkan loader and driver (Debian: libvulkan1, mesa-vulkan-drivers)");
        let sudo: &[&str] = if Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false)
        {
            &[]
        } else {
            &["sudo"]
        };
        let apt = |args: &[&str]| {
            let mut all: Vec<&str> = sudo.to_vec();
            all.push("apt-get");
            all.extend_from_slice(args);
            run(Command::new(all[0])
                .args(&all[1..])
                .env("DEBIAN_FRONTEND", "noninteractive"))
        };
        apt(&["update", "-q"])?;
        apt(&[
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "libvulkan1",
            "mesa-vulkan-drivers",
        ])?;
    }
    // SAFETY: xtask is single-threaded here; the variable only silences the loader's warning.
    unsafe { std::env::set_var("XDG_RUNTIME_DIR", runtime_dir(root)?) };
    let platform = hwcov::platforms::get(hwcov::PlatformId::Webgpu)?;
    match platform.probe() {
        hwcov::Availability::Available { device } => {
            println!("WebGPU adapter ready: {device}");
            Ok(())
        }
        hwcov::Availability::Unavailable { reason } => bail!("no WebGPU adapter after setup: {reason}"),
    }
}

/// The Chromium with a WebNN backend (npm `@sparticuz/chromium`, pinned in tools/webnn/package.json;
/// Debian's chromium has none) unpacked into .hwcov/webnn/chromium, where hwcov-webnn looks for it.
pub fn setup_webnn(root: &Path) -> Result<PathBuf> {
    let dir = root.join(".hwcov/webnn");
    let binary = dir.join("chromium/chromium");
    let pin = std::fs::read_to_string(root.join("tools/webnn/package.json"))?;
    let stamp = dir.join("installed-package.json");
    if !binary.is_file() || std::fs::read_to_string(&stamp).unwrap_or_default() != pin {
        install_webnn_browser(&dir, &binary)?;
        std::fs::write(&stamp, pin)?;
    }
    let platform = hwcov::platforms::get(hwcov::PlatformId::Webnn)?;
    match platform.probe() {
        hwcov::Availability::Available { device } => println!("WebNN ready: {device}"),
        hwcov::Availability::Unavailable { reason } => bail!("no WebNN after setup: {reason}"),
    }
    Ok(binary)
}

fn install_webnn_browser(dir: &Path, binary: &Path) -> Result<()> {
    let root = dir
        .ancestors()
        .nth(2)
        .context("the .hwcov/webnn folder has no project root")?;
    println!("installing Chromium with WebNN (npm @sparticuz/chromium) into .hwcov/webnn");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("chromium"))?;
    std::fs::copy(root.join("tools/webnn/package.json"), dir.join("package.json"))?;
    run(Command::new("npm")
        .current_dir(dir)
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"]))?;
    // executablePath() unpacks the binary and its SwiftShader libraries into os.tmpdir().
    run(Command::new("node")
        .current_dir(dir)
        .args([
            "-e",
            "require('@sparticuz/chromium').default.executablePath().then(p => console.log('unpacked', p))",
        ])
        .env("TMPDIR", dir.join("chromium")))?;
    if !binary.is_file() {
        bail!("npm's @sparticuz/chromium did not unpack {}", binary.display());
    }
    Ok(())
}

/// The ONNX backend node tests of the pinned onnx package, written to .hwcov/onnx-node-tests
/// (tools/conformance/onnx_node_tests.py, with onnx installed into .hwcov/python).
pub fn setup_node_tests(root: &Path) -> Result<PathBuf> {
    let out = root.join(".hwcov/onnx-node-tests");
    let requirements = root.join("tools/conformance/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)?;
    let onnx_pin = wanted
        .lines()
        .find_map(|l| l.trim().strip_prefix("onnx=="))
        .context("tools/conformance/requirements.txt pins no onnx version")?
        .to_string();
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap_or_default();
    if manifest.contains(&format!("\"onnx\": \"{onnx_pin}\"")) {
        return Ok(out);
    }
    let py = root.join(".hwcov/python");
    println!("writing the ONNX backend node tests of onnx {onnx_pin} to .hwcov/onnx-node-tests");
    run(Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--upgrade", "--target"])
        .arg(&py)
        .arg("-r")
        .arg(&requirements))?;
    let _ = std::fs::remove_dir_all(&out);
    run(Command::new("python3")
        .arg(root.join("tools/conformance/onnx_node_tests.py"))
        .arg(&out)
        .env("PYTHONPATH", &py))?;
    Ok(out)
}

/// Python's huggingface_hub (tools/hub/requirements.txt) in .hwcov/python-hub: the peer whose cache
/// hwcov-hub shares, run by its tests against their local Hub.
pub fn setup_hub_peer(root: &Path) -> Result<()> {
    let py = root.join(".hwcov/python-hub");
    let requirements = root.join("tools/hub/requirements.txt");
    let pin = std::fs::read_to_string(&requirements)?
        .lines()
        .find_map(|l| l.trim().strip_prefix("huggingface_hub==").map(str::to_string))
        .context("tools/hub/requirements.txt pins no huggingface_hub version")?;
    if py.join(format!("huggingface_hub-{pin}.dist-info")).is_dir() {
        return Ok(());
    }
    println!("installing huggingface_hub {pin} into .hwcov/python-hub");
    run(Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--upgrade", "--target"])
        .arg(&py)
        .arg("-r")
        .arg(&requirements))
}

fn platform_arg(args: &[String]) -> Result<&str> {
    match args {
        [flag, p] if flag == "--platform" => Ok(p.as_str()),
        _ => bail!("usage: cargo xtask setup|build --platform <cpu|cuda|openvino|rocm|webgpu|webnn>"),
    }
}

pub fn setup(root: &Path, args: &[String]) -> Result<()> {
    match platform_arg(args)? {
        "cuda" => setup_cuda(root).map(|_| ()),
        "openvino" => setup_openvino(root),
        "rocm" => setup_rocm(root),
        "webgpu" => setup_webgpu(root),
        "webnn" => setup_webnn(root).map(|_| ()),
        "cpu" => {
            println!("the CPU platform needs nothing beyond the Rust toolchain");
            Ok(())
        }
        other => bail!("no setup for platform `{other}` (cpu, cuda, openvino, rocm, webgpu, webnn)"),
    }
}

pub fn build(root: &Path, args: &[String]) -> Result<()> {
    match platform_arg(args)? {
        "cuda" => build_cuda(root),
        other => bail!("no special build for platform `{other}`: `cargo build --release -p hwcov` builds cpu"),
    }
}

/// The platforms `cargo xtask test` and `coverage` set up and require on this machine: the CPU,
/// OpenVINO (a pip wheel), WebGPU (a Vulkan driver; lavapipe where there is no GPU) and WebNN (a
/// Chromium with WebNN, from npm).
pub const LOCAL_PLATFORMS: &str = "cpu,openvino,webgpu,webnn";

/// `cargo xtask test`: installs the runtimes of the local platforms, the ONNX node tests and Python's
/// huggingface_hub (the Hub cache's other user), then
/// runs the whole test suite with those platforms required, so that a missing runtime fails
/// instead of skipping.
pub fn test(root: &Path, args: &[String]) -> Result<()> {
    setup_openvino(root)?;
    setup_rocm(root)?;
    setup_webgpu(root)?;
    setup_webnn(root)?;
    setup_node_tests(root)?;
    setup_hub_peer(root)?;
    run(Command::new("cargo")
        .current_dir(root)
        .args(["test", "--workspace"])
        .args(args)
        .env("HWCOV_REQUIRE_PLATFORMS", LOCAL_PLATFORMS)
        .env("HWCOV_REQUIRE_HUB_PEER", "1"))
}
