// SelectiveScan for OpenVINO: type and shape checks, and evaluate() over the C++ CPU kernel. See selective_scan_op.h.
//
// Threads: OpenVINO runs evaluate() on one of its own (TBB) threads. The kernel is compiled into this library
// without OpenMP, so each call of it is single-threaded; evaluate() cuts the scan into pieces (runs of whole groups
// of one batch item, or channel slices of a group), each a complete scan in the contract's layout, and spreads them
// with ov::parallel_nt over the thread pool (task arena) of the inference that called it: the op never adds threads
// of its own on top of OpenVINO's, and follows INFERENCE_NUM_THREADS. (Measured on the 2-core dev machine, bottle
// fast model, 2 threads: the kernel's own OpenMP threads inside evaluate() instead made inference ~4x slower.)

#include "selective_scan_op.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <string>
#include <vector>

#include <openvino/core/parallel.hpp>
#include <openvino/core/type/float16.hpp>

// The C ABI of native/cpu/selective_scan_cpu.cpp (compiled into this library; its symbols stay hidden).
extern "C"
{
int mmad_scan_fwd_f32(const float* u, const float* delta, const float* A, const float* Bm, const float* Cm,
    const float* Dskip, const float* delta_bias, float* y, int64_t batch, int64_t dim, int64_t len, int64_t nstate,
    int64_t groups, int delta_softplus, int n_threads);
int mmad_scan_max_state();
}

