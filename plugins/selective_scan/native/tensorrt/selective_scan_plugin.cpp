// TensorRT SelectiveScan plugin: checks what TensorRT hands over, then calls launchSelectiveScan.
#include "selective_scan_plugin.h"

#include "selective_scan.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <new>
#include <string>

namespace mmad
{
namespace plugin
{
namespace
{

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::TensorFormat;
using Severity = nvinfer1::ILogger::Severity;

constexpr int32_t kInputRanks[kScanNbInputs] = {3, 3, 2, 4, 4, 1, 1};
constexpr char const* kInputNames[kScanNbInputs] = {"u", "delta", "A", "B", "C", "D", "delta_bias"};
constexpr int32_t kU = 0, kDelta = 1, kA = 2, kB = 3, kC = 4, kD = 5, kBias = 6;

// Sizes the contract ties together: in.shape[axis] == ref.shape[ref_axis].
struct SameSize
{
    int32_t in, axis, ref, ref_axis;
};
// clang-format off: one row per input, as the contract's table lists them.
constexpr SameSize kSameSizes[] = {
    {kDelta, 0, kU, 0}, {kDelta, 1, kU, 1}, {kDelta, 2, kU, 2},     // delta like u [B, D, L]
    {kA, 0, kU, 1},                                                 // A [D, N]
    {kB, 0, kU, 0}, {kB, 2, kA, 1}, {kB, 3, kU, 2},                 // B [B, G, N, L]
    {kC, 0, kB, 0}, {kC, 1, kB, 1}, {kC, 2, kB, 2}, {kC, 3, kB, 3}, // C like B
    {kD, 0, kU, 1}, {kBias, 0, kU, 1},                              // D, delta_bias [D]
};
// clang-format on

std::string shapeText(Dims const& d)
{
    std::string s = "[";
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        s += (i ? ", " : "") + (d.d[i] < 0 ? std::string("?") : std::to_string(d.d[i]));
    }
    return s + "]";
}

// "" when the shapes fit the contract, else why not. Sizes < 0 (unknown while building) pass.
std::string checkShapes(Dims const* const dims[kScanNbInputs])
{
    for (int32_t i = 0; i < kScanNbInputs; ++i)
    {
        if (dims[i]->nbDims != kInputRanks[i])
        {
            return std::string("SelectiveScan: input ") + kInputNames[i] + " must have rank "
                + std::to_string(kInputRanks[i]) + ", got shape " + shapeText(*dims[i]);
        }
    }
    for (SameSize const& r : kSameSizes)
    {
        int64_t const a = dims[r.in]->d[r.axis];
        int64_t const b = dims[r.ref]->d[r.ref_axis];
        if (a >= 0 && b >= 0 && a != b)
        {
            return std::string("SelectiveScan: ") + kInputNames[r.in] + ".shape[" + std::to_string(r.axis) + "] is "
                + std::to_string(a) + ", expected " + std::to_string(b) + " (" + kInputNames[r.ref] + ".shape["
                + std::to_string(r.ref_axis) + "])";
        }
    }
    int64_t const n = dims[kA]->d[1];
    if (n >= 0 && (n < 1 || n > scan::kMaxState))
    {
        return "SelectiveScan: N = A.shape[1] must be in 1..16, got " + std::to_string(n);
    }
    int64_t const channels = dims[kU]->d[1];
    int64_t const groups = dims[kB]->d[1];
    if (groups >= 0 && (groups < 1 || (channels >= 0 && channels % groups != 0)))
    {
        return "SelectiveScan: G = B.shape[1] must divide D = u.shape[1], got G = " + std::to_string(groups)
            + ", D = " + std::to_string(channels);
    }
    for (int32_t i = 0; i < kScanNbInputs; ++i)
    {
        for (int32_t k = 0; k < dims[i]->nbDims; ++k)
        {
            if (dims[i]->d[k] > INT32_MAX)
            {
                return std::string("SelectiveScan: ") + kInputNames[i] + " is too large: " + shapeText(*dims[i]);
            }
        }
    }
    return "";
}

bool isIoType(DataType t)
{
    return t == DataType::kFLOAT || t == DataType::kHALF;
}

// "" when the types fit: u float32/float16, delta, B, C and y the same, A, D, delta_bias float32.
std::string checkTypes(DataType const types[kScanNbInputs + kScanNbOutputs])
{
    if (!isIoType(types[kU]))
    {
        return "SelectiveScan: u must be float32 or float16 (got TensorRT DataType "
            + std::to_string(static_cast<int32_t>(types[kU])) + ")";
    }
    for (int32_t i : {kDelta, kB, kC, kScanNbInputs})
    {
        if (types[i] != types[kU])
        {
            return std::string("SelectiveScan: ") + (i == kScanNbInputs ? "y" : kInputNames[i]) + " must have u's type";
        }
    }
    for (int32_t i : {kA, kD, kBias})
    {
        if (types[i] != DataType::kFLOAT)
        {
            return std::string("SelectiveScan: ") + kInputNames[i] + " must be float32";
        }
    }
    return "";
}

std::string checkCounts(int32_t nbInputs, int32_t nbOutputs)
{
    if (nbInputs != kScanNbInputs || nbOutputs != kScanNbOutputs)
    {
        return "SelectiveScan: expects 7 inputs (u, delta, A, B, C, D, delta_bias) and 1 output, got "
            + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs);
    }
    return "";
}

nvinfer1::PluginTensorDesc const& tensorDesc(nvinfer1::DynamicPluginTensorDesc const& d)
{
    return d.desc;
}

nvinfer1::PluginTensorDesc const& tensorDesc(nvinfer1::PluginTensorDesc const& d)
{
    return d;
}

// "" when the counts, shapes and types of the tensors fit the contract, else why not. Desc is what TensorRT
// hands over at build time (DynamicPluginTensorDesc, in configurePlugin) or at run time (PluginTensorDesc,
// in onShapeChange): the same checks serve both.
template <typename Desc>
std::string checkTensors(Desc const* in, int32_t nbInputs, Desc const* out, int32_t nbOutputs)
{
    std::string why = checkCounts(nbInputs, nbOutputs);
    if (!why.empty())
    {
        return why;
    }
    Dims const* dims[kScanNbInputs];
    DataType types[kScanNbInputs + kScanNbOutputs];
    for (int32_t i = 0; i < kScanNbInputs; ++i)
    {
        dims[i] = &tensorDesc(in[i]).dims;
        types[i] = tensorDesc(in[i]).type;
    }
    types[kScanNbInputs] = tensorDesc(out[0]).type;
    why = checkShapes(dims);
    return why.empty() ? checkTypes(types) : why;
}

// Reads an integer field of any integer type; false if it has none.
bool readIntField(PluginField const& f, int64_t* value)
{
    if (f.data == nullptr || f.length < 1)
    {
        return false;
    }
    switch (f.type)
    {
    case PluginFieldType::kINT8: *value = *static_cast<int8_t const*>(f.data); return true;
    case PluginFieldType::kINT16: *value = *static_cast<int16_t const*>(f.data); return true;
    case PluginFieldType::kINT32: *value = *static_cast<int32_t const*>(f.data); return true;
    case PluginFieldType::kINT64: *value = *static_cast<int64_t const*>(f.data); return true;
    default: return false;
    }
}

} // namespace

