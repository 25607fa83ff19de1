// The selective scan (Mamba S6) of the op contract (plugins/selective_scan/README.md) as a CUDA kernel: one POD
// parameter struct and one launcher. Nothing here knows PyTorch or TensorRT; the TensorRT plugin, the ctypes path
// (selective_scan_capi.cpp) and the host harness adapt to it.
//
// Shapes (row-major, contiguous):
//   u, delta, y   [B, D, L]      float32 or float16 (io_dtype)
//   A             [D, N]         float32
//   Bmat, Cmat    [B, G, N, L]   io_dtype; channel d uses group g = d / (D / G)
//   Dskip, bias   [D]            float32 (nullptr reads as zeros)
//
// Algorithm: the sequence is cut into chunks so that a batch-1 problem still fills the GPU.
//   pass 1  chunk-local scans from h = 0 (all chunks but the last) -> chunk end states, sum of Delta
//   pass 2  carry: one thread per (b, n, d) walks the chunks and turns end states into the state entering
//           each chunk (decay over a chunk is exp(A * sum Delta))
//   pass 3  fix-up: every chunk is scanned again from its carried-in state and writes y
// With one chunk only pass 3 runs. The per-block and per-thread pieces live in selective_scan_device.cuh.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mmad
{
namespace scan
{

enum class ScanDType : int32_t
{
    kFloat32 = 0,
    kFloat16 = 1,
};

struct SelectiveScanParams
{
    int32_t batch{0};          // B
    int32_t dim{0};            // D (channels)
    int32_t seqlen{0};         // L
    int32_t dstate{0};         // N, 1..kMaxState
    int32_t ngroups{0};        // G, divides D
    int32_t delta_softplus{1}; // 1: Delta = softplus(delta + bias); 0: Delta = delta + bias
    ScanDType io_dtype{ScanDType::kFloat32};
    int32_t chunk_len{0}; // time steps per chunk; 0 = chosen by planScan(); else a multiple of kTileT
    int32_t num_sms{0};   // multiprocessors to fill; 0 = ask the current device
    int32_t reserved{0};
    void const* u{nullptr};
    void const* delta{nullptr};
    float const* A{nullptr};
    void const* Bmat{nullptr};
    void const* Cmat{nullptr};
    float const* Dskip{nullptr};
    float const* delta_bias{nullptr};
    void* y{nullptr};
    void* workspace{nullptr}; // chunk states; see selectiveScanWorkspaceSize()
    size_t workspace_bytes{0};
};

// Compile-time shape of the kernel; the host harness and the planner share them.
constexpr int32_t kMaxState = 16;         // N held in registers (smaller N is zero-padded)
constexpr int32_t kTileT = 32;            // time steps staged in shared memory at once
constexpr int32_t kMaxBlockChannels = 64; // channels (= threads) per block
constexpr int32_t kMinChunk = 64;         // shortest chunk the planner picks
constexpr int32_t kMaxChunks = 64;        // most chunks the planner picks
constexpr int32_t kTargetBlocksPerSM = 8; // blocks per multiprocessor the planner aims for
constexpr int32_t kMaxGridY = 65535;      // CUDA's limit on gridDim.y (chunks) and gridDim.z (B * G)

// How a launch is cut up: blocks of `block_channels` channels of one group, `nchunks` chunks of
// `chunk_len` steps. Grid of passes 1 and 3: (channel_tiles, chunks, B * G).
struct ScanLayout
{
    int32_t block_channels{0};
    int32_t channel_tiles{0};
    int32_t chunk_len{0};
    int32_t nchunks{0};
};

// nullptr if p describes a problem the kernel can run, else a sentence saying what is wrong.
// Pointers are checked only when check_pointers is true (planning needs shapes alone).
char const* selectiveScanCheck(SelectiveScanParams const& p, bool check_pointers = true) noexcept;

// Bytes of workspace one chunked launch needs (0 for a single chunk).
size_t selectiveScanWorkspaceBytes(int32_t batch, int32_t dim, int32_t dstate, int32_t nchunks) noexcept;

// The layout a launch will use. With chunk_len == 0 it aims at num_sms * kTargetBlocksPerSM blocks and
// never needs more workspace than p.workspace_bytes (it uses fewer chunks instead); with an explicit
// chunk_len it uses that. Returns false (with *error set) when p is invalid or an explicit chunking does
// not fit the workspace. num_sms must be > 0 here.
bool planScan(SelectiveScanParams const& p, int32_t num_sms, ScanLayout* layout, char const** error) noexcept;

// Workspace that covers every problem with batch <= max_batch and seqlen <= max_seqlen (other sizes
// fixed) under automatic chunking: what a TensorRT plugin reserves for an optimisation profile.
size_t selectiveScanWorkspaceBound(
    int32_t max_batch, int32_t dim, int32_t max_seqlen, int32_t dstate, int32_t ngroups, int32_t num_sms) noexcept;

// Multiprocessors of the current device (0 when there is none).
int32_t currentDeviceSMs() noexcept;

} // namespace scan
} // namespace mmad

// The launcher lives behind the CUDA runtime's stream type; the host harness includes only the part above.
#if !defined(MMAD_SCAN_NO_LAUNCHER)
#include <cuda_runtime_api.h>

namespace mmad
{
namespace scan
{
// Runs the scan on `stream`. cudaErrorInvalidValue for a problem selectiveScanCheck() rejects.
cudaError_t launchSelectiveScan(SelectiveScanParams const& p, cudaStream_t stream) noexcept;
} // namespace scan
} // namespace mmad
#endif