namespace mmad
{
namespace
{

enum Input : size_t
{
    kU,
    kDelta,
    kA,
    kB,
    kC,
    kD,
    kDeltaBias,
    kInputCount
};

constexpr std::array<const char*, kInputCount> kInputNames = {"u", "delta", "A", "B", "C", "D", "delta_bias"};
constexpr std::array<const char*, kInputCount> kLayouts
    = {"[B, D, L]", "[B, D, L]", "[D, N]", "[B, G, N, L]", "[B, G, N, L]", "[D]", "[D]"};
// Which scan size each axis of each input is: B, D, L, N or G.
const std::array<std::string, kInputCount> kAxes = {"BDL", "BDL", "DN", "BGNL", "BGNL", "D", "D"};
constexpr size_t kSizeCount = 5;
constexpr const char* kSizeNames = "BDLNG";

// Tasks per thread: enough that a thread slowed by the rest of the machine does not hold up the others.
constexpr int64_t kTasksPerThread = 4;
// A kernel call given fewer (batch, group) pairs than this cuts them into channel slices, each of which stages its
// group's B and C again (the kernel's own tasks per thread): 10-25 % slower at MMAD's shapes with one group per call.
constexpr int64_t kMinPairsPerCall = 4;

struct ScanSizes
{
    int64_t batch, dim, len, nstate, groups;
};

// One kernel call's share of the scan: batch item `item`, groups [g0, g1), channels [first, last) - whole groups, or
// a slice of the channels of one group (g1 == g0 + 1) when there are fewer (batch, group) pairs than threads.
struct Piece
{
    int64_t item, g0, g1, first, last;
};

int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

// The pieces for `threads` threads: runs of whole groups of at least kMinPairsPerCall pairs where the scan has enough
// of them, at least one piece per thread, at most kTasksPerThread per thread.
std::vector<Piece> plan_pieces(const ScanSizes& s, int64_t threads)
{
    const int64_t per_group = s.dim / s.groups;
    const int64_t pairs = s.batch * s.groups;
    std::vector<Piece> pieces;
    if (pairs >= threads)
    {
        const int64_t wanted = std::clamp(pairs / kMinPairsPerCall, threads, threads * kTasksPerThread);
        const int64_t span = ceil_div(s.groups, ceil_div(wanted, s.batch));
        for (int64_t item = 0; item < s.batch; ++item)
            for (int64_t g0 = 0; g0 < s.groups; g0 += span)
            {
                const int64_t g1 = std::min(g0 + span, s.groups);
                pieces.push_back({item, g0, g1, g0 * per_group, g1 * per_group});
            }
        return pieces;
    }
    const int64_t slices = std::clamp(ceil_div(kTasksPerThread * threads, pairs), int64_t(1), per_group);
    for (int64_t pair = 0; pair < pairs; ++pair)
    {
        const int64_t g = pair % s.groups, base = g * per_group;
        for (int64_t slice = 0; slice < slices; ++slice)
            pieces.push_back({pair / s.groups, g, g + 1, base + slice * per_group / slices,
                base + (slice + 1) * per_group / slices});
    }
    return pieces;
}

// The five sizes (B, D, L, N, G) the inputs agree on (dynamic where none is known); a NodeValidationFailure naming
// the input, the axis and both values where two inputs disagree or an input has the wrong rank.
std::array<ov::Dimension, kSizeCount> merge_sizes(
    const ov::Node* node, const std::array<ov::PartialShape, kInputCount>& shapes)
{
    std::array<ov::Dimension, kSizeCount> sizes;
    std::array<std::string, kSizeCount> source; // the input that gave each size, for the message
    for (size_t i = 0; i < kInputCount; ++i)
    {
        const std::string& axes = kAxes[i];
        NODE_VALIDATION_CHECK(node, shapes[i].rank().compatible(static_cast<int64_t>(axes.size())),
            "SelectiveScan input '", kInputNames[i], "' must be ", kLayouts[i], " (rank ", axes.size(), "), got ",
            shapes[i]);
        if (shapes[i].rank().is_dynamic())
            continue;
        for (size_t axis = 0; axis < axes.size(); ++axis)
        {
            const size_t which = std::string(kSizeNames).find(axes[axis]);
            ov::Dimension merged;
            NODE_VALIDATION_CHECK(node, ov::Dimension::merge(merged, sizes[which], shapes[i][axis]),
                "SelectiveScan input '", kInputNames[i], "' ", kLayouts[i], " has ", axes[axis], " = ", shapes[i][axis],
                " but input '", source[which], "' has ", axes[axis], " = ", sizes[which], " (got ", shapes[i], ")");
            if (sizes[which].is_dynamic() && merged.is_static())
                source[which] = kInputNames[i];
            sizes[which] = merged;
        }
    }
    const ov::Dimension& dim = sizes[1];
    const ov::Dimension& nstate = sizes[3];
    const ov::Dimension& groups = sizes[4];
    if (groups.is_static() && dim.is_static())
        NODE_VALIDATION_CHECK(node, groups.get_length() > 0 && dim.get_length() % groups.get_length() == 0,
            "SelectiveScan: the groups G = ", groups, " (axis 1 of B and C) must divide the channels D = ", dim);
    if (nstate.is_static())
        NODE_VALIDATION_CHECK(node, nstate.get_length() <= mmad_scan_max_state(), "SelectiveScan: N = ", nstate,
            " states is more than the CPU kernel's maximum of ", mmad_scan_max_state());
    return sizes;
}

bool is_float(const ov::element::Type& type, bool half_allowed)
{
    return type.is_dynamic() || type == ov::element::f32 || (half_allowed && type == ov::element::f16);
}

// Runs the kernel on the calling inference's threads: one call with one thread, else pieces (plan_pieces) taken from a
// shared counter - rather than one fixed block per thread, so that on a busy machine a thread that starts late finds
// the work done instead of holding up the others.
void scan_f32(const std::array<const float*, kInputCount>& in, float* y, const ScanSizes& s, bool softplus)
{
    if (s.batch == 0 || s.dim == 0 || s.len == 0)
        return;
    const int64_t threads = std::max(1, parallel_get_max_threads());
    const int sp = softplus ? 1 : 0;
    std::atomic<int> failed{0};
    if (threads == 1)
    {
        failed = mmad_scan_fwd_f32(in[kU], in[kDelta], in[kA], in[kB], in[kC], in[kD], in[kDeltaBias], y, s.batch,
            s.dim, s.len, s.nstate, s.groups, sp, 1);
    }
    else
    {
        const std::vector<Piece> pieces = plan_pieces(s, threads);
        std::atomic<size_t> next{0};
        const auto run = [&](const Piece& p)
        {
            const int64_t row = (p.item * s.dim + p.first) * s.len;
            const int64_t bc = (p.item * s.groups + p.g0) * s.nstate * s.len;
            // A scan of its own in the contract's layout: batch 1, channels [first, last) over groups [g0, g1).
            const int status = mmad_scan_fwd_f32(in[kU] + row, in[kDelta] + row, in[kA] + p.first * s.nstate,
                in[kB] + bc, in[kC] + bc, in[kD] + p.first, in[kDeltaBias] + p.first, y + row, 1, p.last - p.first,
                s.len, s.nstate, p.g1 - p.g0, sp, 1);
            if (status != 0)
                failed = status;
        };
        ov::parallel_nt(static_cast<int>(std::min<int64_t>(threads, static_cast<int64_t>(pieces.size()))),
            [&](int, int)
            {
                for (size_t i = next++; i < pieces.size(); i = next++)
                    run(pieces[i]);
            });
    }
    if (failed != 0)
        OPENVINO_THROW("SelectiveScan: the C++ CPU kernel failed with status ", failed.load(), " (sizes B=", s.batch,
            " D=", s.dim, " L=", s.len, " N=", s.nstate, " G=", s.groups, "; 3 is out of memory)");
}

std::vector<float> widen(const ov::Tensor& half)
{
    const auto* src = half.data<const ov::float16>();
    return std::vector<float>(src, src + half.get_size());
}

} // namespace

SelectiveScan::SelectiveScan(const ov::OutputVector& inputs, bool delta_softplus)
    : Op(inputs)
    , m_delta_softplus(delta_softplus)
{
    constructor_validate_and_infer_types();
}

void SelectiveScan::validate_and_infer_types()
{
    NODE_VALIDATION_CHECK(this, get_input_size() == kInputCount,
        "SelectiveScan takes 7 inputs (u, delta, A, B, C, D, delta_bias), got ", get_input_size());
    ov::element::Type io = get_input_element_type(kU);
    for (size_t i : {kDelta, kB, kC})
        NODE_VALIDATION_CHECK(this, ov::element::Type::merge(io, io, get_input_element_type(i)),
            "SelectiveScan inputs u, delta, B and C must have one element type, but u is ", get_input_element_type(kU),
            " and ", kInputNames[i], " is ", get_input_element_type(i));
    NODE_VALIDATION_CHECK(
        this, is_float(io, true), "SelectiveScan inputs u, delta, B and C must be float32 or float16, got ", io);
    for (size_t i : {kA, kD, kDeltaBias})
        NODE_VALIDATION_CHECK(this, is_float(get_input_element_type(i), false), "SelectiveScan input '", kInputNames[i],
            "' must be float32, got ", get_input_element_type(i));
    std::array<ov::PartialShape, kInputCount> shapes;
    for (size_t i = 0; i < kInputCount; ++i)
        shapes[i] = get_input_partial_shape(i);
    const auto sizes = merge_sizes(this, shapes);
    set_output_type(0, io, ov::PartialShape{sizes[0], sizes[1], sizes[2]});
}

std::shared_ptr<ov::Node> SelectiveScan::clone_with_new_inputs(const ov::OutputVector& new_args) const
{
    check_new_args_count(this, new_args);
    return std::make_shared<SelectiveScan>(new_args, m_delta_softplus);
}

bool SelectiveScan::visit_attributes(ov::AttributeVisitor& visitor)
{
    visitor.on_attribute("delta_softplus", m_delta_softplus);
    return true;
}

bool SelectiveScan::has_evaluate() const
{
    return is_float(get_input_element_type(kU), true);
}

bool SelectiveScan::evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const
{
    // The shapes again, now all known: a graph with dynamic axes is only checked here.
    std::array<ov::PartialShape, kInputCount> shapes;
    for (size_t i = 0; i < kInputCount; ++i)
        shapes[i] = inputs[i].get_shape();
    const auto dims = merge_sizes(this, shapes);
    const ScanSizes sizes{
        dims[0].get_length(), dims[1].get_length(), dims[2].get_length(), dims[3].get_length(), dims[4].get_length()};
    outputs[0].set_shape(inputs[kU].get_shape());
    std::array<const float*, kInputCount> in{};
    for (size_t i : {kA, kD, kDeltaBias})
        in[i] = inputs[i].data<const float>();
    if (inputs[kU].get_element_type() == ov::element::f32)
    {
        for (size_t i : {kU, kDelta, kB, kC})
            in[i] = inputs[i].data<const float>();
        scan_f32(in, outputs[0].data<float>(), sizes, m_delta_softplus);
        return true;
    }
    // float16 I/O: the scan runs in float32 (the contract's state type) and y is rounded back.
    const std::vector<float> u = widen(inputs[kU]), delta = widen(inputs[kDelta]), b = widen(inputs[kB]),
                             c = widen(inputs[kC]);
    in[kU] = u.data();
    in[kDelta] = delta.data();
    in[kB] = b.data();
    in[kC] = c.data();
    std::vector<float> y(u.size());
    scan_f32(in, y.data(), sizes, m_delta_softplus);
    std::copy(y.begin(), y.end(), outputs[0].data<ov::float16>());
    return true;
}

} // namespace mmad
