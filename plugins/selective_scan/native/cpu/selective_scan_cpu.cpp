// The fast CPU selective scan (Mamba S6) of the op contract (plugins/selective_scan/README.md): forward and
// backward.
//
// Plain C++ behind a C ABI (no PyTorch headers) so that Python reaches it through ctypes and any other
// host code can link the same loops. Every array is contiguous, in the contract's layout:
//     u, delta, y, du, ddelta   [B, D, L]
//     A, dA                     [D, N]
//     Bm, Cm, dB, dC            [B, G, N, L]   channel d uses group g = d / (D / G)
//     Dskip, delta_bias, dD, ddelta_bias   [D]
// The state is kept in the instantiation's type: float for *_f32, double for *_f64.
//
// Built by the CMake target mmad_selective_scan_cpu (plugins/selective_scan/CMakeLists.txt; cpu.py runs it on
// first use): compiled with -O3 -march=native -ffast-math -fopenmp -fPIC -std=c++17, linked with -shared
// -fopenmp. -ffast-math lets gcc call glibc's vector exp/log1p (libmvec), so the loops over the N
// states are vectorised; it must stay off the link line, where gcc < 13 would add crtfastmath.o and
// switch the whole host process to flush-denormals mode when the library loads.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <new>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace
{

// Status codes shared with cpu.py.
constexpr int kOk = 0;
constexpr int kBadSize = 1;       // a negative size, G == 0 or G not dividing D
constexpr int kStateTooLarge = 2; // N > kMaxState
constexpr int kOutOfMemory = 3;

constexpr int kMaxState = 256;
// PyTorch's softplus is linear above this.
constexpr double kSoftplusThreshold = 20.0;

// Below this many (channel, step) updates per thread, starting and joining threads costs more than
// it saves (and on a busy machine a descheduled thread stalls the barrier).
constexpr int64_t kMinStepsPerThread = 32768;

int thread_count(int requested, int64_t steps)
{
#ifdef _OPENMP
    const int64_t wanted = requested > 0 ? requested : omp_get_max_threads();
    return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, steps / kMinStepsPerThread)));
#else
    (void)requested;
    (void)steps;
    return 1;
#endif
}

int thread_id()
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// Flush denormals to zero in the calling thread while the scan runs (decays of exp(ΔA) can leave
// tiny states that would otherwise take the slow microcode path), restoring the caller's mode after.
// A scoped switch rather than -ffast-math's load-time one, which would change the whole process.
class FlushDenormals
{
#if defined(__x86_64__) || defined(__i386__)
public:
    FlushDenormals()
        : saved_(_mm_getcsr())
    {
        _mm_setcsr(saved_ | kFlushToZero | kDenormalsAreZero);
    }
    ~FlushDenormals()
    {
        _mm_setcsr(saved_);
    }
    FlushDenormals(const FlushDenormals&) = delete;
    FlushDenormals& operator=(const FlushDenormals&) = delete;

private:
    static constexpr unsigned kFlushToZero = 0x8000;
    static constexpr unsigned kDenormalsAreZero = 0x0040;
    unsigned saved_;
#endif
};

int check_sizes(int64_t nb, int64_t nd, int64_t nl, int64_t nn, int64_t ng)
{
    if (nb < 0 || nd < 0 || nl < 0 || nn < 0 || ng <= 0 || nd % ng != 0)
        return kBadSize;
    if (nn > kMaxState)
        return kStateTooLarge;
    return kOk;
}

// dt[t] = softplus(delta[t] + bias) (or delta[t] + bias) for one channel, and, when dsp is given, the
// derivative of that map (sigmoid below the threshold, 1 above). A separate loop over t so that the
// transcendental calls vectorise; the sequential scan then only reads dt.
template <typename T>
void discretize_row(const T* delta, T bias, int64_t len, bool softplus, T* dt, T* dsp)
{
    if (!softplus)
    {
        for (int64_t t = 0; t < len; ++t)
            dt[t] = delta[t] + bias;
        if (dsp)
            std::fill(dsp, dsp + len, T(1));
        return;
    }
    const T thr = T(kSoftplusThreshold);
    // exp is taken of min(x, thr) so that the unused branch of the select never overflows.
    for (int64_t t = 0; t < len; ++t)
    {
        const T x = delta[t] + bias;
        const T e = std::exp(std::min(x, thr));
        dt[t] = x > thr ? x : std::log1p(e);
    }
    if (dsp)
    {
        for (int64_t t = 0; t < len; ++t)
        {
            const T x = delta[t] + bias;
            const T e = std::exp(std::min(x, thr));
            dsp[t] = x > thr ? T(1) : e / (T(1) + e);
        }
    }
}

