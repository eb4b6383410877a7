// The CUDA entry points of engine/cuda_device.h: the caching allocator, copies, zeroing and
// synchronisation, all ordered on the device's context stream (kernels/cuda_context.h).
//
// Caching allocator (engine/block_cache.h over cudaMalloc and cudaFree). cudaMalloc and
// cudaFree are slow and synchronise the device, and a training step of fixed shape asks for the
// same sizes every step. So freed blocks are cached by size class, and the next request of that
// class takes one back: once warm, a step makes no cudaMalloc or cudaFree (and can be captured
// into a CUDA graph, whose replays keep their blocks in the graph's pool). Reuse without
// synchronising is safe because every kernel, copy and memset of the engine runs on the one
// context stream: work that used a freed block is queued before any work that uses it again.
// The allocator also provides the context's workspace (cuDNN / cuBLAS / reduction scratch):
// one block it holds and grows, handed out again on every request.
//
// Exit. Tensors may be destroyed during static destruction, in any order, so allocators are
// created once and never destroyed; an exit hook, constructed after the CUDA runtime has
// been initialised (so it runs before the runtime tears down), frees the cached blocks and
// the workspace and switches the allocators to freeing blocks directly as they come back.
#include "engine/cuda_device.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "engine/block_cache.h"
#include "engine/error.h"
#include "kernels/cuda_context.h"

namespace hisvid {

namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) fail("{}: {}", what, cudaGetErrorString(status));
}

// The allocator of `device`: engine/block_cache.h over cudaMalloc and cudaFree.
BlockCache* make_allocator(int device) {
  BlockSystem system;
  system.name = fmt::format("cuda:{}", device);
  system.allocate = [device](size_t bytes) -> void* {
    cuda::DeviceGuard guard(device);
    void* ptr = nullptr;
    const cudaError_t status = cudaMalloc(&ptr, bytes);
    if (status == cudaSuccess) return ptr;
    (void)cudaGetLastError();  // clear the error so later launch checks do not report it
    if (status == cudaErrorMemoryAllocation) return nullptr;
    fail("cudaMalloc of {} bytes on cuda:{}: {}", bytes, device, cudaGetErrorString(status));
  };
  // Both on `device`, the caller's current device restored, errors ignored (never thrown: they
  // also run at exit, from a destructor) and cleared, so that the next kernel's launch check
  // does not report them as its own: at exit the process is ending, and a sticky fault behind a
  // failed synchronisation shows again at the next call.
  const auto on_device = [device](const auto& call) {
    int previous = -1;
    const bool known = cudaGetDevice(&previous) == cudaSuccess;
    (void)cudaSetDevice(device);
    call();
    if (known && previous != device) (void)cudaSetDevice(previous);
    (void)cudaGetLastError();
  };
  system.free = [on_device](void* ptr) { on_device([ptr] { (void)cudaFree(ptr); }); };
  system.synchronize = [on_device] { on_device([] { (void)cudaDeviceSynchronize(); }); };
  return new BlockCache(std::move(system));
}

class AllocatorRegistry {
 public:
  AllocatorRegistry() {
    if (cudaGetDeviceCount(&device_count_) != cudaSuccess) {
      (void)cudaGetLastError();
      device_count_ = 0;
    }
    allocators_.resize(static_cast<size_t>(device_count_), nullptr);
    streams_ = std::make_unique<std::atomic<cudaStream_t>[]>(static_cast<size_t>(std::max(device_count_, 1)));
  }

  int device_count() const { return device_count_; }

  // The context stream of `device`, recorded when its allocator was made (before any of its
  // tensors, so before any kernel on it).
  cudaStream_t stream(int device) {
    if (device >= 0 && device < device_count_) {
      const cudaStream_t s = streams_[static_cast<size_t>(device)].load(std::memory_order_acquire);
      if (s != nullptr) return s;
    }
    get(device);
    return streams_[static_cast<size_t>(device)].load(std::memory_order_acquire);
  }

  BlockCache& get(int device) {
    if (device < 0 || device >= device_count_) {
      const std::string reason = cuda_unavailable_reason();
      fail("cuda:{} is not available ({} CUDA device(s){}{})", device, device_count_,
           reason.empty() ? "" : ": ", reason);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    BlockCache*& slot = allocators_[static_cast<size_t>(device)];
    if (slot == nullptr) {
      // Immortal on purpose (see the top of this file).
      BlockCache* allocator = make_allocator(device);
      cuda::context(device).set_workspace_provider(
          [allocator](size_t bytes) { return allocator->workspace(bytes); });
      streams_[static_cast<size_t>(device)].store(cuda::context(device).stream(), std::memory_order_release);
      slot = allocator;
    }
    return *slot;
  }

  void release_at_exit() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (BlockCache* allocator : allocators_) {
      if (allocator != nullptr) allocator->release_at_exit();
    }
  }

 private:
  int device_count_ = 0;
  std::mutex mutex_;
  std::vector<BlockCache*> allocators_;
  std::unique_ptr<std::atomic<cudaStream_t>[]> streams_;
};