// ---- SelectiveScanPlugin --------------------------------------------------------------------------------

SelectiveScanPlugin::SelectiveScanPlugin(int32_t delta_softplus, int32_t num_sms) noexcept
    : mDeltaSoftplus(delta_softplus)
    , mNumSMs(num_sms > 0 ? num_sms : scan::currentDeviceSMs())
{
}

int32_t SelectiveScanPlugin::knownSMs() noexcept
{
    if (mNumSMs < 1)
    {
        mNumSMs = scan::currentDeviceSMs();
    }
    return mNumSMs;
}

namespace
{
constexpr char kNoSMs[] = "SelectiveScan: cannot read the GPU's multiprocessor count (cudaGetDevice or "
                          "cudaDeviceGetAttribute failed: is a CUDA device visible?); the plugin's workspace and "
                          "launches are planned for it, so it is not guessed";
} // namespace

nvinfer1::IPluginCapability* SelectiveScanPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* SelectiveScanPlugin::clone() noexcept
{
    auto* copy = new (std::nothrow) SelectiveScanPlugin(mDeltaSoftplus, mNumSMs);
    if (copy == nullptr)
    {
        fail("SelectiveScan: out of memory cloning the plugin");
        return nullptr;
    }
    copy->mErrorRecorder = mErrorRecorder;
    return copy;
}

