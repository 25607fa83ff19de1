// TensorRT IPluginV3 adapter over launchSelectiveScan (selective_scan.h): the SelectiveScan op of
// the op contract (plugins/selective_scan/README.md), name/version/namespace from plugin_info.h. Written against the
// IPluginV3 API that TensorRT 10.0 introduced and 11.x keeps, so one source serves JetPack 6 (TensorRT
// 10.3) and TensorRT 11. Every override is noexcept; failures are reported through TensorRT's error
// recorder (after attachToContext) and its logger (the library's ILoggerFinder), and signalled by the
// return value, never by an exception or a crash.
#pragma once

#include "plugin_info.h"

#include <NvInferRuntime.h>

#include <string>
#include <vector>

namespace mmad
{
namespace plugin
{

// Where the plugin's messages go: TensorRT's logger once the library knows it (setLoggerFinder), else
// stderr for errors and warnings. Defined in plugin_library.cpp.
void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;
void logPluginMessage(nvinfer1::ILogger::Severity severity, char const* msg) noexcept;

// The op's identity (plugin_info.h) for one of TensorRT's interfaces that ask for it: the plugin's core
// capability and the creator answer the same three questions the same way.
template <typename Interface>
class ScanIdentity : public Interface
{
public:
    char const* getPluginName() const noexcept override
    {
        return kScanPluginName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return kScanPluginVersion;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return kScanPluginNamespace;
    }
};

class SelectiveScanPlugin : public nvinfer1::IPluginV3,
                            public ScanIdentity<nvinfer1::IPluginV3OneCore>,
                            public nvinfer1::IPluginV3OneBuild,
                            public nvinfer1::IPluginV3OneRuntime
{
public:
    // num_sms: multiprocessors the launches are planned for (0: the current device's, asked again until known;
    // a plugin that cannot learn it refuses to be configured or serialised rather than plan for a made-up count).
    SelectiveScanPlugin(int32_t delta_softplus, int32_t num_sms) noexcept;
    ~SelectiveScanPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore: the name, version and namespace come from ScanIdentity.

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
        int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    char const* getTimingCacheID() noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    int32_t deltaSoftplus() const noexcept
    {
        return mDeltaSoftplus;
    }

private:
    // Reports msg to the error recorder (when attached to a context) with `code`, and to the logger; returns -1.
    int32_t fail(std::string msg, nvinfer1::ErrorCode code = nvinfer1::ErrorCode::kINVALID_ARGUMENT) const noexcept;
    // The multiprocessor count, asking the current device while it is unknown; 0 when there is none.
    int32_t knownSMs() noexcept;
    // 0 when the tensors TensorRT describes (at build or at run time) fit the contract, else fail(why);
    // `where` names the caller in messages about an unexpected exception.
    template <typename Desc>
    int32_t checkOrFail(
        char const* where, Desc const* in, int32_t nbInputs, Desc const* out, int32_t nbOutputs) const noexcept;

    int32_t mDeltaSoftplus;
    int32_t mNumSMs;
    nvinfer1::IErrorRecorder* mErrorRecorder{nullptr};
    std::vector<nvinfer1::PluginField> mSerialFields;
    nvinfer1::PluginFieldCollection mSerialCollection{};
    std::string mTimingCacheId;
    mutable std::string mLastError; // the recorder may keep the pointer it is given
};

class SelectiveScanPluginCreator : public ScanIdentity<nvinfer1::IPluginCreatorV3One>
{
public:
    SelectiveScanPluginCreator() noexcept;
    ~SelectiveScanPluginCreator() override = default;

    // The name, version and namespace come from ScanIdentity.
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    // nullptr (with the reason logged) for a bad field; unknown fields are ignored with a warning.
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

} // namespace plugin
} // namespace mmad
