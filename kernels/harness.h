// kernels/harness.h — one harness for every row of the kernel table (ggml's test-backend-ops,
// llm.c's dev/cuda): each kernel registers, beside its rows, a list of cases (odd sizes,
// batch 1, T = 1, NaN inputs where they matter) and the error model its float rows are held
// to. For a case the harness
//
//   1. fills the inputs from a fixed Philox stream (uniform in [-1, 1); a case's prepare()
//      derives what must be consistent: one-hot targets, positive variances, argmax indices),
//      rounded to float so that every row sees the same values;
//   2. runs the naive row in float64 on the host: the reference;
//   3. runs the float row under test on its backend's memory (host or CUDA), with the outputs
//      it must write filled with NaN (a forgotten element shows up) and the ones it updates in
//      place starting from the same values as the reference;
//   4. compares: integers exactly; a float element passes when
//      |row - reference| <= tolerance * max(|reference|, rms(reference)), relative to the value
//      and to the typical magnitude of the tensor where the value is small by cancellation;
//      NaN exactly where the reference is NaN.
//
// With timing (bench/kernel_lab), it times the same call: CUDA events on the GPU, the host
// clock on the host, after a warm-up call, and reports GFLOP/s (where the case states its
// flops) and GB/s (bytes of every buffer read and written once).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/registry.h"

namespace hisvid::harness {

// ---------------------------------------------------------------------------------------
// Error models of the float rows against the float64 reference. float's unit roundoff is
// 2^-24 = 6.0e-8.
// ---------------------------------------------------------------------------------------

// Copies, max-pool values and argmax, masks, counts, and single IEEE operations on float
// inputs (add, sub, mul): the float result is the correctly rounded reference, to the bit.
constexpr double kExact = 0.0;
// One or a few rounded operations per element, including CUDA's expf/tanhf (<= 2 ulp), the
// float tanh's rational approximation (a few ulp) and FMA contraction: a few ulp
// (2^-23 = 1.2e-7) of the value.
constexpr double kElementwise = 1e-6;
// Fused chains of about ten rounded operations (LSTM cell, optimizer updates, batch-norm
// normalisation): the per-operation errors add up, still far from any real bug (>= 1e-3).
constexpr double kFused = 4e-6;
// Sums of K float terms (GEMM, reductions): the error relative to the scale of the result
// grows like sqrt(K) * 2^-24 per standard deviation (random-walk rounding); 1e-6 * sqrt(K)
// leaves a margin of about 8x at 5 sigma, while TF32 (2^-11 ~ 4.9e-4 relative per product)
// breaks it by more than 10x up to K ~ 1000.
inline double sum_tolerance(int64_t terms) { return 1e-6 * std::sqrt(double(std::max<int64_t>(terms, 1))); }
// cuDNN convolutions may pick Winograd or FFT algorithms, whose transforms add a few
// roundings per output on top of the K-term sum. For the CUDA rows of a convolution only
// (Case::tol_cuda): the default and timed rows may run cuDNN, and the hand-written rows sum in
// orders of their own (split channels met by shuffles, tiles) that no GPU run has yet measured
// against sum_tolerance (kernel_lab's "error used" column will); the host rows are held to
// sum_tolerance.
inline double conv_tolerance(int64_t terms) { return 4e-6 * std::sqrt(double(std::max<int64_t>(terms, 1))); }

// ---------------------------------------------------------------------------------------
// Buffers.
// ---------------------------------------------------------------------------------------

enum class Access { In, Out, InOut, HostOut };  // HostOut: host memory on every backend
// Real: the row's float type (float or double); Float64: double in every row (running sums).
enum class Element { Real, Float64, Int32, Int64, UInt8 };

struct Buffer {
  std::string name;
  Access access = Access::In;
  Element element = Element::Real;
  int64_t n = 0;
  bool present = true;
  std::vector<double> values;  // contents on the host; integers exactly
};

// Where a row's buffers live and how it is launched: host memory, or the current CUDA
// device's memory and stream (harness.cpp).
class Memory {
 public:
  virtual ~Memory() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* ptr) = 0;
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;
  virtual void download(void* dst, const void* src, size_t bytes) = 0;
  virtual Launch launch() = 0;
  virtual void synchronize() = 0;
  // Seconds per call of `call`, repeated until min_seconds have passed after one warm-up
  // call; `calls` receives the count.
  virtual double time(const std::function<void()>& call, double min_seconds, int* calls) = 0;
};

