// The OpenVINO extension library: `core.add_extension("libmmad_openvino_extension.so")` lets OpenVINO read
//   - an ONNX graph with the SelectiveScan node of the op contract (domain ai.onnx.contrib), and
//   - an OpenVINO IR (.xml) written from such a graph (op type SelectiveScan, version mmad_opset1).
//
// The ONNX node is converted by a function rather than by ov::frontend::onnx::OpExtension<SelectiveScan>, whose
// attribute mapping needs every attribute present in the node: the contract gives delta_softplus a default (1), and
// a node of another plugin_version (a later version of the op) must be refused by name, not mis-read. The names below
// must equal mmad.runtime.contract (SCAN_OP_TYPE, SCAN_OP_DOMAIN, SCAN_ATTR_SOFTPLUS, SCAN_ATTR_PLUGIN_VERSION,
// SCAN_PLUGIN_VERSION); tests/plugins/test_openvino_extension.py loads nodes written with those.

#include <string>

#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/frontend/exception.hpp>
#include <openvino/frontend/onnx/extension/conversion.hpp>

#include "selective_scan_op.h"

namespace
{

constexpr char kOnnxOpType[] = "SelectiveScan";
constexpr char kOnnxDomain[] = "ai.onnx.contrib";
constexpr char kAttrSoftplus[] = "delta_softplus";
constexpr char kAttrPluginVersion[] = "plugin_version";
constexpr char kPluginVersion[] = "1";
constexpr size_t kInputCount = 7;

ov::OutputVector convert_onnx_node(const ov::frontend::NodeContext& node)
{
    const auto version = node.get_attribute<std::string>(kAttrPluginVersion, kPluginVersion);
    FRONT_END_GENERAL_CHECK(version == kPluginVersion, "SelectiveScan node with ", kAttrPluginVersion, " '", version,
        "': this OpenVINO extension implements version ", kPluginVersion,
        "; rebuild it from a checkout whose op has that version (mmad.plugins.selective_scan.openvino_ext)");
    const auto softplus = node.get_attribute<int64_t>(kAttrSoftplus, 1);
    FRONT_END_GENERAL_CHECK(
        softplus == 0 || softplus == 1, "SelectiveScan attribute ", kAttrSoftplus, " must be 0 or 1, got ", softplus);
    FRONT_END_GENERAL_CHECK(node.get_input_size() == kInputCount,
        "SelectiveScan takes 7 inputs (u, delta, A, B, C, D, delta_bias), got ", node.get_input_size());
    ov::OutputVector inputs;
    for (size_t i = 0; i < kInputCount; ++i)
        inputs.push_back(node.get_input(static_cast<int>(i)));
    return {std::make_shared<mmad::SelectiveScan>(inputs, softplus == 1)->output(0)};
}

} // namespace

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({
    std::make_shared<ov::OpExtension<mmad::SelectiveScan>>(),
    std::make_shared<ov::frontend::onnx::ConversionExtension>(kOnnxOpType, kOnnxDomain, convert_onnx_node),
}));
