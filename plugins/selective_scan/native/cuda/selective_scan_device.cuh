// The work of one CUDA block and of each of its threads in the chunked selective scan, as
// __host__ __device__ functions: the kernels (selective_scan_kernel.cu) call them between barriers, and
// the host harness (host_harness.cu) calls the very same functions over every block and thread index.
//
// A block owns `block_channels` consecutive channels of one group g, one chunk of the sequence and one
// batch item; thread i owns channel d0 + i and keeps its N states in registers. The block walks its chunk
// in tiles of kTileT steps: all threads stage u, Delta (bias and softplus applied) and the group's B and C
// in shared memory with coalesced loads (consecutive threads read consecutive time steps), then each thread
// scans its own channel through the tile, then (in the final pass) all threads write y back coalesced.
// B and C are therefore read once per block and tile and broadcast to all of its channels.
#pragma once

#include "selective_scan.h"

#include <cuda_fp16.h>
#include <math.h>

#if !defined(__CUDACC__)
#error "selective_scan_device.cuh is compiled by nvcc (the host harness too)"
#endif

#define MMAD_HD __host__ __device__ __forceinline__
// Unrolled on the device (the state array must stay in registers); the host compiler has no such pragma.
#if defined(__CUDA_ARCH__)
#define MMAD_UNROLL _Pragma("unroll")
#else
#define MMAD_UNROLL
#endif

