// Loads the plugin library the way TensorRT's loadLibrary does (dlopen, setLoggerFinder, getCreators) and
// drives the creator and the plugin through their interfaces with no TensorRT runtime present: what a
// machine with only TensorRT's headers can check. tests/plugins/test_tensorrt_plugin.py runs it.
//
// usage: mmad_plugin_probe LIBRARY [--expect-registered]
// Prints "name=.. version=.. namespace=.. fields=.." and one "ok CHECK" or "FAIL CHECK: why" per check;
// the exit status is the number of failed checks. --expect-registered also checks that loading the library
// registered its creator with the process's libnvinfer registry (MMAD_TRT_REGISTER_ON_LOAD=1).
#include <NvInferRuntime.h>

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

int gFailures = 0;

void check(bool ok, char const* what, std::string const& why = "")
{
    if (ok)
    {
        std::printf("ok %s\n", what);
    }
    else
    {
        ++gFailures;
        std::printf("FAIL %s: %s\n", what, why.c_str());
    }
}

// Keeps what the plugin logs, so the checks can see that errors were reported.
class CapturingLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            messages.emplace_back(msg);
        }
    }
    bool saw(char const* needle) const
    {
        for (auto const& m : messages)
        {
            if (m.find(needle) != std::string::npos)
            {
                return true;
            }
        }
        return false;
    }
    std::vector<std::string> messages;
};

class Finder : public ILoggerFinder
{
public:
    explicit Finder(ILogger* logger)
        : mLogger(logger)
    {
    }
    ILogger* findLogger() override
    {
        return mLogger;
    }

private:
    ILogger* mLogger;
};

class Recorder : public IErrorRecorder
{
public:
    int32_t getNbErrors() const noexcept override
    {
        return static_cast<int32_t>(errors.size());
    }
    ErrorCode getErrorCode(int32_t i) const noexcept override
    {
        return errors[i].first;
    }
    ErrorDesc getErrorDesc(int32_t i) const noexcept override
    {
        return errors[i].second.c_str();
    }
    bool hasOverflowed() const noexcept override
    {
        return false;
    }
    void clear() noexcept override
    {
        errors.clear();
    }
    bool reportError(ErrorCode code, ErrorDesc desc) noexcept override
    {
        errors.emplace_back(code, desc);
        return true;
    }
    RefCount incRefCount() noexcept override
    {
        return 1;
    }
    RefCount decRefCount() noexcept override
    {
        return 0;
    }
    std::vector<std::pair<ErrorCode, std::string>> errors;
};

class ResourceContext : public IPluginResourceContext
{
public:
    explicit ResourceContext(IErrorRecorder* recorder)
        : mRecorder(recorder)
    {
    }
    IGpuAllocator* getGpuAllocator() const noexcept override
    {
        return nullptr;
    }
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return mRecorder;
    }

private:
    IErrorRecorder* mRecorder;
};

Dims dims(std::initializer_list<int64_t> v)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(v.size());
    int32_t i = 0;
    for (int64_t x : v)
    {
        d.d[i++] = x;
    }
    return d;
}

// The contract's seven inputs and one output for B, D, L, N, G, with u/delta/B/C/y of type t.
std::vector<PluginTensorDesc> problem(int64_t B, int64_t D, int64_t L, int64_t N, int64_t G, DataType t)
{
    std::vector<PluginTensorDesc> io(8);
    Dims const shapes[8] = {dims({B, D, L}), dims({B, D, L}), dims({D, N}), dims({B, G, N, L}), dims({B, G, N, L}),
        dims({D}), dims({D}), dims({B, D, L})};
    DataType const types[8] = {t, t, DataType::kFLOAT, t, t, DataType::kFLOAT, DataType::kFLOAT, t};
    for (int32_t i = 0; i < 8; ++i)
    {
        io[i].dims = shapes[i];
        io[i].type = types[i];
        io[i].format = TensorFormat::kLINEAR;
        io[i].scale = 1.f;
    }
    return io;
}

std::vector<DynamicPluginTensorDesc> dynamic(std::vector<PluginTensorDesc> const& io)
{
    std::vector<DynamicPluginTensorDesc> out(io.size());
    for (size_t i = 0; i < io.size(); ++i)
    {
        out[i].desc = io[i];
        out[i].min = out[i].opt = out[i].max = io[i].dims;
    }
    return out;
}

