// The plugin library's entry points, as TensorRT's dynamic plugin loading expects them: TensorRT's
// IPluginRegistry::loadLibrary (Python: trt.get_plugin_registry().load_library, trtexec --dynamicPlugins,
// engines built with --setPluginsToSerialize) dlopens the library, hands it a logger finder through
// setLoggerFinder and registers every creator that getCreators returns.
//
// Loaders that only dlopen the library (Polygraphy --plugins, trtexec --staticPlugins, ctypes.CDLL) never
// call getCreators. For them the library registers its creator itself at load time when the environment
// variable MMAD_TRT_REGISTER_ON_LOAD=1 is set. It is off by default because TensorRT's loadLibrary refuses
// a library whose creators are already registered, so the two ways must not be mixed in one process.
//
// The library links no TensorRT library: the interfaces are abstract classes, and the registry (only for
// registration on load) is looked up in the process's libnvinfer.
#include "selective_scan_plugin.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#define MMAD_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))

namespace mmad
{
namespace plugin
{
namespace
{

std::mutex gLoggerMutex;
nvinfer1::ILoggerFinder* gLoggerFinder{nullptr};

SelectiveScanPluginCreator& scanCreator() noexcept
{
    static SelectiveScanPluginCreator creator;
    return creator;
}

char const* severityName(nvinfer1::ILogger::Severity s) noexcept
{
    switch (s)
    {
    case nvinfer1::ILogger::Severity::kINTERNAL_ERROR: return "INTERNAL_ERROR";
    case nvinfer1::ILogger::Severity::kERROR: return "ERROR";
    case nvinfer1::ILogger::Severity::kWARNING: return "WARNING";
    case nvinfer1::ILogger::Severity::kINFO: return "INFO";
    case nvinfer1::ILogger::Severity::kVERBOSE: return "VERBOSE";
    }
    return "?";
}

#define MMAD_STRINGIFY2(x) #x
#define MMAD_STRINGIFY(x) MMAD_STRINGIFY2(x)
// Only the major version the library was compiled for: IPluginRegistry's virtual table differs between
// majors (11 dropped the IPluginV2 methods), so calling another major's registry would call the wrong slot.
constexpr char kNvinferSoname[] = "libnvinfer.so." MMAD_STRINGIFY(NV_TENSORRT_MAJOR);

// The process's libnvinfer: the one already loaded if any (RTLD_NOLOAD), else the one the dynamic loader
// finds by soname, which is the one TensorRT's Python bindings or trtexec will then share.
void* findNvinfer() noexcept
{
    if (void* handle = dlopen(kNvinferSoname, RTLD_LAZY | RTLD_NOLOAD))
    {
        return handle;
    }
    return dlopen(kNvinferSoname, RTLD_LAZY | RTLD_GLOBAL);
}

// Registration at load time, on request only (see the top of this file).
void registerOnLoadIfAsked() noexcept
{
    char const* flag = std::getenv("MMAD_TRT_REGISTER_ON_LOAD");
    if (flag == nullptr || std::strcmp(flag, "1") != 0)
    {
        return;
    }
    void* nvinfer = findNvinfer();
    using GetRegistry = nvinfer1::IPluginRegistry* (*)();
    auto getRegistry = nvinfer ? reinterpret_cast<GetRegistry>(dlsym(nvinfer, "getPluginRegistry")) : nullptr;
    nvinfer1::IPluginRegistry* registry = getRegistry ? getRegistry() : nullptr;
    if (registry == nullptr)
    {
        std::fprintf(stderr,
            "[mmad SelectiveScan] MMAD_TRT_REGISTER_ON_LOAD=1 but %s is neither loaded nor on the loader's path: "
            "import tensorrt before loading this library, or add TensorRT's lib/ to LD_LIBRARY_PATH\n",
            kNvinferSoname);
        return;
    }
    if (!registry->registerCreator(scanCreator(), kScanPluginNamespace))
    {
        std::fprintf(stderr, "[mmad SelectiveScan] registering the plugin creator failed (already registered?)\n");
    }
    else
    {
        logPluginMessage(nvinfer1::ILogger::Severity::kINFO, "SelectiveScan: plugin creator registered on load");
    }
}

struct RegisterOnLoad
{
    RegisterOnLoad() noexcept
    {
        registerOnLoadIfAsked();
    }
};
RegisterOnLoad const gRegisterOnLoad;

} // namespace

void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    std::lock_guard<std::mutex> lock(gLoggerMutex);
    gLoggerFinder = finder;
}

void logPluginMessage(nvinfer1::ILogger::Severity severity, char const* msg) noexcept
{
    nvinfer1::ILogger* logger = nullptr;
    {
        std::lock_guard<std::mutex> lock(gLoggerMutex);
        logger = gLoggerFinder ? gLoggerFinder->findLogger() : nullptr;
    }
    if (logger != nullptr)
    {
        logger->log(severity, msg);
    }
    else if (severity <= nvinfer1::ILogger::Severity::kWARNING)
    {
        std::fprintf(stderr, "[mmad SelectiveScan] %s: %s\n", severityName(severity), msg);
    }
}

} // namespace plugin
} // namespace mmad

MMAD_PLUGIN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    mmad::plugin::setPluginLoggerFinder(finder);
}

MMAD_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&mmad::plugin::scanCreator()};
    nbCreators = 1;
    return creators;
}
