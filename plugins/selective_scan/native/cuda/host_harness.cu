// Host harness: runs the chunked selective scan of the CUDA kernel on the CPU, by calling the same block
// and thread functions (selective_scan_device.cuh) over every block, thread and pass in the order the
// kernels' barriers allow. Compiled by nvcc, needs no GPU: this is how the kernel's logic is tested in CI.
//
// usage: selective_scan_host_harness DIR B D L N G SOFTPLUS DTYPE CHUNK_LEN NUM_SMS
//   DIR holds raw little-endian arrays u.bin delta.bin B.bin C.bin (DTYPE: f32 or f16) and A.bin D.bin
//   delta_bias.bin (float32), shaped as in selective_scan.h; y.bin (DTYPE) is written there.
//   CHUNK_LEN 0 lets the planner choose for NUM_SMS multiprocessors, as the launcher would.
// Prints one line "layout chunk_len=.. nchunks=.. block_channels=.. channel_tiles=.." on success.
#define MMAD_SCAN_NO_LAUNCHER
#include "selective_scan.h"
#include "selective_scan_device.cuh"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using namespace mmad::scan;

namespace
{

struct Inputs
{
    std::vector<unsigned char> u, delta, Bmat, Cmat;
    std::vector<float> A, Dskip, delta_bias;
};

// Reads exactly `bytes` bytes of DIR/name into out; false (after saying why) otherwise.
bool readExact(std::string const& dir, char const* name, size_t bytes, void* out)
{
    std::string const path = dir + "/" + name;
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f)
    {
        std::fprintf(stderr, "host_harness: cannot open %s\n", path.c_str());
        return false;
    }
    size_t const got = std::fread(out, 1, bytes, f);
    bool const extra = std::fgetc(f) != EOF;
    std::fclose(f);
    if (got != bytes || extra)
    {
        std::fprintf(stderr, "host_harness: %s must hold exactly %zu bytes\n", path.c_str(), bytes);
        return false;
    }
    return true;
}

bool readInputs(std::string const& dir, SelectiveScanParams const& p, size_t elem, Inputs& in)
{
    size_t const bdl = static_cast<size_t>(p.batch) * p.dim * p.seqlen;
    size_t const bgnl = static_cast<size_t>(p.batch) * p.ngroups * p.dstate * p.seqlen;
    in.u.resize(bdl * elem);
    in.delta.resize(bdl * elem);
    in.Bmat.resize(bgnl * elem);
    in.Cmat.resize(bgnl * elem);
    in.A.resize(static_cast<size_t>(p.dim) * p.dstate);
    in.Dskip.resize(p.dim);
    in.delta_bias.resize(p.dim);
    return readExact(dir, "u.bin", in.u.size(), in.u.data())
        && readExact(dir, "delta.bin", in.delta.size(), in.delta.data())
        && readExact(dir, "B.bin", in.Bmat.size(), in.Bmat.data())
        && readExact(dir, "C.bin", in.Cmat.size(), in.Cmat.data())
        && readExact(dir, "A.bin", in.A.size() * 4, in.A.data())
        && readExact(dir, "D.bin", in.Dskip.size() * 4, in.Dskip.data())
        && readExact(dir, "delta_bias.bin", in.delta_bias.size() * 4, in.delta_bias.data());
}

// One launch of chunkScanKernel<T, kFinal> with grid (channel_tiles, chunks, B * G): every block in turn,
// and inside a block every thread between two barriers, exactly as the kernel sequences them.
template <typename T, bool kFinal>
void emulateChunkPass(SelectiveScanParams const& p, ScanLayout const& lay, int32_t chunks)
{
    int32_t const nthreads = lay.block_channels;
    std::vector<float> smem(tileSmemFloats(lay.block_channels));
    std::vector<ChannelState> st(nthreads);
    TileSmem const sm = tileSmem(smem.data(), lay.block_channels);
    for (int32_t bg = 0; bg < p.batch * p.ngroups; ++bg)
    {
        for (int32_t chunk = 0; chunk < chunks; ++chunk)
        {
            for (int32_t tile = 0; tile < lay.channel_tiles; ++tile)
            {
                BlockSlice const s = blockSlice(p, lay, tile, chunk, bg);
                for (int32_t tid = 0; tid < nthreads; ++tid)
                {
                    initChannel(p, lay, s, tid, kFinal && lay.nchunks > 1, st[tid]);
                }
                for (int32_t t0 = s.t_begin; t0 < s.t_end; t0 += kTileT)
                {
                    for (int32_t tid = 0; tid < nthreads; ++tid)
                    {
                        loadTile<T, kFinal>(p, lay, s, t0, tid, nthreads, sm);
                    }
                    for (int32_t tid = 0; tid < nthreads; ++tid)
                    {
                        scanTile<kFinal>(s, tid, sm, st[tid]);
                    }
                    if (kFinal)
                    {
                        for (int32_t tid = 0; tid < nthreads; ++tid)
                        {
                            storeTile<T>(p, lay, s, t0, tid, nthreads, sm);
                        }
                    }
                }
                if (!kFinal)
                {
                    for (int32_t tid = 0; tid < nthreads; ++tid)
                    {
                        saveChunkEnd(p, lay, s, tid, st[tid]);
                    }
                }
            }
        }
    }
}

