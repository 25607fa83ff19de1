// A C ABI over the launcher, for callers without C++ (Python's ctypes in mmad.plugins.selective_scan.cuda): the
// same launcher the TensorRT plugin calls, on any CUDA GPU, with no TensorRT.
#include "selective_scan.h"

#include <cstddef>
#include <cstring>

#define MMAD_SCAN_CAPI extern "C" __attribute__((visibility("default")))

using mmad::scan::SelectiveScanParams;

// sizeof(SelectiveScanParams), so that a caller can check its copy of the struct.
MMAD_SCAN_CAPI int32_t mmad_selective_scan_params_size()
{
    return static_cast<int32_t>(sizeof(SelectiveScanParams));
}

// Offset of a field by name (-1 if unknown), for the same check.
MMAD_SCAN_CAPI int64_t mmad_selective_scan_params_offset(char const* field)
{
#define MMAD_FIELD(name)                                                                                               \
    if (std::strcmp(field, #name) == 0)                                                                                \
    {                                                                                                                  \
        return static_cast<int64_t>(offsetof(SelectiveScanParams, name));                                              \
    }
    MMAD_FIELD(batch)
    MMAD_FIELD(dim)
    MMAD_FIELD(seqlen)
    MMAD_FIELD(dstate)
    MMAD_FIELD(ngroups)
    MMAD_FIELD(delta_softplus)
    MMAD_FIELD(io_dtype)
    MMAD_FIELD(chunk_len)
    MMAD_FIELD(num_sms)
    MMAD_FIELD(reserved)
    MMAD_FIELD(u)
    MMAD_FIELD(delta)
    MMAD_FIELD(A)
    MMAD_FIELD(Bmat)
    MMAD_FIELD(Cmat)
    MMAD_FIELD(Dskip)
    MMAD_FIELD(delta_bias)
    MMAD_FIELD(y)
    MMAD_FIELD(workspace)
    MMAD_FIELD(workspace_bytes)
#undef MMAD_FIELD
    return -1;
}

// nullptr when the problem is valid, else why not.
MMAD_SCAN_CAPI char const* mmad_selective_scan_check(SelectiveScanParams const* p)
{
    return p ? mmad::scan::selectiveScanCheck(*p, true) : "selective_scan: null params";
}

// Workspace bytes the launch of *p will use when given them (num_sms 0: the current device's).
MMAD_SCAN_CAPI size_t mmad_selective_scan_workspace_size(SelectiveScanParams const* p)
{
    if (!p)
    {
        return 0;
    }
    SelectiveScanParams q = *p;
    q.workspace_bytes = static_cast<size_t>(-1); // ask for what automatic chunking wants
    int32_t const sms = q.num_sms > 0 ? q.num_sms : mmad::scan::currentDeviceSMs();
    mmad::scan::ScanLayout lay;
    if (!mmad::scan::planScan(q, sms, &lay, nullptr))
    {
        return 0;
    }
    return mmad::scan::selectiveScanWorkspaceBytes(q.batch, q.dim, q.dstate, lay.nchunks);
}

// The launch layout for *p given its workspace_bytes (num_sms 0: the current device's): out[0..3] =
// chunk_len, nchunks, block_channels, channel_tiles. Returns 0, or -1 when *p cannot be planned.
MMAD_SCAN_CAPI int32_t mmad_selective_scan_layout(SelectiveScanParams const* p, int32_t* out)
{
    int32_t const sms = p && p->num_sms > 0 ? p->num_sms : mmad::scan::currentDeviceSMs();
    mmad::scan::ScanLayout lay;
    if (!p || !out || !mmad::scan::planScan(*p, sms, &lay, nullptr))
    {
        return -1;
    }
    out[0] = lay.chunk_len;
    out[1] = lay.nchunks;
    out[2] = lay.block_channels;
    out[3] = lay.channel_tiles;
    return 0;
}

// Launch on `stream` (a cudaStream_t; nullptr for the legacy default stream). Returns a cudaError_t.
MMAD_SCAN_CAPI int32_t mmad_selective_scan_launch(SelectiveScanParams const* p, void* stream)
{
    if (!p)
    {
        return static_cast<int32_t>(cudaErrorInvalidValue);
    }
    return static_cast<int32_t>(mmad::scan::launchSelectiveScan(*p, static_cast<cudaStream_t>(stream)));
}

MMAD_SCAN_CAPI char const* mmad_selective_scan_error_string(int32_t code)
{
    return cudaGetErrorString(static_cast<cudaError_t>(code));
}
