
__device__ __forceinline__ float bf16_to_f32(unsigned short h) { return __uint_as_float(((unsigned int)h) << 16); }
__device__ __forceinline__ unsigned short f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ float f16_to_f32(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short f32_to_f16(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
#define ID(v) (v)
#define GRID_STRIDE(i, n) for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
/* A row of `inner` elements per blockIdx.y: no division to find an element's bias. */
#define ROWS(r, c, rows, inner) \
    for (unsigned int r = blockIdx.y; r < rows; r += gridDim.y) \
    for (unsigned int c = blockIdx.x * blockDim.x + threadIdx.x; c < inner; c += blockDim.x * gridDim.x)
#define WARP_SUM(v) for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o)
#define WARP_MAX(v) for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o))

#define KERNELS(SUF, T, LOAD, STORE) \
/* y = x + b[(i / group) * inner + i % inner] (an attention mask) */ \
extern "C" __global__ void add_broadcast_##SUF(const T* x, const T* b, T* y, unsigned int n, unsigned int group, unsigned int inner) { \
    GRID_STRIDE(i, n) { y[i] = STORE(LOAD(x[i]) + LOAD(b[(i / group) * inner + i % inner])); } \
} \
/* y = x + b, b over the last dimension (a Linear's bias) */ \
extern "C" __global__ void bias_add_##SUF(const T* x, const T* b, T* y, unsigned int rows, unsigned int inner) { \
    ROWS(r, c, rows, inner) { unsigned long long i = (unsigned long long)r * inner + c; y[i] = STORE(LOAD(x[i]) + LOAD(b[c])); } \
} \
/* y = gelu(R(x + b)), torch's exact GELU: v / 2 * (1 + erf(v / sqrt(2))) */ \
extern "C" __global__ void bias_gelu_##SUF(const T* x, const T* b, T* y, unsigned int rows, unsigned int inner) { \
    ROWS(r, c, rows, inner) { \
        unsigned long long i = (unsigned long long)r * inner + c; \
        float v = LOAD(STORE(LOAD(x[i]) + LOAD(b[c]))); \
        y[i] = STORE(v * 0.5f * (1.0f + erff(v * 0.70710678118654752440f))); \
    } \
} \
/* y = R(x + b) + res */ \
extern "C" __global__ void bias_residual_##SUF(const T* x, const T* b, const T* res, T* y, unsigned int rows, unsigned int inner) { \
    ROWS(r, c, rows, inner) { \
        unsigned long long i = (unsigned long long)r * inner + c; \
        y[i] = STORE(LOAD(STORE(LOAD(x[i]) + LOAD(b[c]))) + LOAD(res[i])); \
    } \
} \
/* y[r, c] = R(silu(x[r, c])) * x[r, inner + c], x rows of 2 * inner (gate, then up) */ \
extern "C" __global__ void silu_mul_##SUF(const T* x, T* y, unsigned int rows, unsigned int inner) { \
    ROWS(r, c, rows, inner) { \
        unsigned long long i = (unsigned long long)r * 2 * inner + c; \
        float g = LOAD(x[i]); \
        float a = LOAD(STORE(g / (1.0f + expf(-g)))); \
        y[(unsigned long long)r * inner + c] = STORE(a * LOAD(x[i + inner])); \
    } \
}
KERNELS(f32, float, ID, ID)
KERNELS(bf16, unsigned short, bf16_to_f32, f32_to_bf16)
KERNELS(f16, unsigned short, f16_to_f32, f32_to_f16)

/* Row kernels: one warp per row. A row of up to 32 * N elements is held in registers (N per lane,
   N the smallest of 4, 8, 16, 32, 64 that holds it), so that all its loads are in flight at once;
   longer rows are read again for each pass. D is the dtype: its storage type and conversions. */
struct F32 { typedef float T; typedef float4 T4;
    static __device__ float ld(float v) { return v; }
    static __device__ float st(float v) { return v; } };
