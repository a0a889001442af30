// Records the compute capability the kernels are built for, so that the platform can refuse a GPU
// they cannot run on with a clear message instead of a kernel launch failure.
fn main() {
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_default();
    println!("cargo:rustc-env=HWCOV_CUDA_COMPUTE_CAP={cap}");
}
