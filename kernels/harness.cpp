// kernels/harness.cpp — the untyped half of kernels/harness.h: memories, storage,
// initial contents, comparison.
#include "kernels/harness.h"

#include <chrono>
#include <cstdlib>
#include <iomanip>
#include <sstream>
#include <stdexcept>

#include "kernels/philox.h"

#ifdef HISVID_WITH_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda_context.h"
#endif

namespace hisvid::harness {

namespace {

constexpr uint64_t kSeed = 0x5EED0000C0FFEEull;

class HostMemory final : public Memory {
 public:
  void* allocate(size_t bytes) override { return std::malloc(std::max<size_t>(bytes, 1)); }
  void release(void* ptr) override { std::free(ptr); }
  void upload(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
  }
  void download(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
  }
  Launch launch() override { return {}; }
  void synchronize() override {}
  double time(const std::function<void()>& call, double min_seconds, int* calls) override {
    using Clock = std::chrono::steady_clock;
    call();  // warm-up
    int n = 0;
    const Clock::time_point start = Clock::now();
    double elapsed = 0.0;
    do {
      call();
      ++n;
      elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    } while (elapsed < min_seconds);
    *calls = n;
    return elapsed / n;
  }
};

#ifdef HISVID_WITH_CUDA
// The current device's memory and context stream (the stream the context's library handles
// and workspace belong to).
class CudaMemory final : public Memory {
 public:
  CudaMemory() : stream_(cuda::current_context().stream()) {}
  void* allocate(size_t bytes) override {
    void* ptr = nullptr;
    CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(bytes, 1)));
    return ptr;
  }
  void release(void* ptr) override { (void)cudaFree(ptr); }
  void upload(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void download(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  Launch launch() override { return {stream_}; }
  void synchronize() override { CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  double time(const std::function<void()>& call, double min_seconds, int* calls) override {
    call();  // warm-up
    synchronize();
    cudaEvent_t start = nullptr, stop = nullptr;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    // Batches of calls between two events, doubling until a batch lasts min_seconds.
    int n = 1;
    float ms = 0.0f;
    for (;;) {
      CUDA_CHECK(cudaEventRecord(start, stream_));
      for (int i = 0; i < n; ++i) call();
      CUDA_CHECK(cudaEventRecord(stop, stream_));
      CUDA_CHECK(cudaEventSynchronize(stop));
      CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (ms * 1e-3 >= min_seconds || n >= (1 << 20)) break;
      n *= 2;
    }
    (void)cudaEventDestroy(start);
    (void)cudaEventDestroy(stop);
    *calls = n;
    return ms * 1e-3 / n;
  }

 private:
  cudaStream_t stream_;
};
#endif

double rms_of_finite(const std::vector<double>& v) {
  double s = 0.0;
  size_t count = 0;
  for (double x : v) {
    if (std::isfinite(x)) s += x * x, ++count;
  }
  return count == 0 ? 0.0 : std::sqrt(s / double(count));
}

// Bytes of an element of a fixed type (0 for reals, whose size is the row's float or double).
size_t fixed_size(Element e) {
  return e == Element::Int32                              ? 4
         : (e == Element::Int64 || e == Element::Float64) ? 8
         : e == Element::UInt8                            ? 1
                                                          : 0;
}

const char* element_name(Element e) {
  return e == Element::Int32     ? "int32"
         : e == Element::Int64   ? "int64"
         : e == Element::UInt8   ? "uint8"
         : e == Element::Float64 ? "float64"
                                 : "real";
}

std::vector<std::unique_ptr<KernelSpec>>& spec_store() {
  static std::vector<std::unique_ptr<KernelSpec>> store;
  return store;
}

}  // namespace

std::string unavailable_reason(Backend backend) {
  if (backend != Backend::Cuda) return "";
#ifdef HISVID_WITH_CUDA
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("no CUDA device: ") + cudaGetErrorString(status);
  }
  return count == 0 ? "no CUDA device" : "";
#else
  return "this build has no CUDA backend";
#endif
}

std::unique_ptr<Memory> memory_for(Backend backend) {
  if (backend != Backend::Cuda) return std::make_unique<HostMemory>();
  const std::string reason = unavailable_reason(backend);
  if (!reason.empty()) throw std::runtime_error("cannot run a CUDA row: " + reason);
#ifdef HISVID_WITH_CUDA
  return std::make_unique<CudaMemory>();
#else
  return nullptr;
#endif
}

// ---------------------------------------------------------------------------------------
// Storage.
// ---------------------------------------------------------------------------------------

size_t Storage::element_size(Element e) const { return fixed_size(e) != 0 ? fixed_size(e) : real_size_; }

Storage::~Storage() {
  for (size_t b = 0; b < pointers_.size(); ++b) {
    if (pointers_[b] == nullptr) continue;
    if (on_host_[b]) {
      std::free(pointers_[b]);
    } else {
      memory_.release(pointers_[b]);
    }
  }
}

namespace {

// values -> bytes of the element type, and back.
std::vector<unsigned char> encode(const std::vector<double>& values, Element e, size_t real_size) {
  const size_t size = fixed_size(e) != 0 ? fixed_size(e) : real_size;
  std::vector<unsigned char> bytes(values.size() * size);
  for (size_t i = 0; i < values.size(); ++i) {
    unsigned char* at = bytes.data() + i * size;
    if (e == Element::Int32) {
      const int32_t v = static_cast<int32_t>(values[i]);
      std::memcpy(at, &v, size);
    } else if (e == Element::Int64) {
      const int64_t v = static_cast<int64_t>(values[i]);
      std::memcpy(at, &v, size);
    } else if (e == Element::UInt8) {
      *at = static_cast<uint8_t>(values[i]);
    } else if (size == sizeof(float)) {
      const float v = static_cast<float>(values[i]);
      std::memcpy(at, &v, size);
    } else {
      std::memcpy(at, &values[i], size);
    }
  }
  return bytes;
}

std::vector<double> decode(const unsigned char* bytes, size_t n, Element e, size_t real_size) {
  const size_t size = fixed_size(e) != 0 ? fixed_size(e) : real_size;
  std::vector<double> values(n);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char* at = bytes + i * size;
    if (e == Element::Int32) {
      int32_t v;
      std::memcpy(&v, at, size);
      values[i] = v;
    } else if (e == Element::Int64) {
      int64_t v;
      std::memcpy(&v, at, size);
      values[i] = static_cast<double>(v);
    } else if (e == Element::UInt8) {
      values[i] = *at;
    } else if (size == sizeof(float)) {
      float v;
      std::memcpy(&v, at, size);
      values[i] = v;
    } else {
      std::memcpy(&values[i], at, size);
    }
  }
  return values;
}

}  // namespace

