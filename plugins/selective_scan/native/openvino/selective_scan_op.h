// The SelectiveScan op (plugins/selective_scan/README.md) as an OpenVINO op: shape and type inference, and an
// evaluate() that runs the project's C++ CPU kernel (native/cpu/selective_scan_cpu.cpp, compiled into the same
// extension library) on OpenVINO's own thread pool.
//
// Inputs u, delta [B, D, L]; A [D, N]; B, C [B, G, N, L]; D, delta_bias [D]; output y [B, D, L] typed like u.
// u, delta, B, C and y are float32 or float16 (one type for all); A, D and delta_bias are float32.
#pragma once

#include <cstdint>

#include <openvino/op/op.hpp>

namespace mmad
{

class SelectiveScan : public ov::op::Op
{
public:
    // The op's OpenVINO type; "mmad_opset1" names it in an OpenVINO IR (.xml) written from a model that has it.
    OPENVINO_OP("SelectiveScan", "mmad_opset1");

    SelectiveScan() = default;
    SelectiveScan(const ov::OutputVector& inputs, bool delta_softplus);

    void validate_and_infer_types() override;
    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& new_args) const override;
    bool visit_attributes(ov::AttributeVisitor& visitor) override;
    bool has_evaluate() const override;
    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override;

    bool delta_softplus() const
    {
        return m_delta_softplus;
    }

private:
    bool m_delta_softplus = true;
};

} // namespace mmad