struct BF16 { typedef unsigned short T; typedef ushort4 T4;
    static __device__ float ld(unsigned short v) { return bf16_to_f32(v); }
    static __device__ unsigned short st(float v) { return f32_to_bf16(v); } };
struct F16 { typedef unsigned short T; typedef ushort4 T4;
    static __device__ float ld(unsigned short v) { return f16_to_f32(v); }
    static __device__ unsigned short st(float v) { return f32_to_f16(v); } };
/* Elementwise kernels: eight elements a thread, moved as 16- or 8-byte accesses of four where the
   host found every pointer aligned to four elements (vec), else one at a time. */
template <typename D> __device__ __forceinline__ void load4(const typename D::T* p, float v[4]) {
    typename D::T4 q = *reinterpret_cast<const typename D::T4*>(p);
    v[0] = D::ld(q.x); v[1] = D::ld(q.y); v[2] = D::ld(q.z); v[3] = D::ld(q.w);
}
template <typename D> __device__ __forceinline__ void store4(typename D::T* p, const float v[4]) {
    typename D::T4 q; q.x = D::st(v[0]); q.y = D::st(v[1]); q.z = D::st(v[2]); q.w = D::st(v[3]);
    *reinterpret_cast<typename D::T4*>(p) = q;
}
/* torch's exact GELU: v / 2 * (1 + erf(v / sqrt(2))) */
struct Gelu { static __device__ __forceinline__ float f(float v, float) { return v * 0.5f * (1.0f + erff(v * 0.70710678118654752440f)); } };
struct Add { static __device__ __forceinline__ float f(float v, float r) { return v + r; } };
/* torch.rsqrt: CUDA's rsqrtf (within 2 ulp, not 1 / sqrt). */
struct Rsqrt { static __device__ __forceinline__ float f(float v, float) { return rsqrtf(v); } };
/* y = OP(x, r) in f32, rounded once to the dtype; r may be null. */
template <typename D, typename OP> __device__ void map8(const typename D::T* x, const typename D::T* r, typename D::T* y,
        unsigned int n, unsigned int vec) {
    for (unsigned long long i = 8ull * (blockIdx.x * blockDim.x + threadIdx.x); i < n; i += 8ull * blockDim.x * gridDim.x) {
        if (vec && i + 8 <= n) {
            float a[8], b[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
            load4<D>(x + i, a); load4<D>(x + i + 4, a + 4);
            if (r != 0) { load4<D>(r + i, b); load4<D>(r + i + 4, b + 4); }
            #pragma unroll
            for (int k = 0; k < 8; k++) a[k] = OP::f(a[k], b[k]);
            store4<D>(y + i, a); store4<D>(y + i + 4, a + 4);
        } else {
            for (unsigned long long j = i; j < i + 8 && j < n; j++) y[j] = D::st(OP::f(D::ld(x[j]), r != 0 ? D::ld(r[j]) : 0.0f));
        }
    }
}
#define MAP_KERNELS(SUF, D) \
extern "C" __global__ void gelu_##SUF(const D::T* x, D::T* y, unsigned int n, unsigned int vec) { map8<D, Gelu>(x, 0, y, n, vec); } \
extern "C" __global__ void add_##SUF(const D::T* x, const D::T* r, D::T* y, unsigned int n, unsigned int vec) { map8<D, Add>(x, r, y, n, vec); } \
extern "C" __global__ void rsqrt_##SUF(const D::T* x, D::T* y, unsigned int n, unsigned int vec) { map8<D, Rsqrt>(x, 0, y, n, vec); }
MAP_KERNELS(f32, F32)
MAP_KERNELS(bf16, BF16)
MAP_KERNELS(f16, F16)

/* Rounds to the dtype and back: what storing an intermediate in the dtype does. */
template <typename D> __device__ __forceinline__ float rnd(float v) { return D::ld(D::st(v)); }

/* torch's GroupNorm statistics (RowwiseMomentsCUDAKernel): Welford's running mean and sum of squared
   deviations over each row of `len` elements, one block per row (32 threads, or 512 for rows of 512
   and more), combined as its WarpReduce and BlockReduce combine them; rstd = rsqrtf(var + eps). torch
   stores the mean and rstd in the tensor's dtype, so they are rounded to it here. */
struct Welford { float mean, m2; long long n; float nf; };
__device__ __forceinline__ Welford welford_reduce(Welford a, float x) {
    long long n = a.n + 1; float nf = (float)n;
    float delta = x - a.mean; float mean = a.mean + delta / nf; float delta2 = x - mean;
    Welford r = {mean, a.m2 + delta * delta2, n, nf}; return r;
}
__device__ __forceinline__ Welford welford_combine(Welford a, Welford b) {
    if (a.nf == 0.0f) return b;
    if (b.nf == 0.0f) return a;
    float delta = b.mean - a.mean; float count = a.nf + b.nf; float nb_over_n = b.nf / count;
    Welford r = {a.mean + delta * nb_over_n, a.m2 + b.m2 + delta * delta * a.nf * nb_over_n, -1, count}; return r;
}
__device__ __forceinline__ Welford welford_warp_reduce(Welford v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        Welford o = {__shfl_down_sync(0xffffffffu, v.mean, offset), __shfl_down_sync(0xffffffffu, v.m2, offset),
                     __shfl_down_sync(0xffffffffu, v.n, offset), __shfl_down_sync(0xffffffffu, v.nf, offset)};
        v = welford_combine(v, o);
    }
    return v;
}
template <typename D> __device__ void group_norm_stats(const typename D::T* x, float* mean, float* rstd, unsigned int len, float eps) {
    __shared__ Welford shared[32];
    const unsigned long long row = blockIdx.x;
    Welford v = {0.0f, 0.0f, 0, 0.0f};
    for (unsigned int j = threadIdx.x; j < len; j += blockDim.x) v = welford_reduce(v, D::ld(x[row * len + j]));
    v = welford_warp_reduce(v);
    if (blockDim.x > 32) {
        unsigned int lid = threadIdx.x % 32, wid = threadIdx.x / 32;
        __syncthreads();
        if (lid == 0) shared[wid] = v;
        __syncthreads();
        Welford zero = {0.0f, 0.0f, 0, 0.0f};
        v = threadIdx.x < blockDim.x / 32 ? shared[lid] : zero;
        if (wid == 0) v = welford_warp_reduce(v);
    }
    if (threadIdx.x == 0) { mean[row] = rnd<D>(v.mean); rstd[row] = rnd<D>(rsqrtf(v.m2 / v.nf + eps)); }
}
/* torch's GroupNorm output: a = rstd * gamma, b = -a * mean + beta, y = a * x + b in f32, rounded once. */
template <typename D> __device__ void group_norm_apply(const typename D::T* x, const float* mean, const float* rstd,
        const typename D::T* gamma, const typename D::T* beta, typename D::T* y, unsigned int channels,
        unsigned int per_group, unsigned int hw, unsigned int n) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        unsigned int nc = i / hw, c = nc % channels, ng = nc / per_group;
        float a = rstd[ng] * D::ld(gamma[c]);
        float b = -a * mean[ng] + D::ld(beta[c]);
        y[i] = D::st(a * D::ld(x[i]) + b);
    }
}
#define GROUP_NORM_KERNELS(SUF, D) \
extern "C" __global__ void group_norm_stats_##SUF(const D::T* x, float* mean, float* rstd, unsigned int len, float eps) { \
    group_norm_stats<D>(x, mean, rstd, len, eps); } \