namespace mmad
{
namespace scan
{

constexpr float kLog2e = 1.4426950408889634f;
// One float of padding per staged row: the 32 threads of a warp read step t of 32 different rows, and the
// odd row stride puts those reads in 32 different banks.
constexpr int32_t kTileStride = kTileT + 1;

// ---- element access: float32 or float16 in memory, float in registers --------------------------------

template <typename T>
struct Elem;

template <>
struct Elem<float>
{
    static MMAD_HD float load(void const* base, int64_t i)
    {
        return static_cast<float const*>(base)[i];
    }
    static MMAD_HD void store(void* base, int64_t i, float v)
    {
        static_cast<float*>(base)[i] = v;
    }
};

template <>
struct Elem<__half>
{
    static MMAD_HD float load(void const* base, int64_t i)
    {
        return __half2float(static_cast<__half const*>(base)[i]);
    }
    static MMAD_HD void store(void* base, int64_t i, float v)
    {
        static_cast<__half*>(base)[i] = __float2half_rn(v);
    }
};

// PyTorch's softplus: linear above 20, where log1p(exp(x)) == x in float anyway.
MMAD_HD float softplus(float x)
{
    return x > 20.f ? x : log1pf(expf(x));
}

// ---- the slice of the problem a block owns --------------------------------------------------------------

struct BlockSlice
{
    int32_t b;        // batch item
    int32_t g;        // group (B and C rows)
    int32_t chunk;    // chunk of the sequence
    int32_t d0;       // first channel
    int32_t channels; // channels that exist (the block may have idle threads)
    int32_t t_begin;  // first step of the chunk
    int32_t t_end;    // one past its last step
};

// (tile, chunk, bg) is (blockIdx.x, blockIdx.y, blockIdx.z) in the kernels.
MMAD_HD BlockSlice blockSlice(
    SelectiveScanParams const& p, ScanLayout const& lay, int32_t tile, int32_t chunk, int32_t bg)
{
    int32_t const cpg = p.dim / p.ngroups;
    int32_t const c0 = tile * lay.block_channels;
    BlockSlice s;
    s.b = bg / p.ngroups;
    s.g = bg % p.ngroups;
    s.chunk = chunk;
    s.d0 = s.g * cpg + c0;
    s.channels = cpg - c0 < lay.block_channels ? cpg - c0 : lay.block_channels;
    s.t_begin = chunk * lay.chunk_len;
    s.t_end = s.t_begin + lay.chunk_len < p.seqlen ? s.t_begin + lay.chunk_len : p.seqlen;
    return s;
}

// ---- shared memory of a block ---------------------------------------------------------------------------

struct TileSmem
{
    float* u;  // [block_channels][kTileStride]; the final pass overwrites it with y
    float* dt; // [block_channels][kTileStride]: Delta after bias and softplus
    float* B;  // [kMaxState][kTileT]; rows n >= N are zero
    float* C;  // [kMaxState][kTileT]
};

MMAD_HD int32_t tileSmemFloats(int32_t block_channels)
{
    return 2 * block_channels * kTileStride + 2 * kMaxState * kTileT;
}

MMAD_HD TileSmem tileSmem(float* base, int32_t block_channels)
{
    TileSmem sm;
    sm.u = base;
    sm.dt = sm.u + block_channels * kTileStride;
    sm.B = sm.dt + block_channels * kTileStride;
    sm.C = sm.B + kMaxState * kTileT;
    return sm;
}

// ---- the workspace: chunk states between the passes ----------------------------------------------------
// states [B][nchunks][N][D] (d fastest, so a block's threads touch consecutive floats), then
// delta sums [B][nchunks][D].

MMAD_HD int64_t stateIndex(
    SelectiveScanParams const& p, ScanLayout const& lay, int32_t b, int32_t chunk, int32_t n, int32_t d)
{
    return ((static_cast<int64_t>(b) * lay.nchunks + chunk) * p.dstate + n) * p.dim + d;
}

MMAD_HD int64_t deltaSumIndex(SelectiveScanParams const& p, ScanLayout const& lay, int32_t b, int32_t chunk, int32_t d)
{
    int64_t const states = static_cast<int64_t>(p.batch) * lay.nchunks * p.dstate * p.dim;
    return states + (static_cast<int64_t>(b) * lay.nchunks + chunk) * p.dim + d;
}

// ---- what one thread keeps in registers -----------------------------------------------------------------

struct ChannelState
{
    float h[kMaxState];  // state; entries n >= N stay 0
    float A2[kMaxState]; // A[d, n] * log2(e), so that exp(Delta * A) = exp2(Delta * A2)
    float dskip;         // D[d]
    float dsum;          // sum of Delta over the chunk so far (pass 1)
};

// Each thread: its channel's constants, and the state it enters the chunk with (0, or the carried one).
MMAD_HD void initChannel(SelectiveScanParams const& p, ScanLayout const& lay, BlockSlice const& s, int32_t tid,
    bool carried, ChannelState& st)
{
    int32_t const d = s.d0 + tid;
    bool const live = tid < s.channels;
    float const* ws = static_cast<float const*>(p.workspace);
    MMAD_UNROLL
    for (int32_t n = 0; n < kMaxState; ++n)
    {
        bool const on = live && n < p.dstate;
        st.A2[n] = on ? p.A[static_cast<int64_t>(d) * p.dstate + n] * kLog2e : 0.f;
        st.h[n] = on && carried ? ws[stateIndex(p, lay, s.b, s.chunk, n, d)] : 0.f;
    }
    st.dskip = live && p.Dskip ? p.Dskip[d] : 0.f;
    st.dsum = 0.f;
}

// All threads of the block, thread tid of nthreads: stage the tile of kTileT steps from t0. Steps past the
// chunk and channels past the group read as u = 0, Delta = 0: such a step leaves the state unchanged
// (decay exp(0) = 1, input 0), so the scan needs no bounds checks.
template <typename T, bool kWithC>
MMAD_HD void loadTile(SelectiveScanParams const& p, ScanLayout const& lay, BlockSlice const& s, int32_t t0, int32_t tid,
    int32_t nthreads, TileSmem const& sm)
{
    for (int32_t i = tid; i < lay.block_channels * kTileT; i += nthreads)
    {
        int32_t const r = i / kTileT;
        int32_t const t = t0 + i % kTileT;
        float uv = 0.f;
        float dv = 0.f;
        if (r < s.channels && t < s.t_end)
        {
            int32_t const d = s.d0 + r;
            int64_t const off = (static_cast<int64_t>(s.b) * p.dim + d) * p.seqlen + t;
            uv = Elem<T>::load(p.u, off);
            float const x = Elem<T>::load(p.delta, off) + (p.delta_bias ? p.delta_bias[d] : 0.f);
            dv = p.delta_softplus ? softplus(x) : x;
        }
        sm.u[r * kTileStride + i % kTileT] = uv;
        sm.dt[r * kTileStride + i % kTileT] = dv;
    }
    for (int32_t i = tid; i < kMaxState * kTileT; i += nthreads)
    {
        int32_t const n = i / kTileT;
        int32_t const t = t0 + i % kTileT;
        float bv = 0.f;
        float cv = 0.f;
        if (n < p.dstate && t < s.t_end)
        {
            int64_t const off = ((static_cast<int64_t>(s.b) * p.ngroups + s.g) * p.dstate + n) * p.seqlen + t;
            bv = Elem<T>::load(p.Bmat, off);
            if (kWithC)
            {
                cv = Elem<T>::load(p.Cmat, off);
            }
        }
        sm.B[i] = bv;
        if (kWithC)
        {
            sm.C[i] = cv;
        }
    }
}

// Each thread: advance its channel's state through the staged tile. With kEmitY it also forms
// y = sum_n C h + D u and writes it over u in its own row of shared memory.
template <bool kEmitY>
MMAD_HD void scanTile(BlockSlice const& s, int32_t tid, TileSmem const& sm, ChannelState& st)
{
    if (tid >= s.channels)
    {
        return;
    }
    float* urow = sm.u + tid * kTileStride;
    float const* dtrow = sm.dt + tid * kTileStride;
    for (int32_t k = 0; k < kTileT; ++k)
    {
        float const dt = dtrow[k];
        float const uv = urow[k];
        float const du = dt * uv;
        float y = 0.f;
        MMAD_UNROLL
        for (int32_t n = 0; n < kMaxState; ++n)
        {
            // exp in float32 whatever the I/O type.
            float const decay = exp2f(dt * st.A2[n]);
            st.h[n] = fmaf(decay, st.h[n], du * sm.B[n * kTileT + k]);
            if (kEmitY)
            {
                y = fmaf(sm.C[n * kTileT + k], st.h[n], y);
            }
        }
        if (kEmitY)
        {
            urow[k] = fmaf(st.dskip, uv, y);
        }
        else
        {
            st.dsum += dt;
        }
    }
}

// All threads: write the tile's y (staged in sm.u) back, coalesced like the loads.
template <typename T>
MMAD_HD void storeTile(SelectiveScanParams const& p, ScanLayout const& lay, BlockSlice const& s, int32_t t0,
    int32_t tid, int32_t nthreads, TileSmem const& sm)
{
    for (int32_t i = tid; i < lay.block_channels * kTileT; i += nthreads)
    {
        int32_t const r = i / kTileT;
        int32_t const t = t0 + i % kTileT;
        if (r < s.channels && t < s.t_end)
        {
            int64_t const off = (static_cast<int64_t>(s.b) * p.dim + s.d0 + r) * p.seqlen + t;
            Elem<T>::store(p.y, off, sm.u[r * kTileStride + i % kTileT]);
        }
    }
}

// Pass 1, each thread at the end of its chunk: the chunk's end state (from h = 0) and its sum of Delta.
MMAD_HD void saveChunkEnd(
    SelectiveScanParams const& p, ScanLayout const& lay, BlockSlice const& s, int32_t tid, ChannelState const& st)
{
    if (tid >= s.channels)
    {
        return;
    }
    int32_t const d = s.d0 + tid;
    float* ws = static_cast<float*>(p.workspace);
    MMAD_UNROLL
    for (int32_t n = 0; n < kMaxState; ++n)
    {
        if (n < p.dstate)
        {
            ws[stateIndex(p, lay, s.b, s.chunk, n, d)] = st.h[n];
        }
    }
    ws[deltaSumIndex(p, lay, s.b, s.chunk, d)] = st.dsum;
}

// Pass 2, one thread per (b, n, d), idx = (b * N + n) * D + d: walk the chunks in order and replace each
// chunk's slot by the state entering it. Over a chunk the state decays by prod_t exp(Delta_t A) =
// exp(A sum_t Delta_t) and gains the chunk's local end state.
MMAD_HD void carryChunks(SelectiveScanParams const& p, ScanLayout const& lay, int64_t idx)
{
    int32_t const d = static_cast<int32_t>(idx % p.dim);
    int32_t const n = static_cast<int32_t>((idx / p.dim) % p.dstate);
    int32_t const b = static_cast<int32_t>(idx / (static_cast<int64_t>(p.dim) * p.dstate));
    float* ws = static_cast<float*>(p.workspace);
    float const a2 = p.A[static_cast<int64_t>(d) * p.dstate + n] * kLog2e;
    float h = 0.f;
    for (int32_t c = 0; c < lay.nchunks; ++c)
    {
        int64_t const slot = stateIndex(p, lay, b, c, n, d);
        // Pass 1 skips the last chunk: its end state is needed by nobody.
        bool const has_end = c + 1 < lay.nchunks;
        float const local_end = has_end ? ws[slot] : 0.f;
        float const dsum = has_end ? ws[deltaSumIndex(p, lay, b, c, d)] : 0.f;
        ws[slot] = h;
        h = fmaf(exp2f(a2 * dsum), h, local_end);
    }
}

} // namespace scan
} // namespace mmad