template <typename Desc>
int32_t SelectiveScanPlugin::checkOrFail(
    char const* where, Desc const* in, int32_t nbInputs, Desc const* out, int32_t nbOutputs) const noexcept
{
    try
    {
        std::string const why = checkTensors(in, nbInputs, out, nbOutputs);
        return why.empty() ? 0 : fail(why);
    }
    catch (std::exception const& e)
    {
        return fail(std::string("SelectiveScan: ") + where + ": " + e.what());
    }
}

int32_t SelectiveScanPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (knownSMs() < 1)
    {
        return fail(kNoSMs, nvinfer1::ErrorCode::kFAILED_INITIALIZATION);
    }
    return checkOrFail("configurePlugin", in, nbInputs, out, nbOutputs);
}

int32_t SelectiveScanPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        std::string const why = checkCounts(nbInputs, nbOutputs);
        if (!why.empty())
        {
            return fail(why);
        }
        if (!isIoType(inputTypes[kU]))
        {
            return fail("SelectiveScan: u must be float32 or float16");
        }
        outputTypes[0] = inputTypes[kU];
        return 0;
    }
    catch (std::exception const& e)
    {
        return fail(std::string("SelectiveScan: getOutputDataTypes: ") + e.what());
    }
}

int32_t SelectiveScanPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    try
    {
        std::string const why = checkCounts(nbInputs, nbOutputs);
        if (!why.empty())
        {
            return fail(why);
        }
        for (int32_t i = 0; i < kScanNbInputs; ++i)
        {
            if (inputs[i].nbDims != kInputRanks[i])
            {
                return fail(std::string("SelectiveScan: input ") + kInputNames[i] + " must have rank "
                    + std::to_string(kInputRanks[i]) + ", got rank " + std::to_string(inputs[i].nbDims));
            }
        }
        outputs[0] = inputs[kU]; // y has u's shape [B, D, L]
        return 0;
    }
    catch (std::exception const& e)
    {
        return fail(std::string("SelectiveScan: getOutputShapes: ") + e.what());
    }
}

bool SelectiveScanPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != kScanNbInputs || nbOutputs != kScanNbOutputs || pos < 0 || pos >= nbInputs + nbOutputs)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& d = inOut[pos].desc;
    if (d.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case kU: return isIoType(d.type);
    case kA:
    case kD:
    case kBias: return d.type == DataType::kFLOAT;
    default: return d.type == inOut[kU].desc.type; // delta, B, C and y follow u
    }
}

int32_t SelectiveScanPlugin::getNbOutputs() const noexcept
{
    return kScanNbOutputs;
}