// Why `backend` cannot run in this process ("" when it can).
std::string unavailable_reason(Backend backend);
std::unique_ptr<Memory> memory_for(Backend backend);

// Typed storage of buffers on one Memory, converted from and to Buffer::values.
class Storage {
 public:
  Storage(Memory& memory, size_t real_size) : memory_(memory), real_size_(real_size) {}
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  // Allocates and uploads every present buffer (HostOut ones on the host); pointers()[i] is
  // null for an absent one.
  void upload(const std::vector<Buffer>& buffers);
  // The contents of every buffer after a run.
  std::vector<std::vector<double>> download(const std::vector<Buffer>& buffers) const;
  const std::vector<void*>& pointers() const { return pointers_; }

 private:
  size_t element_size(Element e) const;

  Memory& memory_;
  size_t real_size_;
  std::vector<void*> pointers_;
  std::vector<bool> on_host_;
  std::vector<size_t> bytes_;
};

// Walks an argument struct's buffers(): marks every pointer present, describes the buffers,
// or binds them to storage.
class Visitor {
 public:
  enum class Mode { Mark, Describe, Bind };
  explicit Visitor(Mode mode, const std::vector<void*>* pointers = nullptr)
      : mode_(mode), pointers_(pointers) {}

  template <typename E>
  void in(const char* name, const E*& p, int64_t n) {
    visit(name, Access::In, p, n);
  }
  template <typename E>
  void out(const char* name, E*& p, int64_t n) {
    visit(name, Access::Out, p, n);
  }
  template <typename E>
  void inout(const char* name, E*& p, int64_t n) {
    visit(name, Access::InOut, p, n);
  }
  template <typename E>
  void host_out(const char* name, E*& p, int64_t n) {
    visit(name, Access::HostOut, p, n);
  }
  // double in the float rows as well: set by the case's prepare(), compared exactly.
  void float64_in(const char* name, const double*& p, int64_t n) { visit(name, Access::In, p, n, true); }
  void float64_inout(const char* name, double*& p, int64_t n) { visit(name, Access::InOut, p, n, true); }

  const std::vector<Buffer>& described() const { return described_; }

 private:
  template <typename P>
  void visit(const char* name, Access access, P& p, int64_t n, bool float64 = false) {
    using E = std::remove_const_t<std::remove_pointer_t<P>>;
    static_assert(std::is_same_v<E, float> || std::is_same_v<E, double> || std::is_same_v<E, int32_t> ||
                      std::is_same_v<E, int64_t> || std::is_same_v<E, uint8_t>,
                  "kernel buffers hold float, double, int32, int64 or uint8");
    if (mode_ == Mode::Mark) {
      p = reinterpret_cast<P>(&sentinel_);
    } else if (mode_ == Mode::Describe) {
      Buffer b;
      b.name = name;
      b.access = access;
      b.element = float64                      ? Element::Float64
                  : std::is_same_v<E, int32_t> ? Element::Int32
                  : std::is_same_v<E, int64_t> ? Element::Int64
                  : std::is_same_v<E, uint8_t> ? Element::UInt8
                                               : Element::Real;
      b.n = std::max<int64_t>(n, 0);
      b.present = p != nullptr;
      described_.push_back(std::move(b));
    } else {
      p = static_cast<P>((*pointers_)[index_++]);
    }
  }