void Storage::upload(const std::vector<Buffer>& buffers) {
  for (const Buffer& b : buffers) {
    const bool host = b.access == Access::HostOut;
    const size_t bytes = size_t(b.n) * element_size(b.element);
    void* ptr = nullptr;
    if (b.present) {
      const std::vector<unsigned char> data = encode(b.values, b.element, real_size_);
      if (host) {
        ptr = std::malloc(std::max<size_t>(bytes, 1));
        if (bytes > 0) std::memcpy(ptr, data.data(), bytes);
      } else {
        ptr = memory_.allocate(bytes);
        memory_.upload(ptr, data.data(), bytes);
      }
    }
    pointers_.push_back(ptr);
    on_host_.push_back(host);
    bytes_.push_back(bytes);
  }
}

std::vector<std::vector<double>> Storage::download(const std::vector<Buffer>& buffers) const {
  std::vector<std::vector<double>> out(buffers.size());
  for (size_t b = 0; b < buffers.size(); ++b) {
    if (pointers_[b] == nullptr) continue;
    std::vector<unsigned char> data(bytes_[b]);
    if (on_host_[b]) {
      if (bytes_[b] > 0) std::memcpy(data.data(), pointers_[b], bytes_[b]);
    } else {
      memory_.download(data.data(), pointers_[b], bytes_[b]);
    }
    out[b] = decode(data.data(), size_t(buffers[b].n), buffers[b].element, real_size_);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Contents and comparison.
// ---------------------------------------------------------------------------------------

void fill_initial(std::vector<Buffer>& buffers, uint64_t case_index) {
  for (size_t b = 0; b < buffers.size(); ++b) {
    Buffer& buffer = buffers[b];
    buffer.values.assign(size_t(buffer.present ? buffer.n : 0), 0.0);
    if (!buffer.present) continue;
    const uint64_t stream = case_index * 64 + b;
    for (size_t i = 0; i < buffer.values.size(); ++i) {
      double& v = buffer.values[i];
      if (buffer.element != Element::Real) {
        v = buffer.access == Access::In ? 0.0 : -1.0;  // inputs set by prepare(); outputs a sentinel
      } else if (buffer.access == Access::Out) {
        v = std::numeric_limits<double>::quiet_NaN();
      } else {
        v = 2.0 * double(philox_uniform(kSeed, stream, i)) - 1.0;
      }
    }
  }
}

void round_to_float(std::vector<Buffer>& buffers) {
  for (Buffer& b : buffers) {
    if (b.element != Element::Real) continue;
    for (double& v : b.values) v = double(static_cast<float>(v));
  }
}

std::string bit_differences(const std::vector<Buffer>& buffers, const std::vector<std::vector<double>>& a,
                            const std::vector<std::vector<double>>& b) {
  std::ostringstream differences;
  differences << std::setprecision(std::numeric_limits<double>::max_digits10);
  for (size_t k = 0; k < buffers.size(); ++k) {
    if (!buffers[k].present || buffers[k].access == Access::In) continue;
    size_t differ = 0, first = 0;
    for (size_t i = a[k].size(); i-- > 0;) {
      if (std::memcmp(&a[k][i], &b[k][i], sizeof(double)) != 0) ++differ, first = i;
    }
    if (differ > 0) {
      differences << buffers[k].name << ": " << differ << " of " << a[k].size()
                  << " elements differ; first at " << first << ": " << a[k][first] << " against "
                  << b[k][first] << "\n";
    }
  }
  return differences.str();
}

std::string compare(const std::vector<Buffer>& reference, const std::vector<std::vector<double>>& result,
                    const std::function<double(const std::string&)>& tolerance_of, double* error_used) {
  std::ostringstream failures;
  if (error_used != nullptr) *error_used = 0.0;
  for (size_t b = 0; b < reference.size(); ++b) {
    const Buffer& ref = reference[b];
    if (!ref.present || ref.access == Access::In) continue;
    const std::vector<double>& got = result[b];
    const double tol = ref.element == Element::Real ? tolerance_of(ref.name) : 0.0;
    const double scale = rms_of_finite(ref.values);
    size_t bad = 0, worst = 0;
    double worst_ratio = -1.0;
    for (size_t i = 0; i < ref.values.size(); ++i) {
      const double r = ref.values[i], g = got[i];
      double ratio = 0.0;
      if (std::isnan(r) || std::isnan(g)) {
        ratio = std::isnan(r) && std::isnan(g) ? 0.0 : std::numeric_limits<double>::infinity();
      } else if (tol == 0.0) {
        const double expected = ref.element == Element::Real ? double(static_cast<float>(r)) : r;
        ratio = g == expected ? 0.0 : std::numeric_limits<double>::infinity();
      } else if (std::isinf(r) || std::isinf(g)) {
        ratio = r == g ? 0.0 : std::numeric_limits<double>::infinity();
      } else {
        ratio = std::fabs(g - r) / (tol * std::max(std::fabs(r), scale));
        if (std::isnan(ratio)) ratio = g == r ? 0.0 : std::numeric_limits<double>::infinity();
      }
      if (error_used != nullptr) *error_used = std::max(*error_used, ratio);
      if (ratio > 1.0) {
        if (ratio > worst_ratio) worst_ratio = ratio, worst = i;
        ++bad;
      }
    }
    if (bad > 0) {
      failures << ref.name << " (" << element_name(ref.element) << "): " << bad << " of " << ref.values.size()
               << " elements beyond tolerance " << tol << " x max(|ref|, rms " << scale << "); worst at "
               << worst << ": " << got[worst] << " against " << ref.values[worst] << " (" << worst_ratio
               << " x the allowed error)\n";
    }
  }
  return failures.str();
}

double bytes_moved(const std::vector<Buffer>& buffers, size_t real_size) {
  double bytes = 0.0;
  for (const Buffer& b : buffers) {
    if (!b.present) continue;
    const double size = fixed_size(b.element) != 0 ? double(fixed_size(b.element)) : double(real_size);
    bytes += double(b.n) * size * (b.access == Access::InOut ? 2.0 : 1.0);
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------
// The list of kernels.
// ---------------------------------------------------------------------------------------

void add_spec(std::unique_ptr<KernelSpec> spec) { spec_store().push_back(std::move(spec)); }

const std::vector<const KernelSpec*>& kernel_specs() {
  static const std::vector<const KernelSpec*> sorted = [] {
    std::vector<const KernelSpec*> v;
    for (const auto& spec : spec_store()) v.push_back(spec.get());
    std::sort(v.begin(), v.end(),
              [](const KernelSpec* a, const KernelSpec* b) { return std::string(a->name()) < b->name(); });
    return v;
  }();
  return sorted;
}

}  // namespace hisvid::harness