// [N, L] -> [L, N] for one (b, g), so that the scan reads the N values of step t contiguously.
template <typename T>
void transpose_to_steps(const T* src, int64_t nn, int64_t nl, T* dst)
{
    for (int64_t t = 0; t < nl; ++t)
        for (int64_t k = 0; k < nn; ++k)
            dst[t * nn + k] = src[k * nl + t];
}

// [L, N] -> [N, L]: the inverse of transpose_to_steps, for the gradients of B and C.
template <typename T>
void transpose_to_states(const T* src, int64_t nn, int64_t nl, T* dst)
{
    for (int64_t k = 0; k < nn; ++k)
        for (int64_t t = 0; t < nl; ++t)
            dst[k * nl + t] = src[t * nn + k];
}

// B and C of one (b, g) pair as [L, N] each, forward and backward alike: a task stages them once for all its
// channels.
template <typename T>
void stage_pair(const T* Bm, const T* Cm, int64_t pair, int64_t nn, int64_t nl, T* bt, T* ct)
{
    transpose_to_steps(Bm + pair * nl * nn, nn, nl, bt);
    transpose_to_steps(Cm + pair * nl * nn, nn, nl, ct);
}

// Work is handed out as (b, g, slice) tasks: a slice of the channels of one group, so that a task
// transposes its group's B and C once and reuses them for all its channels. Enough slices per group
// that every thread gets work and dynamic scheduling can even out a slow thread.
struct Tasks
{
    int64_t pairs;     // B * G
    int64_t slices;    // per (b, g)
    int64_t per_group; // channels per group, D / G

    Tasks(int64_t nb, int64_t nd, int64_t ng, int threads, int64_t tasks_per_thread)
        : pairs(nb * ng)
        , per_group(nd / ng)
    {
        const int64_t want = (tasks_per_thread * threads + pairs - 1) / pairs;
        slices = std::max<int64_t>(1, std::min<int64_t>(want, per_group));
    }
    int64_t count() const
    {
        return pairs * slices;
    }
    int64_t pair(int64_t task) const
    {
        return task / slices;
    }
    // First and one-past-last channel of a task (channels of group g are g*per_group ...).
    int64_t channel_begin(int64_t task, int64_t ng) const
    {
        return (pair(task) % ng) * per_group + (task % slices) * per_group / slices;
    }
    int64_t channel_end(int64_t task, int64_t ng) const
    {
        return (pair(task) % ng) * per_group + (task % slices + 1) * per_group / slices;
    }
};

// The start of a row's scan, forward and backward alike: the channel's row of A, and the state h = 0.
template <typename T>
inline void start_row(const T* A, int n, T* a, T* h)
{
    for (int k = 0; k < n; ++k)
    {
        a[k] = A[k];
        h[k] = T(0);
    }
}

// One (b, d) row of the forward scan. NS > 0 fixes N at compile time (the common N = 16) so the n-loop
// is fully vectorised; NS == 0 takes N from n_rt.
template <typename T, int NS>
void forward_row(const T* u, const T* dt, const T* A, const T* Bt, const T* Ct, T dskip, int64_t len, int n_rt, T* y)
{
    constexpr int kCap = NS > 0 ? NS : kMaxState;
    const int n = NS > 0 ? NS : n_rt;
    T a[kCap];
    T h[kCap];
    start_row(A, n, a, h);
    for (int64_t t = 0; t < len; ++t)
    {
        const T d = dt[t];
        const T du = d * u[t];
        const T* bt = Bt + t * n;
        const T* ct = Ct + t * n;
        T acc = T(0);
#pragma omp simd reduction(+ : acc)
        for (int k = 0; k < n; ++k)
        {
            h[k] = std::exp(d * a[k]) * h[k] + du * bt[k];
            acc += ct[k] * h[k];
        }
        y[t] = acc + dskip * u[t];
    }
}

// Per-thread work space of the backward: the states h_t (row 0 is h_{-1} = 0), the decays exp(Δ_t A),
// Δ_t and dΔ_t/d(delta_t).
template <typename T>
struct BackwardScratch
{
    T* states; // [L + 1, N]
    T* decay;  // [L, N]
    T* dt;     // [L]
    T* dsp;    // [L]
};

// Gradient sums of one (b, d) row that are reduced over b afterwards.
struct RowSums
{
    double* dA; // [N], accumulated
    double dD;
    double dbias;
};