  alignas(16) static inline char sentinel_[16] = {};
  Mode mode_;
  const std::vector<void*>* pointers_;
  size_t index_ = 0;
  std::vector<Buffer> described_;
};

// ---------------------------------------------------------------------------------------
// Cases.
// ---------------------------------------------------------------------------------------

// A case's prepare() sets inputs through the argument struct's const pointers.
template <typename E>
E* writable(const E* p) {
  return const_cast<E*>(p);
}

template <template <typename> class A>
struct Case {
  std::string name;
  std::function<void(A<float>&)> setup_float;
  std::function<void(A<double>&)> setup_double;
  std::function<void(A<double>&)> prepare;  // on the reference's host buffers, before rounding
  double tolerance = kExact;
  std::map<std::string, double> tolerance_of;  // per output, where it differs
  // The CUDA rows', where they differ. Lookup (tolerance_for): the CUDA rows' per output, the
  // per output above, the CUDA rows' for all, the one for all: a per-output tolerance given with
  // tol() holds on CUDA too unless tol_cuda(buffer, ...) replaces it.
  std::optional<double> cuda_tolerance;
  std::map<std::string, double> cuda_tolerance_of;
  double flops = 0.0;

  Case& tol(double t) { return tolerance = t, *this; }
  Case& tol(const std::string& buffer, double t) { return tolerance_of[buffer] = t, *this; }
  Case& tol_cuda(double t) { return cuda_tolerance = t, *this; }
  Case& tol_cuda(const std::string& buffer, double t) { return cuda_tolerance_of[buffer] = t, *this; }
  // Output `buffer`'s tolerance on `backend`: the most specific that is set.
  double tolerance_for(Backend backend, const std::string& buffer) const {
    const bool cuda = backend == Backend::Cuda;
    if (cuda && cuda_tolerance_of.count(buffer) != 0) return cuda_tolerance_of.at(buffer);
    if (tolerance_of.count(buffer) != 0) return tolerance_of.at(buffer);
    if (cuda && cuda_tolerance) return *cuda_tolerance;
    return tolerance;
  }
  Case& with_flops(double f) { return flops = f, *this; }
  // prepare(args) with args an A<double> bound to the reference's host buffers.
  template <typename F>
  Case& prepare_with(F f) {
    return prepare = f, *this;
  }
};

template <template <typename> class A>
class Cases {
 public:
  // setup(args): a generic lambda that sets the sizes and scalars of an A<float> or an
  // A<double> whose pointers are all marked present; it sets an optional one to null to
  // leave it out. It must not read or write through the pointers.
  template <typename Setup>
  Case<A>& add(std::string name, Setup setup) {
    Case<A> c;
    c.name = std::move(name);
    c.setup_float = [setup](A<float>& a) { setup(a); };
    c.setup_double = [setup](A<double>& a) { setup(a); };
    cases_.push_back(std::move(c));
    return cases_.back();
  }
  std::vector<Case<A>>& all() { return cases_; }

 private:
  std::vector<Case<A>> cases_;
};

// ---------------------------------------------------------------------------------------
// The type-erased view the test and the lab walk.
// ---------------------------------------------------------------------------------------

struct RowInfo {
  std::string name;
  Backend backend;
  bool is_default;
};

struct Timing {
  double seconds = 0.0;  // per call
  int calls = 0;
  double flops = 0.0;
  double bytes = 0.0;
};