struct ExitRelease {
  AllocatorRegistry* registry;
  ~ExitRelease() { registry->release_at_exit(); }
};

AllocatorRegistry& registry() {
  static AllocatorRegistry* const instance = new AllocatorRegistry();  // immortal, see above
  static ExitRelease release{instance};
  return *instance;
}

cudaStream_t stream_of(Device device) { return cuda::context(device.index).stream(); }

}  // namespace

std::string cuda_unavailable_reason() {
  static const std::string reason = [] {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      return std::string(cudaGetErrorString(status));
    }
    return count == 0 ? std::string("no CUDA device") : std::string();
  }();
  return reason;
}

Allocator& cuda_allocator(Device device) {
  if (!device.is_cuda()) fail("cuda_allocator: {} is not a CUDA device", device.str());
  return registry().get(device.index);
}

// Host sources: cudaMemcpyAsync from pageable memory (all the engine's host memory) returns
// once the data is staged, so the caller may free the source at once. Host destinations:
// synchronous, the data is there on return.
void cuda_copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device.is_cuda() && src_device.is_cuda() && dst_device.index != src_device.index) {
    // Between devices: after the destination's queued work, before anything else may read it.
    check(cudaStreamSynchronize(stream_of(dst_device)), "copy between CUDA devices");
    const cudaStream_t stream = stream_of(src_device);
    check(cudaMemcpyPeerAsync(dst, dst_device.index, src, src_device.index, bytes, stream),
          "copy between CUDA devices");
    check(cudaStreamSynchronize(stream), "copy between CUDA devices");
    return;
  }
  const Device on = dst_device.is_cuda() ? dst_device : src_device;
  const cudaMemcpyKind kind = dst_device.is_cpu()   ? cudaMemcpyDeviceToHost
                              : src_device.is_cpu() ? cudaMemcpyHostToDevice
                                                    : cudaMemcpyDeviceToDevice;
  const cudaStream_t stream = stream_of(on);
  check(cudaMemcpyAsync(dst, src, bytes, kind, stream), "copy to or from CUDA");
  if (dst_device.is_cpu()) check(cudaStreamSynchronize(stream), "copy from CUDA");
}

void cuda_zero_bytes(void* dst, Device device, size_t bytes) {
  if (bytes == 0) return;
  cuda::DeviceGuard guard(device.index);
  check(cudaMemsetAsync(dst, 0, bytes, stream_of(device)), "zeroing CUDA memory");
}

void cuda_synchronize(Device device) {
  check(cudaStreamSynchronize(stream_of(device)), "synchronizing a CUDA device");
}

void* cuda_mark(Device device) {
  cuda_make_current(device);
  cudaEvent_t event = nullptr;
  check(cudaEventCreate(&event), "creating a CUDA event");
  const cudaError_t status = cudaEventRecord(event, stream_of(device));
  if (status != cudaSuccess) {
    cudaEventDestroy(event);
    check(status, "recording a CUDA event");
  }
  return event;
}

float cuda_ms_between(void* start, void* stop) {
  check(cudaEventSynchronize(static_cast<cudaEvent_t>(stop)), "waiting for a CUDA event");
  float ms = 0.0f;
  check(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(stop)),
        "timing between CUDA events");
  return ms;
}

bool cuda_capturing(Device device) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(stream_of(device), &status), "asking whether a CUDA stream is captured");
  return status != cudaStreamCaptureStatusNone;
}

void cuda_release_mark(void* mark) noexcept {
  if (mark != nullptr) (void)cudaEventDestroy(static_cast<cudaEvent_t>(mark));
}

void cuda_set_allow_tf32(Device device, bool allow) {
  cuda_make_current(device);
  cuda::context(device.index).set_allow_tf32(allow);
}

std::vector<std::string> cuda_timed_choices() {
  std::vector<std::string> lines;
  for (const cuda::TimedChoice& choice : cuda::timed_choices()) {
    std::string times;
    for (const auto& [name, ms] : choice.candidates_ms)
      times += fmt::format("{}{} {:.4f} ms", times.empty() ? "" : ", ", name, ms);
    lines.push_back(fmt::format("{} on {}: {}; kept {}{}", choice.op, choice.shape, times, choice.kept,
                                choice.failed.empty() ? "" : "; failed: " + choice.failed));
  }
  return lines;
}

void cuda_make_current(Device device) {
  int current = -1;
  check(cudaGetDevice(&current), "selecting a CUDA device");  // a runtime lookup, no driver call
  if (current != device.index) check(cudaSetDevice(device.index), "selecting a CUDA device");
}

CUstream_st* cuda_stream(Device device) {
  AllocatorRegistry& r = registry();
  if (r.device_count() > 1) cuda_make_current(device);
  return r.stream(device.index);
}

// --- staging for uploads ---------------------------------------------------------------------

