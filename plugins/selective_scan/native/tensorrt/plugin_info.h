// The SelectiveScan op's identity in TensorRT, defined once for the plugin, its creator and its library.
// Must equal mmad.runtime.contract (SCAN_PLUGIN_NAME, SCAN_PLUGIN_VERSION, SCAN_PLUGIN_NAMESPACE,
// SCAN_ATTR_SOFTPLUS, SCAN_INPUTS); tests/plugins/test_cuda_kernel_host.py checks that.
#pragma once

#include <cstdint>

namespace mmad
{
namespace plugin
{

inline constexpr char kScanPluginName[] = "SelectiveScan";
inline constexpr char kScanPluginVersion[] = "1";
inline constexpr char kScanPluginNamespace[] = "mmad";
inline constexpr char kScanFieldSoftplus[] = "delta_softplus";
// Serialised with the engine (not a build-time field): the multiprocessor count the engine's workspace
// was sized for, so that a deserialised plugin cuts its launches the same way.
inline constexpr char kScanFieldNumSMs[] = "mmad_num_sms";
// Inputs in the order of the contract: u, delta, A, B, C, D, delta_bias; one output y.
inline constexpr int32_t kScanNbInputs = 7;
inline constexpr int32_t kScanNbOutputs = 1;

} // namespace plugin
} // namespace mmad