size_t SelectiveScanPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*outputs*/, int32_t nbOutputs) const noexcept
{
    if (nbInputs != kScanNbInputs || nbOutputs != kScanNbOutputs || inputs[kU].max.nbDims != 3
        || inputs[kA].max.nbDims != 2 || inputs[kB].max.nbDims != 4)
    {
        return 0;
    }
    Dims const& u = inputs[kU].max;
    return scan::selectiveScanWorkspaceBound(static_cast<int32_t>(u.d[0]), static_cast<int32_t>(u.d[1]),
        static_cast<int32_t>(u.d[2]), static_cast<int32_t>(inputs[kA].max.d[1]),
        static_cast<int32_t>(inputs[kB].max.d[1]), mNumSMs);
}

char const* SelectiveScanPlugin::getTimingCacheID() noexcept
{
    try
    {
        mTimingCacheId = std::string(kScanFieldSoftplus) + "=" + std::to_string(mDeltaSoftplus)
            + ";sms=" + std::to_string(mNumSMs);
        return mTimingCacheId.c_str();
    }
    catch (std::exception const&)
    {
        return nullptr; // no timing cache for this plugin then
    }
}

int32_t SelectiveScanPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    return checkOrFail("onShapeChange", in, nbInputs, out, nbOutputs);
}