extern "C" __global__ void group_norm_apply_##SUF(const D::T* x, const float* mean, const float* rstd, const D::T* gamma, \
        const D::T* beta, D::T* y, unsigned int channels, unsigned int per_group, unsigned int hw, unsigned int n) { \
    group_norm_apply<D>(x, mean, rstd, gamma, beta, y, channels, per_group, hw, n); }
GROUP_NORM_KERNELS(f32, F32)
GROUP_NORM_KERNELS(bf16, BF16)
GROUP_NORM_KERNELS(f16, F16)

/* transformers' apply_rotary_pos_emb on pairs (x1, x2) half a row apart: y1 = R(R(x1 c) - R(x2 s)),
   y2 = R(R(x2 c) + R(x1 s)), as torch's separate kernels store each product and the sum; the _rn
   intrinsics keep the compiler from fusing a product into the sum. x is rows of 2 * half, a row's
   position is row % seq and its batch row / rows_per_batch; cos and sin are (batch or 1, seq, half). */
template <typename D> __device__ void rope(const typename D::T* x, const typename D::T* cos, const typename D::T* sin,
        typename D::T* y, unsigned int pairs, unsigned int half, unsigned int seq, unsigned int rows_per_batch,
        unsigned int cs_batch_stride) {
    GRID_STRIDE(i, pairs) {
        unsigned int row = i / half, j = i - row * half;
        unsigned long long cs = (unsigned long long)(row / rows_per_batch) * cs_batch_stride + (row % seq) * half + j;
        unsigned long long i1 = (unsigned long long)row * 2 * half + j, i2 = i1 + half;
        float c = D::ld(cos[cs]), s = D::ld(sin[cs]), x1 = D::ld(x[i1]), x2 = D::ld(x[i2]);
        y[i1] = D::st(__fsub_rn(rnd<D>(__fmul_rn(x1, c)), rnd<D>(__fmul_rn(x2, s))));
        y[i2] = D::st(__fadd_rn(rnd<D>(__fmul_rn(x2, c)), rnd<D>(__fmul_rn(x1, s))));
    }
}
#define ROPE_KERNEL(SUF, D) \
extern "C" __global__ void rope_##SUF(const D::T* x, const D::T* cos, const D::T* sin, D::T* y, unsigned int pairs, \
        unsigned int half, unsigned int seq, unsigned int rows_per_batch, unsigned int cs_batch_stride) { \
    rope<D>(x, cos, sin, y, pairs, half, seq, rows_per_batch, cs_batch_stride); \
}
ROPE_KERNEL(f32, F32)
ROPE_KERNEL(bf16, BF16)
ROPE_KERNEL(f16, F16)