// delta_softplus of a plugin: from its serialised fields, or (a build-phase plugin on a machine without a device,
// which serialises nothing) from its timing-cache ID, "delta_softplus=<v>;sms=<n>".
int32_t softplusOf(IPluginV3* plugin)
{
    auto* rt = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* fc = rt->getFieldsToSerialize();
    for (int32_t i = 0; fc && i < fc->nbFields; ++i)
    {
        if (std::strcmp(fc->fields[i].name, "delta_softplus") == 0)
        {
            return *static_cast<int32_t const*>(fc->fields[i].data);
        }
    }
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    char const* id = fc == nullptr ? build->getTimingCacheID() : nullptr;
    char const* key = "delta_softplus=";
    return id && std::strncmp(id, key, std::strlen(key)) == 0 ? id[std::strlen(key)] - '0' : -1;
}

// dlopen, setLoggerFinder, getCreators, as TensorRT's loadLibrary does; the library's one creator, or nullptr
// (after saying why) when the library cannot serve as a plugin library at all.
IPluginCreatorInterface* loadCreator(char const* path, ILoggerFinder* finder)
{
    void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib)
    {
        std::printf("FAIL dlopen: %s\n", dlerror());
        return nullptr;
    }
    using SetFinder = void (*)(ILoggerFinder*);
    using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
    auto setFinder = reinterpret_cast<SetFinder>(dlsym(lib, "setLoggerFinder"));
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    check(setFinder != nullptr, "exports setLoggerFinder");
    check(getCreators != nullptr, "exports getCreators");
    if (!setFinder || !getCreators)
    {
        return nullptr;
    }
    setFinder(finder);
    int32_t nb = 0;
    IPluginCreatorInterface* const* creators = getCreators(nb);
    check(nb == 1 && creators && creators[0], "one creator");
    return nb >= 1 && creators ? creators[0] : nullptr;
}

// With MMAD_TRT_REGISTER_ON_LOAD=1 the library registered `creator` with the process's libnvinfer registry.
void checkRegisteredOnLoad(IPluginCreatorInterface* creator)
{
    std::string const soname = "libnvinfer.so." + std::to_string(NV_TENSORRT_MAJOR);
    void* nvinfer = dlopen(soname.c_str(), RTLD_LAZY | RTLD_NOLOAD);
    using GetRegistry = IPluginRegistry* (*)();
    auto getRegistry = nvinfer ? reinterpret_cast<GetRegistry>(dlsym(nvinfer, "getPluginRegistry")) : nullptr;
    IPluginRegistry* registry = getRegistry ? getRegistry() : nullptr;
    check(registry != nullptr, "a libnvinfer with a registry is loaded", soname);
    check(registry && registry->getCreator("SelectiveScan", "1", "mmad") == creator, "creator registered on load");
}

// Prints the line the tests compare with the contract: name, version, namespace and the fields with their types.
void printIdentity(IPluginCreatorV3One* creator)
{
    PluginFieldCollection const* names = creator->getFieldNames();
    std::string fields;
    for (int32_t i = 0; names && i < names->nbFields; ++i)
    {
        fields += std::string(i ? "," : "") + names->fields[i].name + ":"
            + std::to_string(static_cast<int>(names->fields[i].type));
    }
    std::printf("name=%s version=%s namespace=%s fields=%s\n", creator->getPluginName(), creator->getPluginVersion(),
        creator->getPluginNamespace(), fields.c_str());
}

// The plugin's capability interfaces; the core one agrees with the creator.
void checkCapabilities(IPluginV3* plugin, IPluginCreatorV3One* creator)
{
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    check(core && build && runtime, "capability interfaces");
    check(core && std::strcmp(core->getPluginName(), creator->getPluginName()) == 0
            && std::strcmp(core->getPluginVersion(), creator->getPluginVersion()) == 0
            && std::strcmp(core->getPluginNamespace(), creator->getPluginNamespace()) == 0,
        "plugin and creator agree on name/version/namespace");
}