struct UploadStaging::State {
  Device device;
  size_t bytes = 0;
  void* host[2] = {nullptr, nullptr};
  cudaEvent_t copied[2] = {nullptr, nullptr};
  bool pending[2] = {false, false};
  int current = 1;
};

UploadStaging::UploadStaging(Device device, size_t bytes) : state_(std::make_unique<State>()) {
  if (!device.is_cuda()) fail("UploadStaging: {} is not a CUDA device", device.str());
  cuda_make_current(device);
  state_->device = device;
  state_->bytes = bytes;
  for (int i = 0; i < 2; ++i) {
    check(cudaHostAlloc(&state_->host[i], std::max<size_t>(bytes, 1), cudaHostAllocDefault),
          "allocating pinned host memory");
    check(cudaEventCreateWithFlags(&state_->copied[i], cudaEventDisableTiming), "creating a CUDA event");
  }
}

UploadStaging::~UploadStaging() {
  for (int i = 0; i < 2; ++i) {
    if (state_->copied[i] != nullptr) {
      (void)cudaEventSynchronize(state_->copied[i]);
      (void)cudaEventDestroy(state_->copied[i]);
    }
    if (state_->host[i] != nullptr) (void)cudaFreeHost(state_->host[i]);
  }
}

size_t UploadStaging::bytes() const { return state_->bytes; }

uint8_t* UploadStaging::next() {
  State& s = *state_;
  s.current = 1 - s.current;
  if (s.pending[s.current]) check(cudaEventSynchronize(s.copied[s.current]), "waiting for an upload");
  s.pending[s.current] = false;
  return static_cast<uint8_t*>(s.host[s.current]);
}

void UploadStaging::copy(void* device_dst, size_t offset, size_t bytes) {
  const State& s = *state_;
  if (offset + bytes > s.bytes)
    fail("UploadStaging: bytes {}..{} of a {}-byte buffer", offset, offset + bytes, s.bytes);
  check(cudaMemcpyAsync(device_dst, static_cast<const uint8_t*>(s.host[s.current]) + offset, bytes,
                        cudaMemcpyHostToDevice, stream_of(s.device)),
        "uploading to CUDA");
}

void UploadStaging::done() {
  State& s = *state_;
  check(cudaEventRecord(s.copied[s.current], stream_of(s.device)), "recording a CUDA event");
  s.pending[s.current] = true;
}

// --- CUDA graphs ----------------------------------------------------------------------------

struct CudaGraph::State {
  Device device;
  int pool = 0;
  cudaGraphExec_t exec = nullptr;
};

CudaGraph::CudaGraph(std::unique_ptr<State> state) : state_(std::move(state)) {}

CudaGraph::~CudaGraph() {
  if (state_ == nullptr) return;
  // Replays may still be queued: they finish before the graph and its pool go.
  (void)cudaStreamSynchronize(stream_of(state_->device));
  if (state_->exec != nullptr) (void)cudaGraphExecDestroy(state_->exec);
  registry().get(state_->device.index).release_pool(state_->pool);
}

void CudaGraph::replay() const {
  cuda_make_current(state_->device);
  check(cudaGraphLaunch(state_->exec, stream_of(state_->device)), "replaying a CUDA graph");
}

std::unique_ptr<CudaGraph> cuda_capture(Device device, const std::function<void()>& record) {
  if (!device.is_cuda()) fail("cuda_capture: {} is not a CUDA device", device.str());
  BlockCache& allocator = registry().get(device.index);
  cuda_make_current(device);
  const cudaStream_t stream = stream_of(device);
  auto state = std::make_unique<CudaGraph::State>();
  state->device = device;
  state->pool = allocator.open_pool();
  // Relaxed: the allocator may cudaMalloc a block for the pool while the stream is captured.
  cudaError_t status = cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed);
  if (status != cudaSuccess) {
    allocator.close_pool();
    allocator.release_pool(state->pool);
    (void)cudaGetLastError();
    fail("capturing a CUDA graph on {}: {}", device.str(), cudaGetErrorString(status));
  }
  std::string error;
  try {
    record();
  } catch (const std::exception& e) {
    error = e.what();
  }
  cudaGraph_t graph = nullptr;
  status = cudaStreamEndCapture(stream, &graph);  // ends the capture even after an error
  allocator.close_pool();
  if (error.empty() && status != cudaSuccess) error = cudaGetErrorString(status);
  if (error.empty()) {
    status = cudaGraphInstantiate(&state->exec, graph, 0);
    if (status != cudaSuccess) error = std::string("instantiating: ") + cudaGetErrorString(status);
  }
  if (graph != nullptr) (void)cudaGraphDestroy(graph);
  if (!error.empty()) {
    (void)cudaGetLastError();  // a failed capture leaves no sticky error; clear the last one
    allocator.release_pool(state->pool);
    fail("capturing a CUDA graph on {}: {}", device.str(), error);
  }
  return std::unique_ptr<CudaGraph>(new CudaGraph(std::move(state)));
}

}  // namespace hisvid