/* v = R(R(x * scale) + mask), from the score x and its mask m (read where mr is not null) */
template <typename D> __device__ __forceinline__ float scored(float x, float m, const typename D::T* mr, float scale) {
    float v = x;
    if (scale != 1.0f) v = rnd<D>(v * scale);
    if (mr != 0) v = rnd<D>(v + m);
    return v;
}
template <typename D> __device__ __forceinline__ float score(const typename D::T* xr, const typename D::T* mr, unsigned int c, float scale) {
    return scored<D>(D::ld(xr[c]), mr == 0 ? 0.0f : D::ld(mr[c]), mr, scale);
}
/* The row's scores and mask are all read before any is used: a read inside the loop that takes the
   maximum would be waited for before the next read is issued, one memory latency per element held
   (47 of them for Whisper's 1500 frames). */
template <typename D, int N> __device__ void softmax_held(const typename D::T* xr, const typename D::T* mr, typename D::T* yr,
        unsigned int cols, unsigned int lane, float scale) {
    float v[N], mk[N]; float m = __int_as_float(0xff800000), s = 0.0f;
    #pragma unroll
    for (int j = 0; j < N; j++) { unsigned int c = lane + 32 * j; v[j] = c < cols ? D::ld(xr[c]) : 0.0f; }
    #pragma unroll
    for (int j = 0; j < N; j++) { unsigned int c = lane + 32 * j; mk[j] = mr != 0 && c < cols ? D::ld(mr[c]) : 0.0f; }
    #pragma unroll
    for (int j = 0; j < N; j++) { unsigned int c = lane + 32 * j; if (c < cols) { v[j] = scored<D>(v[j], mk[j], mr, scale); m = fmaxf(m, v[j]); } }
    WARP_MAX(m);
    #pragma unroll
    for (int j = 0; j < N; j++) { unsigned int c = lane + 32 * j; if (c < cols) { v[j] = expf(v[j] - m); s += v[j]; } }
    WARP_SUM(s);
    #pragma unroll
    for (int j = 0; j < N; j++) { unsigned int c = lane + 32 * j; if (c < cols) yr[c] = D::st(v[j] / s); }
}
template <typename D> __device__ void softmax_long(const typename D::T* xr, const typename D::T* mr, typename D::T* yr,
        unsigned int cols, unsigned int lane, float scale) {
    float m = __int_as_float(0xff800000), s = 0.0f;
    for (unsigned int c = lane; c < cols; c += 32) m = fmaxf(m, score<D>(xr, mr, c, scale));
    WARP_MAX(m);
    for (unsigned int c = lane; c < cols; c += 32) s += expf(score<D>(xr, mr, c, scale) - m);
    WARP_SUM(s);
    for (unsigned int c = lane; c < cols; c += 32) yr[c] = D::st(expf(score<D>(xr, mr, c, scale) - m) / s);
}

