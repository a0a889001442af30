#!/usr/bin/env python3
"""Which cuDNN convolution algorithm reproduces torch's convolution to the bit.

torch runs `F.conv1d` / `F.conv2d` on CUDA through cuDNN's graph API (heuristics, first plan that
runs). hwcov reaches cuDNN through the legacy API (`cudnnGetConvolutionForwardAlgorithm_v7` and
`cudnnConvolutionForward`), so this probe calls that API through ctypes on torch's own tensors, for
each algorithm the heuristics return, and reports which ones give torch's output bit for bit, at
each precision, for the convolution shapes of the fixtures and of the benchmark checkpoints. It also
reports how far torch's own non-cuDNN path (im2col and a product, `cudnn.enabled = False`) lands.

Usage: python3 tools/gpu/cudnn_probe.py   (on a GPU host with torch)
"""

import ctypes
import os
import sys

import torch
import torch.nn.functional as F

DTYPES = {torch.float32: 0, torch.float16: 2, torch.bfloat16: 9}  # cudnnDataType_t
TENSOR_OP_MATH, DEFAULT_MATH = 1, 0
CROSS_CORRELATION = 1
STATUS = ctypes.c_int


class AlgoPerf(ctypes.Structure):
    _fields_ = [("algo", ctypes.c_int), ("status", ctypes.c_int), ("time", ctypes.c_float),
                ("memory", ctypes.c_size_t), ("determinism", ctypes.c_int), ("mathType", ctypes.c_int),
                ("reserved", ctypes.c_int * 3)]


def load_cudnn():
    """The libcudnn that torch loaded (found in this process's maps after one convolution)."""
    x = torch.randn(1, 1, 8, 8, device="cuda")
    F.conv2d(x, torch.randn(1, 1, 3, 3, device="cuda"))
    torch.cuda.synchronize()
    for line in open("/proc/self/maps"):
        path = line.split()[-1]
        if os.path.basename(path).startswith("libcudnn.so"):
            return path, ctypes.CDLL(path)
    sys.exit("torch did not load libcudnn.so")


def check(lib, name, *args):
    status = getattr(lib, name)(*args)
    if status != 0:
        raise RuntimeError(f"{name}: cudnn status {status}")


def legacy_conv(lib, handle, x, w, stride, padding, groups, algo_filter=None):
    """Every algorithm that the v7 heuristics return, run on x and w: [(rank, algo, math, output)]."""
    dt = DTYPES[x.dtype]
    xd, yd, cd, wd = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
    check(lib, "cudnnCreateTensorDescriptor", ctypes.byref(xd))
    check(lib, "cudnnCreateTensorDescriptor", ctypes.byref(yd))
    check(lib, "cudnnCreateFilterDescriptor", ctypes.byref(wd))
    check(lib, "cudnnCreateConvolutionDescriptor", ctypes.byref(cd))
    n, c, h, wi = x.shape
    k, cg, kh, kw = w.shape
    check(lib, "cudnnSetTensor4dDescriptor", xd, 0, dt, n, c, h, wi)
    check(lib, "cudnnSetFilter4dDescriptor", wd, dt, 0, k, cg, kh, kw)
    # f32 accumulation at every precision, as torch sets it for half and bfloat16.
    check(lib, "cudnnSetConvolution2dDescriptor", cd, padding[0], padding[1], stride[0], stride[1], 1, 1,
          CROSS_CORRELATION, DTYPES[torch.float32])
    check(lib, "cudnnSetConvolutionGroupCount", cd, groups)
    math = DEFAULT_MATH if x.dtype == torch.float32 else TENSOR_OP_MATH
    check(lib, "cudnnSetConvolutionMathType", cd, math)
    on, oc, oh, ow = (ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int())
    check(lib, "cudnnGetConvolution2dForwardOutputDim", cd, xd, wd, ctypes.byref(on), ctypes.byref(oc),
          ctypes.byref(oh), ctypes.byref(ow))
    check(lib, "cudnnSetTensor4dDescriptor", yd, 0, dt, on.value, oc.value, oh.value, ow.value)
    perfs, count = (AlgoPerf * 16)(), ctypes.c_int()
    check(lib, "cudnnGetConvolutionForwardAlgorithm_v7", handle, xd, wd, cd, yd, 16, ctypes.byref(count), perfs)
    results = []
    alpha, beta = ctypes.c_float(1.0), ctypes.c_float(0.0)
    for rank in range(count.value):
        p = perfs[rank]
        if p.status != 0:
            continue
        check(lib, "cudnnSetConvolutionMathType", cd, p.mathType)
        size = ctypes.c_size_t()
        check(lib, "cudnnGetConvolutionForwardWorkspaceSize", handle, xd, wd, cd, yd, p.algo, ctypes.byref(size))
        ws = torch.empty(max(size.value, 1), dtype=torch.uint8, device="cuda")
        y = torch.empty(on.value, oc.value, oh.value, ow.value, dtype=x.dtype, device="cuda")
        status = lib.cudnnConvolutionForward(handle, ctypes.byref(alpha), xd, ctypes.c_void_p(x.data_ptr()), wd,
                                             ctypes.c_void_p(w.data_ptr()), cd, p.algo,
                                             ctypes.c_void_p(ws.data_ptr()), ctypes.c_size_t(size.value),
                                             ctypes.byref(beta), yd, ctypes.c_void_p(y.data_ptr()))
        torch.cuda.synchronize()
        results.append((rank, p.algo, p.mathType, y if status == 0 else None, size.value))
    return results


