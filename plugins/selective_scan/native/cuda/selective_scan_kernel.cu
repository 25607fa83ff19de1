// The kernels and the launcher of the chunked selective scan. Each kernel is a thin loop that calls the
// block and thread functions of selective_scan_device.cuh between barriers; host_harness.cu runs the same
// loop on the CPU.
#include "selective_scan.h"
#include "selective_scan_device.cuh"

#include <cuda_runtime.h>

namespace mmad
{
namespace scan
{
namespace
{

// Passes 1 (kFinal = false: chunk end states) and 3 (kFinal = true: scan from the carried state, write y).
// Grid (channel_tiles, chunks, B * G), block (block_channels), dynamic shared memory tileSmemFloats().
template <typename T, bool kFinal>
__global__ void __launch_bounds__(kMaxBlockChannels) chunkScanKernel(SelectiveScanParams p, ScanLayout lay)
{
    extern __shared__ float smem[];
    TileSmem const sm = tileSmem(smem, lay.block_channels);
    BlockSlice const s = blockSlice(p, lay, blockIdx.x, blockIdx.y, blockIdx.z);
    int32_t const tid = threadIdx.x;
    int32_t const nthreads = blockDim.x;

    ChannelState st;
    initChannel(p, lay, s, tid, /*carried=*/kFinal && lay.nchunks > 1, st);
    for (int32_t t0 = s.t_begin; t0 < s.t_end; t0 += kTileT)
    {
        loadTile<T, kFinal>(p, lay, s, t0, tid, nthreads, sm);
        __syncthreads();
        scanTile<kFinal>(s, tid, sm, st);
        __syncthreads();
        if (kFinal)
        {
            storeTile<T>(p, lay, s, t0, tid, nthreads, sm);
            __syncthreads();
        }
    }
    if (!kFinal)
    {
        saveChunkEnd(p, lay, s, tid, st);
    }
}

// Pass 2: one thread per (b, n, d).
__global__ void carryKernel(SelectiveScanParams p, ScanLayout lay)
{
    int64_t const idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (idx < static_cast<int64_t>(p.batch) * p.dstate * p.dim)
    {
        carryChunks(p, lay, idx);
    }
}

template <typename T>
cudaError_t runPasses(SelectiveScanParams const& p, ScanLayout const& lay, cudaStream_t stream)
{
    dim3 const block(lay.block_channels);
    size_t const smem = static_cast<size_t>(tileSmemFloats(lay.block_channels)) * sizeof(float);
    int32_t const bg = p.batch * p.ngroups;
    if (lay.nchunks > 1)
    {
        chunkScanKernel<T, false><<<dim3(lay.channel_tiles, lay.nchunks - 1, bg), block, smem, stream>>>(p, lay);
        int64_t const carriers = static_cast<int64_t>(p.batch) * p.dstate * p.dim;
        int32_t const threads = 256;
        carryKernel<<<static_cast<unsigned>((carriers + threads - 1) / threads), threads, 0, stream>>>(p, lay);
    }
    chunkScanKernel<T, true><<<dim3(lay.channel_tiles, lay.nchunks, bg), block, smem, stream>>>(p, lay);
    return cudaGetLastError();
}

} // namespace

int32_t currentDeviceSMs() noexcept
{
    int device = 0;
    int sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess
        || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
    {
        cudaGetLastError(); // leave no sticky error behind for the caller
        return 0;
    }
    return sms;
}

cudaError_t launchSelectiveScan(SelectiveScanParams const& p, cudaStream_t stream) noexcept
{
    if (selectiveScanCheck(p, /*check_pointers=*/true) != nullptr)
    {
        return cudaErrorInvalidValue;
    }
    int32_t const sms = p.num_sms > 0 ? p.num_sms : currentDeviceSMs();
    if (sms < 1)
    {
        return cudaErrorNoDevice;
    }
    ScanLayout lay;
    if (!planScan(p, sms, &lay, nullptr))
    {
        return cudaErrorInvalidValue;
    }
    return p.io_dtype == ScanDType::kFloat16 ? runPasses<__half>(p, lay, stream) : runPasses<float>(p, lay, stream);
}

} // namespace scan
} // namespace mmad