// One (b, d) row of the backward. Recomputes the states, then runs the adjoint recurrence
//     g_t = dy_t C_t + exp(Δ_{t+1} A) g_{t+1}     (g_t = dLoss/dh_t)
// backwards in t. dBt, dCt ([L, N]) are the group's accumulators, shared by the channels of the group
// that the same thread handles. One function (longer than most) because both passes are hot loops over
// the same register arrays (a, h, carry).
template <typename T, int NS>
void backward_row(const T* u, const T* dy, const T* A, const T* Bt, const T* Ct, T dskip, int64_t len, int n_rt,
    const BackwardScratch<T>& s, T* du, T* ddelta, T* dBt, T* dCt, RowSums& sums)
{
    constexpr int kCap = NS > 0 ? NS : kMaxState;
    const int n = NS > 0 ? NS : n_rt;
    T a[kCap];
    T h[kCap];
    start_row(A, n, a, h);
    std::fill(s.states, s.states + n, T(0)); // h_{-1}
    for (int64_t t = 0; t < len; ++t)
    {
        const T d = s.dt[t];
        const T dtu = d * u[t];
        const T* bt = Bt + t * n;
        T* dec = s.decay + t * n;
        T* hs = s.states + (t + 1) * n;
#pragma omp simd
        for (int k = 0; k < n; ++k)
        {
            dec[k] = std::exp(d * a[k]);
            h[k] = dec[k] * h[k] + dtu * bt[k];
            hs[k] = h[k];
        }
    }

    // carry = exp(Δ_{t+1} A) g_{t+1}; the dA sum runs in double because it adds up B·L terms.
    T carry[kCap];
    double dA_acc[kCap];
    for (int k = 0; k < n; ++k)
    {
        carry[k] = T(0);
        dA_acc[k] = 0.0;
    }
    double dD_acc = 0.0;
    double dbias_acc = 0.0;
    for (int64_t t = len - 1; t >= 0; --t)
    {
        const T gy = dy[t];
        const T d = s.dt[t];
        const T ut = u[t];
        const T dtu = d * ut;
        const T* dec = s.decay + t * n;
        const T* hprev = s.states + t * n;
        const T* hcur = s.states + (t + 1) * n;
        const T* bt = Bt + t * n;
        const T* ct = Ct + t * n;
        T* dbt = dBt + t * n;
        T* dct = dCt + t * n;
        T g_b = T(0);  // Σ_n g B
        T g_ah = T(0); // Σ_n g exp(ΔA) h_{t-1} A: the decay's share of dLoss/dΔ
#pragma omp simd reduction(+ : g_b, g_ah)
        for (int k = 0; k < n; ++k)
        {
            const T g = gy * ct[k] + carry[k];
            dct[k] += gy * hcur[k];
            dbt[k] += g * dtu;
            const T g_exp = g * dec[k] * hprev[k]; // dLoss/d(Δ A[k])
            g_ah += g_exp * a[k];
            dA_acc[k] += static_cast<double>(g_exp * d);
            g_b += g * bt[k];
            carry[k] = g * dec[k];
        }
        du[t] = d * g_b + dskip * gy;
        const T g_delta = (g_ah + ut * g_b) * s.dsp[t];
        ddelta[t] = g_delta;
        dD_acc += static_cast<double>(gy) * static_cast<double>(ut);
        dbias_acc += static_cast<double>(g_delta);
    }
    for (int k = 0; k < n; ++k)
        sums.dA[k] = dA_acc[k];
    sums.dD = dD_acc;
    sums.dbias = dbias_acc;
}