/* Where a lane's j-th held element lies in its row: in quads of four neighbours where the row is
   moved four elements at a time (vec: the row's length and pointers are multiples of four elements),
   else every 32nd element from the lane. */
__device__ __forceinline__ unsigned int held_col(unsigned int lane, int j, unsigned int vec) {
    return vec ? 4 * (lane + 32 * (j >> 2)) + (j & 3) : lane + 32 * j;
}
template <typename D, int N> __device__ __forceinline__ void load_held(const typename D::T* xr, unsigned int cols,
        unsigned int lane, unsigned int vec, float v[N]) {
    if (vec) {
        #pragma unroll
        for (int q = 0; q < N / 4; q++) { unsigned int c = 4 * (lane + 32 * q); if (c < cols) load4<D>(xr + c, &v[4 * q]); }
    } else {
        #pragma unroll
        for (int j = 0; j < N; j++) { unsigned int c = lane + 32 * j; if (c < cols) v[j] = D::ld(xr[c]); }
    }
}

/* torch's LayerNorm statistics, one warp per row playing the threads of torch's block in turn.
   Rows of a multiple of 4 elements on aligned pointers (`vec`) take vectorized_layer_norm_kernel's:
   128 threads (4 warps), thread t folds the quads t, t + 128, ... into a running mean and sum of squared
   deviations (WelfordDataLN), each warp combines its threads (shfl_down), then warps 2 and 3 are combined
   into 0 and 1, and 1 into 0; var = sum / n. Other rows take RowwiseMomentsCUDAKernel's: 512 threads
   (16 warps), thread t folds the elements t, t + 512, ... (WelfordOps), and the block reduction. Lane l
   plays thread l + 32 w of warp w; X(c) reads element c. */
