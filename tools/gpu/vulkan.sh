# Sourced by the GPU scripts: makes NVIDIA's Vulkan driver reachable. The GPU hosts ship the driver's
# ICD but may lack the Vulkan loader; the caller unpacks Debian's loader packages first (carried in
# .gl/, see docs/platforms/webgpu.md). If the loader finds no driver, point it at NVIDIA's ICD file.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] \
   && ! ls /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json >/dev/null 2>&1; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