// Output types: y follows u (fp32 or fp16); an int8 u is refused and logged.
void checkOutputTypes(IPluginV3OneBuild* build, CapturingLogger& logger)
{
    check(build->getNbOutputs() == 1, "one output");
    DataType in_f[7] = {DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT,
        DataType::kFLOAT, DataType::kFLOAT};
    DataType in_h[7] = {DataType::kHALF, DataType::kHALF, DataType::kFLOAT, DataType::kHALF, DataType::kHALF,
        DataType::kFLOAT, DataType::kFLOAT};
    DataType out_t = DataType::kINT32;
    check(build->getOutputDataTypes(&out_t, 1, in_f, 7) == 0 && out_t == DataType::kFLOAT, "output type fp32");
    check(build->getOutputDataTypes(&out_t, 1, in_h, 7) == 0 && out_t == DataType::kHALF, "output type fp16");
    DataType in_bad[7] = {DataType::kINT8, DataType::kINT8, DataType::kFLOAT, DataType::kINT8, DataType::kINT8,
        DataType::kFLOAT, DataType::kFLOAT};
    logger.messages.clear();
    check(build->getOutputDataTypes(&out_t, 1, in_bad, 7) != 0 && logger.saw("float32 or float16"),
        "int8 input rejected and logged");
}

// Formats: fp32 and fp16 linear accepted, mixed or non-linear refused.
void checkFormats(IPluginV3OneBuild* build)
{
    for (DataType t : {DataType::kFLOAT, DataType::kHALF})
    {
        auto io = dynamic(problem(1, 256, 64, 16, 8, t));
        bool all = true;
        for (int32_t pos = 0; pos < 8; ++pos)
        {
            all = all && build->supportsFormatCombination(pos, io.data(), 7, 1);
        }
        check(all, t == DataType::kFLOAT ? "formats fp32 linear" : "formats fp16 linear");
    }
    auto io = dynamic(problem(1, 256, 64, 16, 8, DataType::kHALF));
    io[2].desc.type = DataType::kHALF; // A must stay float32
    check(!build->supportsFormatCombination(2, io.data(), 7, 1), "fp16 A refused");
    io = dynamic(problem(1, 256, 64, 16, 8, DataType::kFLOAT));
    io[1].desc.type = DataType::kHALF; // delta must follow u
    check(!build->supportsFormatCombination(1, io.data(), 7, 1), "mixed u/delta types refused");
    io = dynamic(problem(1, 256, 64, 16, 8, DataType::kFLOAT));
    io[0].desc.format = TensorFormat::kHWC8;
    check(!build->supportsFormatCombination(0, io.data(), 7, 1), "non-linear format refused");
    check(!build->supportsFormatCombination(8, io.data(), 7, 1), "position past the outputs refused");
}

// configurePlugin: a dynamic (B, L) profile passes; inconsistent shapes fail with a message.
void checkConfigure(IPluginV3OneBuild* build, CapturingLogger& logger)
{
    auto io = dynamic(problem(-1, 256, -1, 16, 8, DataType::kFLOAT));
    check(build->configurePlugin(io.data(), 7, io.data() + 7, 1) == 0, "configure dynamic B and L");
    io = dynamic(problem(1, 256, 64, 16, 8, DataType::kFLOAT));
    io[3].desc.dims.d[3] = 65; // B's L differs from u's
    logger.messages.clear();
    check(build->configurePlugin(io.data(), 7, io.data() + 7, 1) != 0 && logger.saw("B.shape[3] is 65"),
        "configure rejects mismatched L and logs it");
    io = dynamic(problem(1, 256, 64, 32, 8, DataType::kFLOAT));
    logger.messages.clear();
    check(build->configurePlugin(io.data(), 7, io.data() + 7, 1) != 0 && logger.saw("1..16"),
        "configure rejects N = 32 and logs it");
    io = dynamic(problem(1, 250, 64, 16, 8, DataType::kFLOAT));
    logger.messages.clear();
    check(build->configurePlugin(io.data(), 7, io.data() + 7, 1) != 0 && logger.saw("must divide"),
        "configure rejects G not dividing D");
    logger.messages.clear();
    check(build->configurePlugin(io.data(), 6, io.data() + 7, 1) != 0 && logger.saw("7 inputs"),
        "configure rejects 6 inputs");
}

// Workspace: none for one chunk (L = 64), some for a long sequence, bounded for the largest profile.
void checkWorkspace(IPluginV3OneBuild* build)
{
    auto shortL = dynamic(problem(1, 256, 64, 16, 8, DataType::kFLOAT));
    auto longL = dynamic(problem(1, 256, 4096, 16, 8, DataType::kFLOAT));
    size_t const ws_short = build->getWorkspaceSize(shortL.data(), 7, shortL.data() + 7, 1);
    size_t const ws_long = build->getWorkspaceSize(longL.data(), 7, longL.data() + 7, 1);
    std::printf("workspace L=64: %zu, L=4096: %zu\n", ws_short, ws_long);
    check(ws_short == 0, "no workspace for a single chunk");
    check(ws_long > 0 && ws_long <= size_t{64} * 256 * 17 * 4, "bounded workspace for L = 4096");
}