template <typename T>
int scan_forward(const T* u, const T* delta, const T* A, const T* Bm, const T* Cm, const T* Dskip, const T* bias, T* y,
    int64_t nb, int64_t nd, int64_t nl, int64_t nn, int64_t ng, int softplus, int n_threads)
{
    if (int status = check_sizes(nb, nd, nl, nn, ng))
        return status;
    if (nb == 0 || nd == 0 || nl == 0)
        return kOk;
    const int threads = thread_count(n_threads, nb * nd * nl);
    const Tasks tasks(nb, nd, ng, threads, 4);
    const int64_t step_block = nl * nn;
    // Per thread: Δ of one row, and the task's B and C as [L, N].
    const int64_t scratch_len = nl + 2 * step_block;
    try
    {
        std::vector<T> scratch(static_cast<size_t>(threads) * scratch_len);
        // One parallel region with one loop: every extra barrier costs a wake-up, which on a busy
        // machine can be a whole scheduler time slice.
#pragma omp parallel num_threads(threads)
        {
            const FlushDenormals flush;
            T* dt = scratch.data() + static_cast<int64_t>(thread_id()) * scratch_len;
            T* bt = dt + nl;
            T* ct = bt + step_block;
#pragma omp for schedule(dynamic, 1)
            for (int64_t task = 0; task < tasks.count(); ++task)
            {
                const int64_t pair = tasks.pair(task), b = pair / ng;
                stage_pair(Bm, Cm, pair, nn, nl, bt, ct);
                for (int64_t d = tasks.channel_begin(task, ng); d < tasks.channel_end(task, ng); ++d)
                {
                    const int64_t row = (b * nd + d) * nl;
                    discretize_row(delta + row, bias[d], nl, softplus != 0, dt, static_cast<T*>(nullptr));
                    if (nn == 16)
                        forward_row<T, 16>(u + row, dt, A + d * nn, bt, ct, Dskip[d], nl, 16, y + row);
                    else
                        forward_row<T, 0>(u + row, dt, A + d * nn, bt, ct, Dskip[d], nl, static_cast<int>(nn), y + row);
                }
            }
        }
    }
    catch (const std::bad_alloc&)
    {
        return kOutOfMemory;
    }
    return kOk;
}

// The backward over all rows: one OpenMP parallel region (the hot loop) between a short set-up and the
// reduction of the per-batch sums; kept in one function so the region's shared buffers stay in one scope.
template <typename T>
int scan_backward(const T* u, const T* delta, const T* A, const T* Bm, const T* Cm, const T* Dskip, const T* bias,
    const T* dy, T* du, T* ddelta, T* dA, T* dB, T* dC, T* dD, T* dbias, int64_t nb, int64_t nd, int64_t nl, int64_t nn,
    int64_t ng, int softplus, int n_threads)
{
    if (int status = check_sizes(nb, nd, nl, nn, ng))
        return status;
    if (nb == 0 || nd == 0 || nl == 0)
    {
        std::fill(dA, dA + nd * nn, T(0));
        std::fill(dD, dD + nd, T(0));
        std::fill(dbias, dbias + nd, T(0));
        std::fill(dB, dB + nb * ng * nn * nl, T(0));
        std::fill(dC, dC + nb * ng * nn * nl, T(0));
        return kOk;
    }
    const int threads = thread_count(n_threads, nb * nd * nl);
    // The channels of a group share dB and dC. With one slice per (b, g) a task owns its dB, dC
    // outright; with more (fewer pairs than threads) each slice writes a partial sum, added up after.
    const Tasks tasks(nb, nd, ng, threads, 1);
    const int64_t step_block = nl * nn;
    // Per thread: states [L+1, N], decays, B, C, dB, dC [L, N] each; Δ and dΔ/d(delta) [L] each.
    const int64_t scratch_len = (nl + 1) * nn + 5 * step_block + 2 * nl;
    try
    {
        std::vector<T> scratch(static_cast<size_t>(threads) * scratch_len);
        std::vector<T> dB_part, dC_part; // [tasks, N, L], only when slices > 1
        if (tasks.slices > 1)
        {
            dB_part.resize(tasks.count() * step_block);
            dC_part.resize(tasks.count() * step_block);
        }
        std::vector<double> dA_part(nb * nd * nn), dD_part(nb * nd), dbias_part(nb * nd);

#pragma omp parallel num_threads(threads)
        {
            const FlushDenormals flush;
            T* base = scratch.data() + static_cast<int64_t>(thread_id()) * scratch_len;
            BackwardScratch<T> s{
                base, base + (nl + 1) * nn, base + (nl + 1) * nn + step_block, base + (nl + 1) * nn + step_block + nl};
            T* bt = s.dsp + nl;
            T* ct = bt + step_block;
            T* dbt = ct + step_block;
            T* dct = dbt + step_block;
#pragma omp for schedule(dynamic, 1)
            for (int64_t task = 0; task < tasks.count(); ++task)
            {
                const int64_t pair = tasks.pair(task), b = pair / ng;
                stage_pair(Bm, Cm, pair, nn, nl, bt, ct);
                std::fill(dbt, dbt + step_block, T(0));
                std::fill(dct, dct + step_block, T(0));
                for (int64_t d = tasks.channel_begin(task, ng); d < tasks.channel_end(task, ng); ++d)
                {
                    const int64_t row = (b * nd + d) * nl;
                    RowSums sums{dA_part.data() + (b * nd + d) * nn, 0.0, 0.0};
                    discretize_row(delta + row, bias[d], nl, softplus != 0, s.dt, s.dsp);
                    if (nn == 16)
                        backward_row<T, 16>(u + row, dy + row, A + d * nn, bt, ct, Dskip[d], nl, 16, s, du + row,
                            ddelta + row, dbt, dct, sums);
                    else
                        backward_row<T, 0>(u + row, dy + row, A + d * nn, bt, ct, Dskip[d], nl, static_cast<int>(nn), s,
                            du + row, ddelta + row, dbt, dct, sums);
                    dD_part[b * nd + d] = sums.dD;
                    dbias_part[b * nd + d] = sums.dbias;
                }
                const bool owns_pair = tasks.slices == 1;
                transpose_to_states(dbt, nn, nl, owns_pair ? dB + pair * step_block : &dB_part[task * step_block]);
                transpose_to_states(dct, nn, nl, owns_pair ? dC + pair * step_block : &dC_part[task * step_block]);
            }
            // Only with slices: add up their partial dB, dC (the loop's barrier has passed).
            if (tasks.slices > 1)
            {
#pragma omp for schedule(static)
                for (int64_t i = 0; i < tasks.pairs * step_block; ++i)
                {
                    const int64_t pair = i / step_block, at = i % step_block;
                    T sb = T(0), sc = T(0);
                    for (int64_t sl = 0; sl < tasks.slices; ++sl)
                    {
                        sb += dB_part[(pair * tasks.slices + sl) * step_block + at];
                        sc += dC_part[(pair * tasks.slices + sl) * step_block + at];
                    }
                    dB[i] = sb;
                    dC[i] = sc;
                }
            }
        }

        // Per-batch sums -> dA, dD, ddelta_bias (small: D * N * B additions, not worth threads).
        for (int64_t d = 0; d < nd; ++d)
        {
            for (int64_t k = 0; k < nn; ++k)
            {
                double acc = 0.0;
                for (int64_t b = 0; b < nb; ++b)
                    acc += dA_part[(b * nd + d) * nn + k];
                dA[d * nn + k] = static_cast<T>(acc);
            }
            double acc_d = 0.0, acc_bias = 0.0;
            for (int64_t b = 0; b < nb; ++b)
            {
                acc_d += dD_part[b * nd + d];
                acc_bias += dbias_part[b * nd + d];
            }
            dD[d] = static_cast<T>(acc_d);
            dbias[d] = static_cast<T>(acc_bias);
        }
    }
    catch (const std::bad_alloc&)
    {
        return kOutOfMemory;
    }
    return kOk;
}

} // namespace