struct LNW { float mean, sigma2, count; };
__device__ __forceinline__ LNW ln_online(float val, LNW c) {
    float delta = val - c.mean;
    float new_count = c.count + 1.f;
    float new_mean = c.mean + delta * (1.f / new_count);
    LNW r = {new_mean, c.sigma2 + delta * (val - new_mean), new_count}; return r;
}
__device__ __forceinline__ LNW ln_combine(LNW dataB, LNW dataA) {
    float delta = dataB.mean - dataA.mean;
    float count = dataA.count + dataB.count;
    float mean, sigma2;
    if (count > 0.f) {
        float coef = 1.f / count;
        float nA = dataA.count * coef;
        float nB = dataB.count * coef;
        mean = nA * dataA.mean + nB * dataB.mean;
        sigma2 = dataA.sigma2 + dataB.sigma2 + delta * delta * dataA.count * nB;
    } else { mean = 0.f; sigma2 = 0.f; }
    LNW r = {mean, sigma2, count}; return r;
}
/* A warp's combination, as lane 0 holds it, given to every lane. */
__device__ __forceinline__ LNW ln_warp(LNW wd) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        LNW o = {__shfl_down_sync(0xffffffffu, wd.mean, offset), __shfl_down_sync(0xffffffffu, wd.sigma2, offset),
                 __shfl_down_sync(0xffffffffu, wd.count, offset)};
        wd = ln_combine(wd, o);
    }
    LNW r = {__shfl_sync(0xffffffffu, wd.mean, 0), __shfl_sync(0xffffffffu, wd.sigma2, 0), __shfl_sync(0xffffffffu, wd.count, 0)};
    return r;
}
#define LN_STATS(X, cols, lane, vec, eps, mean, rstd) { \
    if (vec) { \
        LNW r[4]; \
        for (int wp = 0; wp < 4; wp++) { \
            LNW wd = {0.f, 0.f, 0.f}; \
            for (unsigned int q = lane + 32 * wp; 4 * q < cols; q += 128) \
                for (int t = 0; t < 4; t++) wd = ln_online(X(4 * q + t), wd); \
            r[wp] = ln_warp(wd); \
        } \
        LNW f = ln_combine(ln_combine(r[0], r[2]), ln_combine(r[1], r[3])); \
        mean = f.mean; rstd = rsqrtf(f.sigma2 / (float)cols + eps); \
    } else { \
        Welford res = {0.0f, 0.0f, 0, 0.0f}; \
        for (unsigned int wp = 0; wp < 16; wp++) { \
            Welford wd = {0.0f, 0.0f, 0, 0.0f}; \
            for (unsigned int c = lane + 32 * wp; c < cols; c += 512) wd = welford_reduce(wd, X(c)); \
            wd = welford_warp_reduce(wd); \
            Welford w0 = {__shfl_sync(0xffffffffu, wd.mean, 0), __shfl_sync(0xffffffffu, wd.m2, 0), \
                          __shfl_sync(0xffffffffu, wd.n, 0), __shfl_sync(0xffffffffu, wd.nf, 0)}; \
            if (lane == wp) res = w0; \
        } \
        res = welford_warp_reduce(res); \
        mean = __shfl_sync(0xffffffffu, res.mean, 0); \
        rstd = rsqrtf(__shfl_sync(0xffffffffu, res.m2, 0) / __shfl_sync(0xffffffffu, res.nf, 0) + eps); \
    } \
}

/* torch's LayerNorm: its statistics (above), then w * (rstd * (x - mean)) + b in f32, rounded once. */
template <typename D, int N> __device__ void layer_norm_held(const typename D::T* xr, const typename D::T* w, const typename D::T* b,
        typename D::T* yr, unsigned int cols, unsigned int lane, float eps, unsigned int vec) {
    float v[N]; float mean, rstd;
    load_held<D, N>(xr, cols, lane, vec, v);
    /* The statistics read the row again (from cache), in the order torch's threads take it. */
    #define X_ROW(c) D::ld(xr[c])
    LN_STATS(X_ROW, cols, lane, vec, eps, mean, rstd)
    #undef X_ROW
    if (vec) {
        #pragma unroll
        for (int q = 0; q < N / 4; q++) {
            unsigned int c = 4 * (lane + 32 * q);
            if (c < cols) {
                float wq[4], bq[4], o[4];
                load4<D>(w + c, wq); load4<D>(b + c, bq);
                #pragma unroll
                for (int t = 0; t < 4; t++) o[t] = wq[t] * (rstd * (v[4 * q + t] - mean)) + bq[t];
                store4<D>(yr + c, o);
            }
        }
    } else {
        #pragma unroll
        for (int j = 0; j < N; j++) { unsigned int c = lane + 32 * j; if (c < cols) yr[c] = D::st(D::ld(w[c]) * (rstd * (v[j] - mean)) + D::ld(b[c])); }
    }
}
template <typename D> __device__ void layer_norm_long(const typename D::T* xr, const typename D::T* w, const typename D::T* b,
        typename D::T* yr, unsigned int cols, unsigned int lane, float eps, unsigned int vec) {
    float mean, rstd;
    #define X_ROW(c) D::ld(xr[c])
    LN_STATS(X_ROW, cols, lane, vec, eps, mean, rstd)
    #undef X_ROW
    for (unsigned int c = lane; c < cols; c += 32) yr[c] = D::st(D::ld(w[c]) * (rstd * (D::ld(xr[c]) - mean)) + D::ld(b[c]));
}

/* LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) in f32, rounded to the dtype, times w. As torch computes
   it: each square rounded to f32 (pow is its own kernel), the mean a sum times 1/n, rsqrtf. */
template <typename D, int N> __device__ void rms_norm_held(const typename D::T* xr, const typename D::T* w, typename D::T* yr,
        unsigned int cols, unsigned int lane, float eps, unsigned int vec) {
    float v[N]; float sq = 0.0f;
    load_held<D, N>(xr, cols, lane, vec, v);
    #pragma unroll
    for (int j = 0; j < N; j++) if (held_col(lane, j, vec) < cols) sq += __fmul_rn(v[j], v[j]);
    WARP_SUM(sq);
    float r = rsqrtf(__fmul_rn(sq, 1.0f / cols) + eps);
    if (vec) {
        #pragma unroll
        for (int q = 0; q < N / 4; q++) {
            unsigned int c = 4 * (lane + 32 * q);
            if (c < cols) {
                float wq[4], o[4];
                load4<D>(w + c, wq);
                #pragma unroll
                for (int t = 0; t < 4; t++) o[t] = wq[t] * rnd<D>(v[4 * q + t] * r);
                store4<D>(yr + c, o);
            }
        }
    } else {
        #pragma unroll
        for (int j = 0; j < N; j++) { unsigned int c = lane + 32 * j; if (c < cols) yr[c] = D::st(D::ld(w[c]) * rnd<D>(v[j] * r)); }
    }
}
template <typename D> __device__ void rms_norm_long(const typename D::T* xr, const typename D::T* w, typename D::T* yr,
        unsigned int cols, unsigned int lane, float eps, unsigned int) {
    float sq = 0.0f;
    for (unsigned int c = lane; c < cols; c += 32) { float v = D::ld(xr[c]); sq += __fmul_rn(v, v); }
    WARP_SUM(sq);
    float r = rsqrtf(__fmul_rn(sq, 1.0f / cols) + eps);
    for (unsigned int c = lane; c < cols; c += 32) yr[c] = D::st(D::ld(w[c]) * rnd<D>(D::ld(xr[c]) * r));
}

/* Calls NAME_held<D, N>, or NAME_long<D> where N is 0. N is a kernel's constant, so that each kernel
   is compiled for its own row length: one kernel for all lengths would take the registers of the
   longest everywhere, and fit fewer warps on each multiprocessor. */
#define BY_LENGTH(NAME, D, N, ...) \
    if (N == 0) NAME##_long<D>(__VA_ARGS__); else NAME##_held<D, (N == 0 ? 1 : N)>(__VA_ARGS__);
#define ROW_START(T) \
    unsigned int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); \
    if (row >= rows) return; \
    unsigned int lane = threadIdx.x & 31; \
    const T* xr = x + (unsigned long long)row * cols; \
    T* yr = y + (unsigned long long)row * cols;