// A plugin attached to a context: shape changes are checked, errors reach the context's error recorder.
void checkAttached(IPluginV3* attached, Recorder& recorder)
{
    auto* rt = static_cast<IPluginV3OneRuntime*>(attached->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    auto good = problem(2, 256, 100, 16, 8, DataType::kHALF);
    check(rt->onShapeChange(good.data(), 7, good.data() + 7, 1) == 0, "onShapeChange accepts B=2, L=100 fp16");
    auto bad = problem(2, 256, 100, 16, 8, DataType::kHALF);
    bad[4].dims.d[1] = 4; // C's G differs from B's
    check(rt->onShapeChange(bad.data(), 7, bad.data() + 7, 1) != 0 && recorder.getNbErrors() == 1
            && recorder.getErrorCode(0) == ErrorCode::kINVALID_ARGUMENT,
        "onShapeChange error reaches the error recorder",
        recorder.getNbErrors() ? recorder.getErrorDesc(0) : "no error recorded");
    // enqueue with null buffers: refused with a message, no crash.
    std::vector<void const*> ins(7, nullptr);
    std::vector<void*> outs(1, nullptr);
    recorder.clear();
    check(rt->enqueue(good.data(), good.data() + 7, ins.data(), outs.data(), nullptr, nullptr) != 0
            && recorder.getNbErrors() == 1 && recorder.getErrorCode(0) == ErrorCode::kINVALID_ARGUMENT,
        "enqueue with null buffers reports an invalid argument");
    int device_count = 0;
    if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0)
    {
        // No device: the launch itself fails, which is an execution failure, not a bad argument.
        static float dummy[1];
        std::vector<void const*> fakeIns(7, dummy);
        std::vector<void*> fakeOuts(1, dummy);
        recorder.clear();
        check(rt->enqueue(good.data(), good.data() + 7, fakeIns.data(), fakeOuts.data(), nullptr, nullptr) != 0
                && recorder.getNbErrors() == 1 && recorder.getErrorCode(0) == ErrorCode::kFAILED_EXECUTION,
            "a failed launch reports an execution failure",
            recorder.getNbErrors() ? recorder.getErrorDesc(0) : "no error recorded");
    }
}

// The multiprocessor count a plugin built here serialises: the device's, or none at all (with an error) when no
// device can be asked; never a made-up count. `sms` is the device's count, 0 without a device.
void checkSerialisedSMs(IPluginV3* plugin, CapturingLogger& logger, int32_t sms)
{
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    logger.messages.clear();
    PluginFieldCollection const* fc = runtime->getFieldsToSerialize();
    if (sms < 1)
    {
        check(fc == nullptr && logger.saw("multiprocessor count"), "no device: nothing serialised, error logged");
        auto io = dynamic(problem(1, 256, 64, 16, 8, DataType::kFLOAT));
        logger.messages.clear();
        check(build->configurePlugin(io.data(), 7, io.data() + 7, 1) != 0 && logger.saw("multiprocessor count"),
            "no device: configurePlugin refused, error logged");
        return;
    }
    int64_t serialised = -1;
    for (int32_t i = 0; fc && i < fc->nbFields; ++i)
    {
        if (std::strcmp(fc->fields[i].name, "mmad_num_sms") == 0)
        {
            serialised = *static_cast<int32_t const*>(fc->fields[i].data);
        }
    }
    check(serialised == sms, "the device's multiprocessor count serialised", std::to_string(serialised));
}

// Runtime: round trip through the serialised fields, then the attached plugin's checks.
void checkRuntime(IPluginCreatorV3One* creator, IPluginV3* plugin)
{
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* ser = runtime->getFieldsToSerialize();
    IPluginV3* restored = ser ? creator->createPlugin("scan", ser, TensorRTPhase::kRUNTIME) : nullptr;
    check(restored != nullptr && softplusOf(restored) == 0, "serialised fields round trip");
    Recorder recorder;
    ResourceContext ctx(&recorder);
    IPluginV3* attached = restored
        ? static_cast<IPluginV3OneRuntime*>(restored->getCapabilityInterface(PluginCapabilityType::kRUNTIME))
              ->attachToContext(&ctx)
        : nullptr;
    check(attached != nullptr, "attachToContext");
    if (attached)
    {
        checkAttached(attached, recorder);
        delete attached;
    }
    delete restored;
}