# (name, input shape NCHW, weight shape, stride, padding, groups): conv1d as conv2d with H = 1, as torch runs it.
SHAPES = [
    ("whisper fixture conv1", (1, 80, 1, 100), (16, 80, 1, 3), (1, 1), (0, 1), 1),
    ("whisper fixture conv2", (1, 16, 1, 100), (16, 16, 1, 3), (1, 2), (0, 1), 1),
    ("whisper-en fixture conv1", (1, 128, 1, 100), (24, 128, 1, 3), (1, 1), (0, 1), 1),
    ("whisper-tiny conv1", (1, 80, 1, 3000), (384, 80, 1, 3), (1, 1), (0, 1), 1),
    ("whisper-tiny conv2", (1, 384, 1, 3000), (384, 384, 1, 3), (1, 2), (0, 1), 1),
    ("wav2vec2 fixture conv0", (1, 1, 1, 4000), (32, 1, 1, 8), (1, 4), (0, 0), 1),
    ("wav2vec2 fixture conv1", (1, 32, 1, 999), (32, 32, 1, 8), (1, 4), (0, 0), 1),
    ("wav2vec2 fixture pos conv", (1, 16, 1, 61), (16, 8, 1, 16), (1, 1), (0, 8), 2),
    ("detr fixture stem 7x7", (1, 3, 64, 64), (10, 3, 7, 7), (2, 2), (3, 3), 1),
    ("detr fixture 3x3", (1, 10, 16, 16), (10, 10, 3, 3), (1, 1), (1, 1), 1),
    ("detr fixture 1x1", (1, 10, 16, 16), (40, 10, 1, 1), (1, 1), (0, 0), 1),
    ("xclip fixture patch 2x2", (3, 3, 30, 30), (32, 3, 2, 2), (2, 2), (0, 0), 1),
    ("vit-base patch 16x16", (1, 3, 224, 224), (768, 3, 16, 16), (16, 16), (0, 0), 1),
]


def main():
    torch.manual_seed(0)
    path, lib = load_cudnn()
    lib.cudnnGetVersion.restype = ctypes.c_size_t
    print(f"torch {torch.__version__}, cuDNN {lib.cudnnGetVersion()} ({path}), {torch.cuda.get_device_name()}")
    handle = ctypes.c_void_p()
    check(lib, "cudnnCreate", ctypes.byref(handle))
    check(lib, "cudnnSetStream", handle, ctypes.c_void_p(torch.cuda.current_stream().cuda_stream))
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        print(f"\n== {dtype}")
        for name, xs, ws, stride, padding, groups in SHAPES:
            x = torch.randn(xs, device="cuda").to(dtype)
            w = (torch.randn(ws, device="cuda") * 0.1).to(dtype)
            torch.backends.cudnn.enabled = True
            ref = F.conv2d(x, w, stride=stride, padding=padding, groups=groups)
            torch.backends.cudnn.enabled = False
            im2col = F.conv2d(x, w, stride=stride, padding=padding, groups=groups)
            torch.backends.cudnn.enabled = True
            if xs[2] == 1 and ws[2] == 1:  # a conv1d: torch runs it as this conv2d
                ref1d = F.conv1d(x.squeeze(2), w.squeeze(2), stride=stride[1], padding=padding[1], groups=groups)
                assert torch.equal(ref1d.unsqueeze(2), ref), f"{name}: conv1d is not torch's conv2d with H = 1"
            torch.cuda.synchronize()

            def differ(y):
                return int((y != ref).sum()) if y is not None else -1

            cells = []
            for rank, algo, math, y, wsize in legacy_conv(lib, handle, x, w, stride, padding, groups):
                cells.append(f"#{rank}:algo{algo}/m{math}/ws{wsize}={'same' if differ(y) == 0 else differ(y)}")
            print(f"{name:28s} {ref.numel():8d} outputs; torch without cuDNN differs in {differ(im2col)}; "
                  f"v7 algos (rank:algo/math/workspace=elements differing): {' '.join(cells)}")


if __name__ == "__main__":
    main()