class KernelSpec {
 public:
  virtual ~KernelSpec() = default;
  virtual const char* name() const = 0;
  // The float rows (the naive one included); the float64 naive row is the reference.
  virtual std::vector<RowInfo> rows() const = 0;
  virtual size_t case_count() const = 0;
  virtual const std::string& case_name(size_t i) const = 0;
  virtual double case_flops(size_t i) const = 0;
  // Whether row `row` runs its own code on case i (Implementation::applies); where it does
  // not, it hands the case to another row and is neither checked nor timed on it.
  virtual bool applies(size_t i, const std::string& row) const = 0;
  // "" when row `row` passes case i; otherwise what differs, buffer by buffer. `error_used`,
  // when given, receives the largest error of any element as a fraction of what its tolerance
  // allows (0 exact, 1 at the limit, infinity for a NaN or a wrong integer): the data to set a
  // tolerance by.
  virtual std::string check(size_t i, const std::string& row, double* error_used = nullptr) const = 0;
  virtual Timing time(size_t i, const std::string& row, double min_seconds) const = 0;
  // "" when rows `row` and `other` write the same bits on case i (from the same inputs);
  // otherwise the first element that differs, buffer by buffer. For rows that promise it.
  virtual std::string same_bits(size_t i, const std::string& row, const std::string& other) const = 0;
};

// Every kernel with cases, by name.
const std::vector<const KernelSpec*>& kernel_specs();
void add_spec(std::unique_ptr<KernelSpec> spec);

// Fills, from Philox, buffer index `buffer` of case `case_index`, the initial contents.
void fill_initial(std::vector<Buffer>& buffers, uint64_t case_index);
// float(x) for every real input and in-place buffer: what a float row receives.
void round_to_float(std::vector<Buffer>& buffers);
// "" or the description of every output that differs beyond its tolerance; `error_used` as
// KernelSpec::check's.
std::string compare(const std::vector<Buffer>& reference, const std::vector<std::vector<double>>& result,
                    const std::function<double(const std::string&)>& tolerance_of,
                    double* error_used = nullptr);
double bytes_moved(const std::vector<Buffer>& buffers, size_t real_size);
// The outputs of `buffers` where results a and b differ in any bit: "" when none does.
std::string bit_differences(const std::vector<Buffer>& buffers, const std::vector<std::vector<double>>& a,
                            const std::vector<std::vector<double>>& b);

template <template <typename> class A>
class KernelCases final : public KernelSpec {
 public:
  explicit KernelCases(std::vector<Case<A>> cases) : cases_(std::move(cases)) {}

  const char* name() const override { return A<float>::kName; }

  std::vector<RowInfo> rows() const override {
    std::vector<RowInfo> out;
    for (const auto& row : KernelTable<A<float>>::get().rows())
      out.push_back({row.name, row.backend, row.is_default});
    return out;
  }
  size_t case_count() const override { return cases_.size(); }
  const std::string& case_name(size_t i) const override { return cases_[i].name; }
  double case_flops(size_t i) const override { return cases_[i].flops; }

  bool applies(size_t i, const std::string& row_name) const override {
    const Implementation<A<float>>& row = find_row(row_name);
    return row.applies == nullptr || row.applies(make<float>(cases_[i].setup_float));
  }

  std::string check(size_t i, const std::string& row_name, double* error_used = nullptr) const override {
    const Case<A>& c = cases_[i];
    std::vector<Buffer> reference = initial(i);
    const std::vector<Buffer> start = reference;
    run_reference(c, reference);
    const std::vector<std::vector<double>> result = run_row(c, start, row_name, nullptr, 0.0);
    const Backend backend = find_row(row_name).backend;
    return compare(
        reference, result,
        [&c, backend](const std::string& buffer) { return c.tolerance_for(backend, buffer); }, error_used);
  }

  std::string same_bits(size_t i, const std::string& row_name, const std::string& other) const override {
    const std::vector<Buffer> start = initial(i);
    return bit_differences(start, run_row(cases_[i], start, row_name, nullptr, 0.0),
                           run_row(cases_[i], start, other, nullptr, 0.0));
  }

  Timing time(size_t i, const std::string& row_name, double min_seconds) const override {
    Timing timing;
    const std::vector<Buffer> start = initial(i);
    run_row(cases_[i], start, row_name, &timing, min_seconds);
    timing.flops = cases_[i].flops;
    timing.bytes = bytes_moved(start, sizeof(float));
    return timing;
  }

