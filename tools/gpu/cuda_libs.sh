# Sourced by the GPU scripts: puts the CUDA 13 libraries of the host's PyTorch on LD_LIBRARY_PATH
# (site-packages/nvidia/cu13/lib: cudart, cuBLAS, cuBLASLt, cuRAND, NVRTC) and its cuDNN
# (site-packages/nvidia/cudnn/lib: libcudnn.so.9, which hwcov opens for convolutions), unless the
# caller set HWCOV_CUDA_LIBS.
if [ -z "${HWCOV_CUDA_LIBS:-}" ]; then
  HWCOV_CUDA_LIBS=$(python3 -c "import nvidia, os; d = os.path.dirname(nvidia.__path__[0]); print(os.path.join(d, 'nvidia', 'cu13', 'lib') + ':' + os.path.join(d, 'nvidia', 'cudnn', 'lib'))" 2>/dev/null)
fi
export LD_LIBRARY_PATH="${HWCOV_CUDA_LIBS}:${LD_LIBRARY_PATH:-}"