extern "C"
{
// Bumped when a signature below changes; cpu.py checks it.
int mmad_scan_abi_version()
{
    return 1;
}

int mmad_scan_max_state()
{
    return kMaxState;
}

#define MMAD_SCAN_EXPORT(SUFFIX, T)                                                                                    \
    int mmad_scan_fwd_##SUFFIX(const T* u, const T* delta, const T* A, const T* Bm, const T* Cm, const T* Dskip,       \
        const T* delta_bias, T* y, int64_t batch, int64_t dim, int64_t len, int64_t nstate, int64_t groups,            \
        int delta_softplus, int n_threads)                                                                             \
    {                                                                                                                  \
        return scan_forward<T>(                                                                                        \
            u, delta, A, Bm, Cm, Dskip, delta_bias, y, batch, dim, len, nstate, groups, delta_softplus, n_threads);    \
    }                                                                                                                  \
    int mmad_scan_bwd_##SUFFIX(const T* u, const T* delta, const T* A, const T* Bm, const T* Cm, const T* Dskip,       \
        const T* delta_bias, const T* dy, T* du, T* ddelta, T* dA, T* dB, T* dC, T* dD, T* ddelta_bias, int64_t batch, \
        int64_t dim, int64_t len, int64_t nstate, int64_t groups, int delta_softplus, int n_threads)                   \
    {                                                                                                                  \
        return scan_backward<T>(u, delta, A, Bm, Cm, Dskip, delta_bias, dy, du, ddelta, dA, dB, dC, dD, ddelta_bias,   \
            batch, dim, len, nstate, groups, delta_softplus, n_threads);                                               \
    }

MMAD_SCAN_EXPORT(f32, float)
MMAD_SCAN_EXPORT(f64, double)

#undef MMAD_SCAN_EXPORT

} // extern "C"