 private:
  const Implementation<A<float>>& find_row(const std::string& row_name) const {
    const Implementation<A<float>>* row = KernelTable<A<float>>::get().find(row_name);
    if (row == nullptr) throw std::invalid_argument(std::string(name()) + " has no row " + row_name);
    return *row;
  }

  template <typename T>
  static A<T> make(const std::function<void(A<T>&)>& setup) {
    A<T> args{};
    Visitor mark(Visitor::Mode::Mark);
    args.buffers(mark);
    setup(args);
    return args;
  }
  template <typename T>
  static std::vector<Buffer> describe(A<T>& args) {
    Visitor describe(Visitor::Mode::Describe);
    args.buffers(describe);
    return describe.described();
  }
  template <typename T>
  static void bind(A<T>& args, const Storage& storage) {
    Visitor bind(Visitor::Mode::Bind, &storage.pointers());
    args.buffers(bind);
  }

  // The buffers of case i with their initial contents, as every row receives them.
  std::vector<Buffer> initial(size_t i) const {
    const Case<A>& c = cases_[i];
    A<double> args = make<double>(c.setup_double);
    std::vector<Buffer> buffers = describe(args);
    fill_initial(buffers, i);
    if (c.prepare) {
      std::unique_ptr<Memory> host = memory_for(Backend::Naive);
      Storage storage(*host, sizeof(double));
      storage.upload(buffers);
      bind(args, storage);
      c.prepare(args);
      const std::vector<std::vector<double>> prepared = storage.download(buffers);
      for (size_t b = 0; b < buffers.size(); ++b) buffers[b].values = prepared[b];
    }
    round_to_float(buffers);
    return buffers;
  }

  // Runs the float64 naive row; the buffers' values become its results.
  void run_reference(const Case<A>& c, std::vector<Buffer>& buffers) const {
    const Implementation<A<double>>* naive = KernelTable<A<double>>::get().find(Backend::Naive);
    if (naive == nullptr)
      throw std::logic_error(std::string(name()) + ": no float64 naive row to check against");
    A<double> args = make<double>(c.setup_double);
    std::unique_ptr<Memory> host = memory_for(Backend::Naive);
    Storage storage(*host, sizeof(double));
    storage.upload(buffers);
    bind(args, storage);
    naive->run(args, host->launch());
    const std::vector<std::vector<double>> result = storage.download(buffers);
    for (size_t b = 0; b < buffers.size(); ++b) buffers[b].values = result[b];
  }

  // Runs (or, with timing, times) row `row_name` in float from `start`; returns its buffers.
  std::vector<std::vector<double>> run_row(const Case<A>& c, const std::vector<Buffer>& start,
                                           const std::string& row_name, Timing* timing,
                                           double min_seconds) const {
    const Implementation<A<float>>* row = &find_row(row_name);
    A<float> args = make<float>(c.setup_float);
    const std::vector<Buffer> described = describe(args);
    for (size_t b = 0; b < described.size(); ++b) {
      if (described[b].n != start[b].n || described[b].present != start[b].present) {
        throw std::logic_error(std::string(name()) + " case " + c.name + ": buffer " + described[b].name +
                               " differs between float and float64");
      }
    }
    std::unique_ptr<Memory> memory = memory_for(row->backend);
    Storage storage(*memory, sizeof(float));
    storage.upload(start);
    bind(args, storage);
    const Launch launch = memory->launch();
    if (timing != nullptr) {
      timing->seconds = memory->time([&] { row->run(args, launch); }, min_seconds, &timing->calls);
      return {};
    }
    row->run(args, launch);
    memory->synchronize();
    return storage.download(start);
  }

  std::vector<Case<A>> cases_;
};

// Registers the cases of kernel A (kernels/<family>_table.cpp): `const bool r = add_cases(cases);`
template <template <typename> class A>
bool add_cases(Cases<A>& cases) {
  add_spec(std::make_unique<KernelCases<A>>(std::move(cases.all())));
  return true;
}

}  // namespace hisvid::harness
