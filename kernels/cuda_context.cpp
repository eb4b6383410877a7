#include "kernels/cuda_context.h"

#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace hisvid::cuda {

void throw_call_error(const char* library, const char* expr, const char* file, int line, const char* what) {
  throw std::runtime_error(std::string(library) + " error at " + file + ":" + std::to_string(line) + ": " +
                           expr + ": " + what);
}

const char* cublas_status_string(cublasStatus_t status) {
#if CUBLAS_VER_MAJOR >= 12
  return cublasGetStatusString(status);
#else
  return status == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "cuBLAS error";
#endif
}

TensorDescriptor make_tensor_descriptor() {
  cudnnTensorDescriptor_t desc = nullptr;
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&desc));
  return TensorDescriptor(desc);
}

FilterDescriptor make_filter_descriptor() {
  cudnnFilterDescriptor_t desc = nullptr;
  CUDNN_CHECK(cudnnCreateFilterDescriptor(&desc));
  return FilterDescriptor(desc);
}

ConvolutionDescriptor make_convolution_descriptor() {
  cudnnConvolutionDescriptor_t desc = nullptr;
  CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&desc));
  return ConvolutionDescriptor(desc);
}

DeviceBuffer::DeviceBuffer(size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMalloc(&ptr_, bytes));
  bytes_ = bytes;
}

void DeviceBuffer::reset() {
  if (ptr_ != nullptr) {
    (void)cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
}

DeviceGuard::DeviceGuard(int device) {
  CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device) {
    CUDA_CHECK(cudaSetDevice(device));
    changed_ = true;
  }
}

DeviceGuard::~DeviceGuard() {
  if (changed_) (void)cudaSetDevice(previous_);
}

Context::Context(int device) : device_(device) {
  DeviceGuard guard(device);
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  stream_ = UniqueStream(stream);

  cublasHandle_t blas = nullptr;
  CUBLAS_CHECK(cublasCreate(&blas));
  cublas_ = UniqueCublas(blas);
  CUBLAS_CHECK(cublasSetStream(blas, stream));
  CUBLAS_CHECK(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH));

  cudnnHandle_t dnn = nullptr;
  CUDNN_CHECK(cudnnCreate(&dnn));
  cudnn_ = UniqueCudnn(dnn);
  CUDNN_CHECK(cudnnSetStream(dnn, stream));
}

Context::~Context() {
  // Let queued work finish before the handles, the stream and the workspace go.
  if (stream_.get() != nullptr) (void)cudaStreamSynchronize(stream_.get());
}

void Context::set_allow_tf32(bool allow) {
  CUBLAS_CHECK(cublasSetMathMode(cublas(), allow ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  allow_tf32_ = allow;
}

void Context::set_workspace_provider(WorkspaceProvider provider) {
  CUDA_CHECK(cudaStreamSynchronize(stream()));
  own_workspace_.reset();
  provider_ = std::move(provider);
}

void* Context::workspace(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (provider_) {
    void* ptr = provider_(bytes);
    if (ptr == nullptr)
      throw std::runtime_error("hisvid::cuda::Context: the workspace provider returned null");
    return ptr;
  }
  if (own_workspace_.bytes() < bytes) {
    // Growing frees the old buffer, which queued work may still read: wait for it first.
    CUDA_CHECK(cudaStreamSynchronize(stream()));
    own_workspace_.reset();
    DeviceGuard guard(device_);
    const size_t kGranule = size_t(1) << 20;
    own_workspace_ = DeviceBuffer((bytes + kGranule - 1) / kGranule * kGranule);
  }
  return own_workspace_.get();
}

namespace {

// One context per device, created on first use. The registry is a function-local static
// whose constructor initialises the CUDA runtime first, so it is destroyed (at exit) before
// the runtime tears itself down.
class ContextRegistry {
 public:
  ContextRegistry() {
    const cudaError_t status = cudaGetDeviceCount(&device_count_);
    if (status != cudaSuccess) {
      error_ = cudaGetErrorString(status);
      device_count_ = 0;
      (void)cudaGetLastError();  // clear it so later launch checks do not report it
    }
    contexts_.resize(static_cast<size_t>(device_count_));
  }

  Context& get(int device) {
    if (device < 0 || device >= device_count_) {
      throw std::runtime_error("hisvid::cuda::context: no CUDA device " + std::to_string(device) + " (" +
                               std::to_string(device_count_) + " device(s)" +
                               (error_.empty() ? std::string() : ", " + error_) + ")");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    std::unique_ptr<Context>& slot = contexts_[static_cast<size_t>(device)];
    if (!slot) slot = std::make_unique<Context>(device);
    return *slot;
  }

 private:
  int device_count_ = 0;
  std::string error_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<Context>> contexts_;
};

}  // namespace

Context& context(int device) {
  static ContextRegistry registry;
  return registry.get(device);
}

Context& current_context() {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  return context(device);
}

Context& context_for_stream(cudaStream_t stream, const char* op) {
  Context& ctx = current_context();
  if (stream != ctx.stream()) {
    throw std::runtime_error(std::string("hisvid::cuda::") + op +
                             ": must run on the context stream of device " + std::to_string(ctx.device()) +
                             " (its library handles and workspace are ordered on that stream)");
  }
  return ctx;
}

int multiprocessors() {
  thread_local int cached_device = -1, cached_count = 1;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  if (device != cached_device) {
    int count = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    cached_device = device, cached_count = count > 1 ? count : 1;
  }
  return cached_count;
}

namespace {

std::mutex& timed_choices_mutex() {
  static std::mutex mutex;
  return mutex;
}

std::vector<TimedChoice>& timed_choice_record() {
  static std::vector<TimedChoice> record;
  return record;
}

}  // namespace

void record_timed_choice(TimedChoice choice) {
  std::lock_guard<std::mutex> lock(timed_choices_mutex());
  timed_choice_record().push_back(std::move(choice));
}

std::vector<TimedChoice> timed_choices() {
  std::lock_guard<std::mutex> lock(timed_choices_mutex());
  return timed_choice_record();
}

}  // namespace hisvid::cuda