/* The row kernels of dtype SUF for rows held N per lane, named NAME_SUF_LEN. */
#define ROW_KERNELS(SUF, D, N, LEN) \
/* The mask row of a score row: (row / rows_per_batch) * mask_batch_stride + (row % q_len) * mask_row_stride. */ \
extern "C" __global__ void attention_softmax_##SUF##_##LEN(const D::T* x, const D::T* mask, D::T* y, unsigned int rows, unsigned int cols, \
        float scale, unsigned int rows_per_batch, unsigned int q_len, unsigned int mask_batch_stride, unsigned int mask_row_stride) { \
    ROW_START(D::T) \
    const D::T* mr = mask == 0 ? 0 : mask + (unsigned long long)(row / rows_per_batch) * mask_batch_stride \
        + (unsigned long long)(row % q_len) * mask_row_stride; \
    BY_LENGTH(softmax, D, N, xr, mr, yr, cols, lane, scale) \
} \
extern "C" __global__ void layer_norm_##SUF##_##LEN(const D::T* x, const D::T* w, const D::T* b, D::T* y, unsigned int rows, unsigned int cols, \
        float eps, unsigned int vec) { \
    ROW_START(D::T) \
    BY_LENGTH(layer_norm, D, N, xr, w, b, yr, cols, lane, eps, vec) \
} \
extern "C" __global__ void rms_norm_##SUF##_##LEN(const D::T* x, const D::T* w, D::T* y, unsigned int rows, unsigned int cols, \
        float eps, unsigned int vec) { \
    ROW_START(D::T) \
    BY_LENGTH(rms_norm, D, N, xr, w, yr, cols, lane, eps, vec) \
}
/* The lengths match row_length() on the host. */
#define ROW_KERNELS_ALL_LENGTHS(SUF, D) \
    ROW_KERNELS(SUF, D, 4, 4) ROW_KERNELS(SUF, D, 8, 8) ROW_KERNELS(SUF, D, 16, 16) \
    ROW_KERNELS(SUF, D, 32, 32) ROW_KERNELS(SUF, D, 64, 64) ROW_KERNELS(SUF, D, 0, long)
ROW_KERNELS_ALL_LENGTHS(f32, F32)
ROW_KERNELS_ALL_LENGTHS(bf16, BF16)
ROW_KERNELS_ALL_LENGTHS(f16, F16)


/* y[i] = x[i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3], (i0, i1, i2, i3) the index of i in (d0, d1, d2, d3);
   the element type is only its width. */
#define STRIDED_COPY(NAME, T) \
extern "C" __global__ void NAME(const T* x, T* y, unsigned int n, unsigned int d1, unsigned int d2, unsigned int d3, \
        unsigned int s0, unsigned int s1, unsigned int s2, unsigned int s3) { \
    GRID_STRIDE(i, n) { \
        unsigned int t = i; \
        unsigned int i3 = t % d3; t /= d3; \
        unsigned int i2 = t % d2; t /= d2; \
        unsigned int i1 = t % d1; \
        y[i] = x[(t / d1) * s0 + i1 * s1 + i2 * s2 + i3 * s3]; \
    } \
}
STRIDED_COPY(strided_copy_u16, unsigned short)
STRIDED_COPY(strided_copy_u32, unsigned int)
STRIDED_COPY(strided_copy_u64, unsigned long long)

/* y = blocks of `inner` units of x, each followed by zero units up to `outer` (the rows of each
   matrix followed by rows of zeros); the unit is only a width. */
#define PAD_BLOCKS(NAME, T) \
extern "C" __global__ void NAME(const T* x, T* y, unsigned int n, unsigned int inner, unsigned int outer) { \
    GRID_STRIDE(i, n) { unsigned int r = i % outer; y[i] = r < inner ? x[(i / outer) * inner + r] : (T)0; } \
}
PAD_BLOCKS(pad_blocks_u16, unsigned short)
PAD_BLOCKS(pad_blocks_u32, unsigned int)
PAD_BLOCKS(pad_blocks_u64, unsigned long long)