// The launcher's three passes (selective_scan_kernel.cu, runPasses).
template <typename T>
void emulateLaunch(SelectiveScanParams const& p, ScanLayout const& lay)
{
    if (lay.nchunks > 1)
    {
        emulateChunkPass<T, false>(p, lay, lay.nchunks - 1);
        int64_t const carriers = static_cast<int64_t>(p.batch) * p.dstate * p.dim;
        for (int64_t idx = 0; idx < carriers; ++idx)
        {
            carryChunks(p, lay, idx);
        }
    }
    emulateChunkPass<T, true>(p, lay, lay.nchunks);
}

int usage()
{
    std::fprintf(
        stderr, "usage: selective_scan_host_harness DIR B D L N G SOFTPLUS(0|1) DTYPE(f32|f16) CHUNK_LEN NUM_SMS\n");
    return 2;
}

// The problem of the command line (sizes, softplus, I/O type, chunk length) and the multiprocessors to plan for;
// false (after saying why) for a bad line.
bool parseArgs(int argc, char** argv, SelectiveScanParams& p, int32_t& num_sms)
{
    if (argc != 11)
    {
        usage();
        return false;
    }
    std::string const dtype = argv[8];
    if (dtype != "f32" && dtype != "f16")
    {
        std::fprintf(stderr, "host_harness: DTYPE must be f32 or f16, got %s\n", dtype.c_str());
        return false;
    }
    p.batch = std::atoi(argv[2]);
    p.dim = std::atoi(argv[3]);
    p.seqlen = std::atoi(argv[4]);
    p.dstate = std::atoi(argv[5]);
    p.ngroups = std::atoi(argv[6]);
    p.delta_softplus = std::atoi(argv[7]);
    p.io_dtype = dtype == "f16" ? ScanDType::kFloat16 : ScanDType::kFloat32;
    p.chunk_len = std::atoi(argv[9]);
    num_sms = std::atoi(argv[10]);
    return true;
}

// Points p at the inputs, y and the workspace.
void bindBuffers(SelectiveScanParams& p, Inputs& in, std::vector<unsigned char>& y, std::vector<float>& workspace)
{
    p.u = in.u.data();
    p.delta = in.delta.data();
    p.A = in.A.data();
    p.Bmat = in.Bmat.data();
    p.Cmat = in.Cmat.data();
    p.Dskip = in.Dskip.data();
    p.delta_bias = in.delta_bias.data();
    p.y = y.data();
    p.workspace = workspace.empty() ? nullptr : workspace.data();
    p.workspace_bytes = workspace.size() * sizeof(float);
}

bool writeOutput(std::string const& dir, std::vector<unsigned char> const& y)
{
    std::string const out = dir + "/y.bin";
    FILE* f = std::fopen(out.c_str(), "wb");
    if (!f || std::fwrite(y.data(), 1, y.size(), f) != y.size())
    {
        std::fprintf(stderr, "host_harness: cannot write %s\n", out.c_str());
        return false;
    }
    std::fclose(f);
    return true;
}

} // namespace

int main(int argc, char** argv)
{
    SelectiveScanParams p;
    int32_t num_sms = 0;
    if (!parseArgs(argc, argv, p, num_sms))
    {
        return 2;
    }
    std::string const dir = argv[1];
    char const* error = nullptr;
    ScanLayout lay;
    SelectiveScanParams want = p;
    want.workspace_bytes = static_cast<size_t>(-1);
    if (!planScan(want, num_sms, &lay, &error))
    {
        std::fprintf(stderr, "host_harness: %s\n", error);
        return 2;
    }
    bool const half = p.io_dtype == ScanDType::kFloat16;
    size_t const elem = half ? sizeof(__half) : sizeof(float);
    Inputs in;
    if (!readInputs(dir, p, elem, in))
    {
        return 2;
    }
    std::vector<unsigned char> y(static_cast<size_t>(p.batch) * p.dim * p.seqlen * elem);
    std::vector<float> workspace(selectiveScanWorkspaceBytes(p.batch, p.dim, p.dstate, lay.nchunks) / sizeof(float));
    bindBuffers(p, in, y, workspace);
    // Plan again with the workspace actually given, as the launcher does.
    if (selectiveScanCheck(p, true) || !planScan(p, num_sms, &lay, &error))
    {
        std::fprintf(stderr, "host_harness: %s\n", error ? error : selectiveScanCheck(p, true));
        return 2;
    }
    if (half)
    {
        emulateLaunch<__half>(p, lay);
    }
    else
    {
        emulateLaunch<float>(p, lay);
    }
    if (!writeOutput(dir, y))
    {
        return 1;
    }
    std::printf("layout chunk_len=%d nchunks=%d block_channels=%d channel_tiles=%d\n", lay.chunk_len, lay.nchunks,
        lay.block_channels, lay.channel_tiles);
    return 0;
}