// Creator: bad field values are refused and logged; unknown fields are ignored with a warning.
void checkCreatorFields(IPluginCreatorV3One* creator, CapturingLogger& logger)
{
    int32_t const three = 3;
    PluginField bad("delta_softplus", &three, PluginFieldType::kINT32, 1);
    PluginFieldCollection fcBad{1, &bad};
    logger.messages.clear();
    IPluginV3* none = creator->createPlugin("scan", &fcBad, TensorRTPhase::kBUILD);
    check(none == nullptr && logger.saw("0 or 1"), "delta_softplus = 3 refused and logged");
    char const ns[] = "mmad";
    int32_t const answer = 42;
    PluginField extra[2] = {PluginField("plugin_namespace", ns, PluginFieldType::kCHAR, 5),
        PluginField("colour", &answer, PluginFieldType::kINT32, 1)};
    PluginFieldCollection fcExtra{2, extra};
    logger.messages.clear();
    IPluginV3* dflt = creator->createPlugin("scan", &fcExtra, TensorRTPhase::kBUILD);
    // The message count first: softplusOf may log (a build-phase plugin without a device serialises nothing).
    check(dflt != nullptr && logger.messages.size() == 1 && logger.saw("ignoring unknown field 'colour'")
            && softplusOf(dflt) == 1,
        "unknown field ignored with one warning, plugin_namespace silently, delta_softplus defaults to 1");
    delete dflt;
}

} // namespace

int main(int argc, char** argv)
{
    bool const expect_registered = argc == 3 && std::strcmp(argv[2], "--expect-registered") == 0;
    if (argc != 2 && !expect_registered)
    {
        std::fprintf(stderr, "usage: mmad_plugin_probe LIBRARY [--expect-registered]\n");
        return 100;
    }
    CapturingLogger logger;
    Finder finder(&logger);
    IPluginCreatorInterface* found = loadCreator(argv[1], &finder);
    if (!found)
    {
        return 100;
    }
    if (expect_registered)
    {
        checkRegisteredOnLoad(found);
    }
    InterfaceInfo const info = found->getInterfaceInfo();
    check(std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0, "creator is IPluginCreatorV3One", info.kind);
    auto* creator = static_cast<IPluginCreatorV3One*>(found);
    printIdentity(creator);

    // Build phase with delta_softplus = 0.
    int32_t const zero = 0;
    PluginField f0("delta_softplus", &zero, PluginFieldType::kINT32, 1);
    PluginFieldCollection fc0{1, &f0};
    IPluginV3* plugin = creator->createPlugin("scan", &fc0, TensorRTPhase::kBUILD);
    check(plugin != nullptr, "createPlugin(delta_softplus=0)");
    if (!plugin)
    {
        return 100;
    }
    checkCapabilities(plugin, creator);
    check(softplusOf(plugin) == 0, "delta_softplus field kept");
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    checkOutputTypes(build, logger);
    checkFormats(build);
    int device_count = 0;
    int sms = 0;
    if (cudaGetDeviceCount(&device_count) == cudaSuccess && device_count > 0)
    {
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    }
    std::printf("devices=%d sms=%d\n", device_count, sms);
    checkSerialisedSMs(plugin, logger, sms);

    // The shape and workspace checks on a plugin that knows its multiprocessor count (16, an Orin's), as one
    // deserialised from an engine does: they need no device.
    int32_t const sixteen = 16;
    PluginField known[2] = {PluginField("delta_softplus", &zero, PluginFieldType::kINT32, 1),
        PluginField("mmad_num_sms", &sixteen, PluginFieldType::kINT32, 1)};
    PluginFieldCollection fcKnown{2, known};
    IPluginV3* planned = creator->createPlugin("scan", &fcKnown, TensorRTPhase::kRUNTIME);
    check(planned != nullptr, "createPlugin(delta_softplus=0, mmad_num_sms=16)");
    if (!planned)
    {
        return 100;
    }
    auto* plannedBuild = static_cast<IPluginV3OneBuild*>(planned->getCapabilityInterface(PluginCapabilityType::kBUILD));
    checkConfigure(plannedBuild, logger);
    checkWorkspace(plannedBuild);
    checkRuntime(creator, planned);
    delete planned;
    checkCreatorFields(creator, logger);

    IPluginV3* copy = plugin->clone();
    check(copy != nullptr && softplusOf(copy) == 0, "clone keeps fields");
    delete copy;
    delete plugin;
    std::printf("%d failed\n", gFailures);
    return gFailures;
}
