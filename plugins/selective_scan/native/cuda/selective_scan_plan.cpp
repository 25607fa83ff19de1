// Checking and cutting up a selective-scan launch: plain C++, shared by the launcher and the host harness.
#define MMAD_SCAN_NO_LAUNCHER
#include "selective_scan.h"

#include <algorithm>

namespace mmad
{
namespace scan
{
namespace
{

int64_t ceilDiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

int64_t roundUp(int64_t a, int64_t m)
{
    return ceilDiv(a, m) * m;
}

int32_t blockChannels(int32_t channels_per_group)
{
    // Whole warps, and no more threads than a group has channels (rounded up to a warp).
    return static_cast<int32_t>(std::min<int64_t>(kMaxBlockChannels, roundUp(channels_per_group, 32)));
}

// Chunk length for `nchunks` chunks over `seqlen`: whole tiles, so that chunk boundaries fall on tile
// boundaries.
int32_t chunkLenFor(int32_t seqlen, int64_t nchunks)
{
    return static_cast<int32_t>(roundUp(ceilDiv(seqlen, nchunks), kTileT));
}

int64_t stateBytesPerChunk(int32_t batch, int32_t dim, int32_t dstate)
{
    // End state (N floats) and sum of Delta (1 float) per (b, d).
    return static_cast<int64_t>(batch) * dim * (dstate + 1) * static_cast<int64_t>(sizeof(float));
}

} // namespace

char const* selectiveScanCheck(SelectiveScanParams const& p, bool check_pointers) noexcept
{
    if (p.batch < 1 || p.dim < 1 || p.seqlen < 1)
    {
        return "selective_scan: B, D and L must be >= 1";
    }
    if (p.dstate < 1 || p.dstate > kMaxState)
    {
        return "selective_scan: N (A's second dimension) must be in 1..16";
    }
    if (p.ngroups < 1 || p.dim % p.ngroups != 0)
    {
        return "selective_scan: G (B's second dimension) must be >= 1 and divide D";
    }
    if (p.io_dtype != ScanDType::kFloat32 && p.io_dtype != ScanDType::kFloat16)
    {
        return "selective_scan: io_dtype must be float32 or float16";
    }
    if (p.delta_softplus != 0 && p.delta_softplus != 1)
    {
        return "selective_scan: delta_softplus must be 0 or 1";
    }
    if (p.chunk_len < 0 || p.chunk_len % kTileT != 0)
    {
        return "selective_scan: chunk_len must be 0 (automatic) or a positive multiple of 32";
    }
    // Element offsets are 64-bit in the kernel, but grid sizes are not unlimited.
    if (static_cast<int64_t>(p.batch) * p.ngroups > kMaxGridY)
    {
        return "selective_scan: B * G must be <= 65535";
    }
    if (check_pointers && (!p.u || !p.delta || !p.A || !p.Bmat || !p.Cmat || !p.y))
    {
        return "selective_scan: u, delta, A, B, C and y must not be null";
    }
    if (check_pointers && p.workspace_bytes > 0 && !p.workspace)
    {
        return "selective_scan: workspace_bytes > 0 with a null workspace";
    }
    return nullptr;
}

size_t selectiveScanWorkspaceBytes(int32_t batch, int32_t dim, int32_t dstate, int32_t nchunks) noexcept
{
    if (nchunks <= 1)
    {
        return 0;
    }
    return static_cast<size_t>(stateBytesPerChunk(batch, dim, dstate) * nchunks);
}

bool planScan(SelectiveScanParams const& p, int32_t num_sms, ScanLayout* layout, char const** error) noexcept
{
    char const* problem = selectiveScanCheck(p, /*check_pointers=*/false);
    if (!problem && num_sms < 1)
    {
        problem = "selective_scan: no multiprocessor count (is there a CUDA device?)";
    }
    if (problem)
    {
        if (error)
        {
            *error = problem;
        }
        return false;
    }
    int32_t const cpg = p.dim / p.ngroups;
    ScanLayout out;
    out.block_channels = blockChannels(cpg);
    out.channel_tiles = static_cast<int32_t>(ceilDiv(cpg, out.block_channels));

    if (p.chunk_len > 0)
    {
        out.chunk_len = p.chunk_len;
        out.nchunks = static_cast<int32_t>(ceilDiv(p.seqlen, p.chunk_len));
        if (out.nchunks > kMaxGridY)
        {
            if (error)
            {
                *error = "selective_scan: chunk_len too small: L / chunk_len chunks exceed the grid's y limit (65535)";
            }
            return false;
        }
        if (p.workspace_bytes < selectiveScanWorkspaceBytes(p.batch, p.dim, p.dstate, out.nchunks))
        {
            if (error)
            {
                *error = "selective_scan: workspace too small for the requested chunk_len";
            }
            return false;
        }
    }
    else
    {
        int64_t const base_blocks = static_cast<int64_t>(p.batch) * p.ngroups * out.channel_tiles;
        int64_t const wanted = ceilDiv(static_cast<int64_t>(num_sms) * kTargetBlocksPerSM, base_blocks);
        int64_t const most = std::min<int64_t>(ceilDiv(p.seqlen, kMinChunk), kMaxChunks);
        int64_t nchunks = std::max<int64_t>(1, std::min(wanted, most));
        // Fewer chunks rather than fail when the caller gave less workspace.
        uint64_t const fit = p.workspace_bytes / static_cast<uint64_t>(stateBytesPerChunk(p.batch, p.dim, p.dstate));
        if (static_cast<uint64_t>(nchunks) > fit)
        {
            nchunks = fit >= 2 ? static_cast<int64_t>(fit) : 1;
        }
        out.chunk_len = chunkLenFor(p.seqlen, nchunks);
        out.nchunks = static_cast<int32_t>(ceilDiv(p.seqlen, out.chunk_len));
    }
    *layout = out;
    return true;
}

size_t selectiveScanWorkspaceBound(
    int32_t max_batch, int32_t dim, int32_t max_seqlen, int32_t dstate, int32_t ngroups, int32_t num_sms) noexcept
{
    if (max_batch < 1 || dim < 1 || max_seqlen < 1 || dstate < 1 || ngroups < 1 || dim % ngroups != 0)
    {
        return 0;
    }
    int64_t const most = std::min<int64_t>(ceilDiv(max_seqlen, kMinChunk), kMaxChunks);
    if (most <= 1)
    {
        return 0;
    }
    // planScan picks nchunks <= ceil(target / (B * k)), so B * nchunks <= target / k + B, and
    // nchunks <= most: both bounds grow with B and L, so the largest B and L give the bound.
    int32_t const cpg = dim / ngroups;
    int64_t const k = static_cast<int64_t>(ngroups) * ceilDiv(cpg, blockChannels(cpg));
    int64_t const target = static_cast<int64_t>(std::max(num_sms, 1)) * kTargetBlocksPerSM;
    int64_t const total_chunks = std::min<int64_t>(static_cast<int64_t>(max_batch) * most, target / k + max_batch);
    return static_cast<size_t>(total_chunks * stateBytesPerChunk(1, dim, dstate));
}

} // namespace scan
} // namespace mmad
