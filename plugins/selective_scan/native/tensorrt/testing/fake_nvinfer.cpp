// A stand-in for libnvinfer that provides getPluginRegistry() alone, with a registry that only records
// registrations: tests/plugins/test_tensorrt_plugin.py builds it as libnvinfer.so.<major> to test the plugin library's
// registration on load (MMAD_TRT_REGISTER_ON_LOAD=1) where TensorRT is not installed.
#include <NvInferRuntime.h>

#include <cstring>
#include <vector>

// TensorRT 10's registry still declares the deprecated IPluginV2 methods, which a complete registry must
// implement.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

using namespace nvinfer1;

namespace
{

class RecordingRegistry : public IPluginRegistry
{
public:
#if NV_TENSORRT_MAJOR < 11
    // TensorRT 10's deprecated IPluginV2 methods still hold slots in the virtual table.
    bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override
    {
        return false;
    }
    IPluginCreator* const* getPluginCreatorList(int32_t* const n) const noexcept override
    {
        *n = 0;
        return nullptr;
    }
    IPluginCreator* getPluginCreator(
        AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override
    {
        return nullptr;
    }
    bool deregisterCreator(IPluginCreator const&) noexcept override
    {
        return false;
    }
#endif
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
    bool isParentSearchEnabled() const override
    {
        return false;
    }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(AsciiChar const*) noexcept override
    {
        return nullptr;
    }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const ns) noexcept override
    {
        if (getCreatorIn(creator, ns))
        {
            return false;
        }
        mCreators.push_back(&creator);
        return true;
    }
    IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override
    {
        *n = static_cast<int32_t>(mCreators.size());
        return mCreators.data();
    }
    // Matches on name and namespace only: enough for a library with one version of one plugin.
    IPluginCreatorInterface* getCreator(
        AsciiChar const* const name, AsciiChar const* const, AsciiChar const* const ns) noexcept override
    {
        for (IPluginCreatorInterface* c : mCreators)
        {
            auto* v3 = static_cast<IPluginCreatorV3One*>(c);
            if (std::strcmp(v3->getPluginName(), name) == 0 && std::strcmp(v3->getPluginNamespace(), ns) == 0)
            {
                return c;
            }
        }
        return nullptr;
    }
    bool deregisterCreator(IPluginCreatorInterface const&) noexcept override
    {
        return false;
    }
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override
    {
        return nullptr;
    }
    int32_t releasePluginResource(AsciiChar const*) noexcept override
    {
        return 0;
    }
    // Pure virtual from TensorRT 10.x on (not in 10.3): declared without `override` to compile for both.
    virtual IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept
    {
        return getAllCreators(n);
    }

private:
    bool getCreatorIn(IPluginCreatorInterface& creator, AsciiChar const* ns) noexcept
    {
        return getCreator(static_cast<IPluginCreatorV3One&>(creator).getPluginName(), "", ns) != nullptr;
    }
    std::vector<IPluginCreatorInterface*> mCreators;
};

} // namespace

extern "C" __attribute__((visibility("default"))) IPluginRegistry* getPluginRegistry() noexcept
{
    static RecordingRegistry registry;
    return &registry;
}