int32_t SelectiveScanPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs, void* const* outputs, void* workspace,
    cudaStream_t stream) noexcept
{
    try
    {
        if (!isIoType(inputDesc[kU].type) || outputDesc[0].type != inputDesc[kU].type)
        {
            return fail("SelectiveScan: enqueue: u and y must both be float32 or both float16");
        }
        scan::SelectiveScanParams p;
        Dims const& u = inputDesc[kU].dims;
        p.batch = static_cast<int32_t>(u.d[0]);
        p.dim = static_cast<int32_t>(u.d[1]);
        p.seqlen = static_cast<int32_t>(u.d[2]);
        p.dstate = static_cast<int32_t>(inputDesc[kA].dims.d[1]);
        p.ngroups = static_cast<int32_t>(inputDesc[kB].dims.d[1]);
        p.delta_softplus = mDeltaSoftplus;
        p.io_dtype = inputDesc[kU].type == DataType::kHALF ? scan::ScanDType::kFloat16 : scan::ScanDType::kFloat32;
        p.num_sms = mNumSMs;
        p.u = inputs[kU];
        p.delta = inputs[kDelta];
        p.A = static_cast<float const*>(inputs[kA]);
        p.Bmat = inputs[kB];
        p.Cmat = inputs[kC];
        p.Dskip = static_cast<float const*>(inputs[kD]);
        p.delta_bias = static_cast<float const*>(inputs[kBias]);
        p.y = outputs[0];
        // getWorkspaceSize reserved the bound for the profile's largest B and L; the bound at the actual
        // B and L is no larger, and the launcher never plans past workspace_bytes.
        p.workspace = workspace;
        p.workspace_bytes
            = workspace ? scan::selectiveScanWorkspaceBound(p.batch, p.dim, p.seqlen, p.dstate, p.ngroups, mNumSMs) : 0;
        if (char const* why = scan::selectiveScanCheck(p, true))
        {
            return fail(why);
        }
        cudaError_t const err = scan::launchSelectiveScan(p, stream);
        if (err != cudaSuccess)
        {
            return fail(std::string("SelectiveScan: kernel launch failed: ") + cudaGetErrorName(err) + ": "
                    + cudaGetErrorString(err),
                nvinfer1::ErrorCode::kFAILED_EXECUTION);
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        return fail(std::string("SelectiveScan: enqueue: ") + e.what());
    }
}

nvinfer1::IPluginV3* SelectiveScanPlugin::attachToContext(nvinfer1::IPluginResourceContext* context) noexcept
{
    auto* copy = static_cast<SelectiveScanPlugin*>(clone());
    if (copy != nullptr && context != nullptr)
    {
        copy->mErrorRecorder = context->getErrorRecorder();
    }
    return copy;
}

nvinfer1::PluginFieldCollection const* SelectiveScanPlugin::getFieldsToSerialize() noexcept
{
    try
    {
        if (knownSMs() < 1)
        {
            fail(kNoSMs, nvinfer1::ErrorCode::kFAILED_INITIALIZATION);
            return nullptr;
        }
        mSerialFields.clear();
        mSerialFields.emplace_back(kScanFieldSoftplus, &mDeltaSoftplus, PluginFieldType::kINT32, 1);
        mSerialFields.emplace_back(kScanFieldNumSMs, &mNumSMs, PluginFieldType::kINT32, 1);
        mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
        mSerialCollection.fields = mSerialFields.data();
        return &mSerialCollection;
    }
    catch (std::exception const& e)
    {
        fail(std::string("SelectiveScan: getFieldsToSerialize: ") + e.what());
        return nullptr;
    }
}

int32_t SelectiveScanPlugin::fail(std::string msg, nvinfer1::ErrorCode code) const noexcept
{
    try
    {
        mLastError = std::move(msg);
    }
    catch (...)
    {
        // Keep whatever message was there; the error is still signalled by the return value.
    }
    if (mErrorRecorder != nullptr)
    {
        mErrorRecorder->reportError(code, mLastError.c_str());
    }
    logPluginMessage(Severity::kERROR, mLastError.c_str());
    return -1;
}

// ---- SelectiveScanPluginCreator -------------------------------------------------------------------------

SelectiveScanPluginCreator::SelectiveScanPluginCreator() noexcept
{
    try
    {
        mFieldNames.emplace_back(kScanFieldSoftplus, nullptr, PluginFieldType::kINT32, 1);
    }
    catch (...)
    {
        // An empty list still lets TensorRT create the plugin (delta_softplus then defaults to 1).
    }
    mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFieldCollection.fields = mFieldNames.data();
}

nvinfer1::PluginFieldCollection const* SelectiveScanPluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

nvinfer1::IPluginV3* SelectiveScanPluginCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept
{
    try
    {
        int64_t softplus = 1; // the contract's default
        int64_t num_sms = 0;
        int32_t const nb = fc != nullptr && fc->fields != nullptr ? fc->nbFields : 0;
        for (int32_t i = 0; i < nb; ++i)
        {
            PluginField const& f = fc->fields[i];
            char const* const fname = f.name != nullptr ? f.name : "";
            if (std::strcmp(fname, kScanFieldSoftplus) == 0)
            {
                if (!readIntField(f, &softplus) || (softplus != 0 && softplus != 1))
                {
                    logPluginMessage(
                        Severity::kERROR, "SelectiveScan: field delta_softplus must be an integer 0 or 1 (kINT32)");
                    return nullptr;
                }
            }
            else if (std::strcmp(fname, kScanFieldNumSMs) == 0 && phase == nvinfer1::TensorRTPhase::kRUNTIME)
            {
                if (!readIntField(f, &num_sms) || num_sms < 1 || num_sms > INT32_MAX)
                {
                    logPluginMessage(Severity::kERROR, "SelectiveScan: serialised field mmad_num_sms is invalid");
                    return nullptr;
                }
            }
            else if (std::strcmp(fname, "plugin_namespace") == 0 || std::strcmp(fname, "plugin_version") == 0)
            {
                // The ONNX node's lookup attributes (the op contract), should a parser pass them on.
            }
            else
            {
                std::string const msg = std::string("SelectiveScan: ignoring unknown field '") + fname + "'";
                logPluginMessage(Severity::kWARNING, msg.c_str());
            }
        }
        auto* plugin
            = new (std::nothrow) SelectiveScanPlugin(static_cast<int32_t>(softplus), static_cast<int32_t>(num_sms));
        if (plugin == nullptr)
        {
            logPluginMessage(Severity::kERROR, "SelectiveScan: out of memory creating the plugin");
        }
        return plugin;
    }
    catch (std::exception const& e)
    {
        logPluginMessage(Severity::kERROR, e.what());
        return nullptr;
    }
}

} // namespace plugin
} // namespace mmad
