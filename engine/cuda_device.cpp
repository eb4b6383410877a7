// The CUDA entry points of engine/cuda_device.h: the caching allocator, copies, zeroing and
// synchronisation, all ordered on the device's context stream (kernels/cuda_context.h).
//
// Caching allocator. cudaMalloc and cudaFree are slow and synchronise the device, and a
// training step of fixed shape asks for the same sizes every step. So freed blocks go to a
// per-device pool, keyed by size class, and the next request of that class takes one back:
// once warm, a step makes no cudaMalloc or cudaFree (and can be captured into a CUDA graph).
// Reuse without synchronising is safe because every kernel, copy and memset of the engine
// runs on the one context stream: work that used a freed block is queued before any work
// that uses it again. Size classes: multiples of 512 bytes up to 1 MiB, of 2 MiB above; a
// large request may take a cached block up to 1/8 larger. When cudaMalloc fails, the cached
// blocks are released and the allocation retried once.
//
// The allocator also provides the context's workspace (cuDNN / cuBLAS / reduction scratch):
// one block it holds and grows, handed out again on every request.
//
// Graph pools. A CUDA graph replays its kernels on the very addresses they used when it was
// captured, long after the tensors there were freed. So while a capture runs, the allocator
// takes blocks from a pool of that graph (its own freed blocks first, then cudaMalloc) and
// never from the general cache; a pool's block, freed, returns to its pool. The pool's blocks
// are the graph's until the graph goes: then its free blocks join the general cache, and the
// ones still held by tensors join it when they are freed. The workspace is shared: it is
// scratch within one kernel call, ordered on the one stream like everything else; a workspace
// replaced by a larger one while a graph lives is kept out of the cache until no graph is left
// (the graph's kernels may still use it).
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
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/error.h"
#include "kernels/cuda_context.h"

namespace hisvid {

namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) fail("{}: {}", what, cudaGetErrorString(status));
}

size_t round_up(size_t bytes, size_t step) { return (bytes + step - 1) / step * step; }

size_t size_class(size_t bytes) {
  constexpr size_t kSmallLimit = size_t(1) << 20, kSmallStep = 512, kLargeStep = size_t(2) << 20;
  return bytes <= kSmallLimit ? round_up(bytes, kSmallStep) : round_up(bytes, kLargeStep);
}

class CachingAllocator final : public CountingAllocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}

  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    std::lock_guard<std::mutex> lock(mutex_);
    return allocate_locked(bytes);
  }

  void deallocate(void* ptr, size_t /*bytes: the size recorded at allocation is used*/) override {
    if (ptr == nullptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    deallocate_locked(ptr);
  }

  // The context's workspace provider: at least `bytes`, the same block while it is large
  // enough. The block replaced by a larger one returns to the pool (safe in stream order).
  void* workspace(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (workspace_bytes_ < bytes || workspace_ == nullptr) {
      if (workspace_ != nullptr && !pools_.empty()) {
        // A graph may have captured kernels using this block as scratch: it must never be
        // handed out again while one lives (it joins the cache when the last pool goes).
        const Block block = blocks_.at(workspace_);
        retired_.emplace_back(block.class_bytes, workspace_);
        note_freed(block.requested);
        keep_for_graphs(workspace_, block.requested);
        blocks_.erase(workspace_);
        workspace_ = nullptr;
      }
      if (workspace_ != nullptr) deallocate_locked(workspace_);
      workspace_ = nullptr;
      workspace_bytes_ = 0;
      workspace_ = allocate_locked(bytes);
      workspace_bytes_ = blocks_.at(workspace_).class_bytes;
    }
    return workspace_;
  }

  // The workspace back to the cache (safe in stream order, as when a larger one replaces it),
  // unless a graph lives: its kernels may use the block (workspace() then retires it).
  void release_workspace() override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (workspace_ == nullptr || !pools_.empty()) return;
    deallocate_locked(workspace_);
    workspace_ = nullptr;
    workspace_bytes_ = 0;
  }

  // At exit: wait for the device, free the cached blocks and the workspace, and from now on
  // free blocks as they are returned. Errors are ignored (the process is ending).
  void release_at_exit() {
    std::lock_guard<std::mutex> lock(mutex_);
    (void)cudaSetDevice(device_);
    (void)cudaDeviceSynchronize();
    if (workspace_ != nullptr) {
      auto it = blocks_.find(workspace_);
      if (it != blocks_.end()) {
        note_freed(it->second.requested);
        blocks_.erase(it);
      }
      (void)cudaFree(workspace_);
      workspace_ = nullptr;
      workspace_bytes_ = 0;
    }
    for (auto& entry : free_) {
      for (void* ptr : entry.second) (void)cudaFree(ptr);
    }
    free_.clear();
    for (auto& pool : pools_) {
      for (auto& entry : pool.second) {
        for (void* ptr : entry.second) (void)cudaFree(ptr);
      }
    }
    pools_.clear();
    for (const auto& retired : retired_) (void)cudaFree(retired.second);
    retired_.clear();
    exiting_ = true;
  }

 private:
  struct Block {
    size_t class_bytes;  // what cudaMalloc gave
    size_t requested;    // what the caller asked for (counted in bytes_in_use)
    int pool;            // the graph pool it belongs to; 0: the general cache
  };
  using FreeLists = std::map<size_t, std::vector<void*>>;  // cached, by size, most recently freed last

  void* allocate_locked(size_t bytes) {
    const size_t cls = size_class(bytes);
    // A capture takes its pool's blocks, then the general cache's (their earlier uses are all
    // queued before the capture began), and they become the pool's.
    Cached block = open_pool_ == 0 ? Cached{nullptr, 0} : take_cached(pools_[open_pool_], cls);
    if (block.ptr != nullptr) give_up_kept(block.ptr);
    if (block.ptr == nullptr) block = take_cached(free_, cls);
    if (block.ptr == nullptr) block = Cached{malloc_device(cls, bytes), cls};
    blocks_[block.ptr] = Block{block.bytes, bytes, open_pool_};
    note_allocated(bytes);
    return block.ptr;
  }

  void deallocate_locked(void* ptr) {
    auto it = blocks_.find(ptr);
    if (it == blocks_.end()) return;  // not ours: never free what we did not hand out
    const Block block = it->second;
    blocks_.erase(it);
    note_freed(block.requested);
    if (ptr == workspace_) {
      workspace_ = nullptr;
      workspace_bytes_ = 0;
    }
    if (exiting_) {
      (void)cudaFree(ptr);
      return;
    }
    // Freed during a capture, a block joins the capture's pool whatever it was: the graph's
    // replays may use it. A released pool's block joins the cache.
    const int owner = open_pool_ != 0 ? open_pool_ : block.pool;
    auto pool = owner == 0 ? pools_.end() : pools_.find(owner);
    FreeLists& cache = pool == pools_.end() ? free_ : pool->second;
    cache[block.class_bytes].push_back(ptr);
    if (pool != pools_.end()) keep_for_graphs(ptr, block.requested);
  }

  // A block a graph's replays may use (in its pool, or a retired workspace) counts in the peak
  // as `bytes` until it is handed out again or joins the general cache.
  void keep_for_graphs(void* ptr, size_t bytes) {
    kept_[ptr] = bytes;
    note_graph_kept(bytes);
  }
  void give_up_kept(void* ptr) {
    auto it = kept_.find(ptr);
    if (it == kept_.end()) return;
    note_graph_gave_up(it->second);
    kept_.erase(it);
  }

 public:
  // Routes this allocator's allocations to a new graph pool until close_pool(); returns its id.
  int open_pool() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (open_pool_ != 0) fail("cuda:{}: a graph capture is already allocating", device_);
    open_pool_ = next_pool_++;
    pools_[open_pool_];
    return open_pool_;
  }
  void close_pool() {
    std::lock_guard<std::mutex> lock(mutex_);
    open_pool_ = 0;
  }
  // The graph of pool `id` is gone: its free blocks join the cache, its held ones will.
  void release_pool(int id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto pool = pools_.find(id);
    if (pool == pools_.end()) return;
    for (auto& [cls, ptrs] : pool->second) {
      std::vector<void*>& into = free_[cls];
      into.insert(into.end(), ptrs.begin(), ptrs.end());
      for (void* ptr : ptrs) give_up_kept(ptr);
    }
    pools_.erase(pool);
    if (open_pool_ == id) open_pool_ = 0;
    if (pools_.empty()) {
      for (const auto& [cls, ptr] : retired_) {
        free_[cls].push_back(ptr);
        give_up_kept(ptr);
      }
      retired_.clear();
    }
  }

 private:
  struct Cached {
    void* ptr;
    size_t bytes;
  };

  // A cached block for class `cls` ({nullptr, 0} when none fits): exactly that class for
  // small blocks, at most 1/8 larger for large ones.
  Cached take_cached(FreeLists& free, size_t cls) {
    auto it = free.lower_bound(cls);
    if (it == free.end()) return Cached{nullptr, 0};
    const size_t limit = cls <= (size_t(1) << 20) ? cls : cls + cls / 8;
    if (it->first > limit) return Cached{nullptr, 0};
    const Cached block{it->second.back(), it->first};  // the most recently freed: still in L2
    it->second.pop_back();
    if (it->second.empty()) free.erase(it);
    return block;
  }

  void* malloc_device(size_t cls, size_t bytes) {
    note_system_allocation();
    cuda::DeviceGuard guard(device_);
    void* ptr = nullptr;
    cudaError_t status = cudaMalloc(&ptr, cls);
    // Releasing the cache synchronises the device, which a capture forbids: out of memory
    // during a capture fails the capture (the steps then run directly).
    if (status == cudaErrorMemoryAllocation && open_pool_ == 0) {
      (void)cudaGetLastError();  // clear the error so later launch checks do not report it
      release_cached();
      status = cudaMalloc(&ptr, cls);
    }
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      fail("CUDA out of memory on cuda:{} allocating {} bytes ({} in use): {}", device_, bytes,
           in_use_locked(), cudaGetErrorString(status));
    }
    return ptr;
  }

  // Frees every cached block, after the queued work that may still use them.
  void release_cached() {
    (void)cudaDeviceSynchronize();
    for (auto& entry : free_) {
      for (void* ptr : entry.second) (void)cudaFree(ptr);
    }
    free_.clear();
  }

  const int device_;
  std::unordered_map<void*, Block> blocks_;  // handed out
  FreeLists free_;                           // the general cache
  std::map<int, FreeLists> pools_;           // the graph pools' free blocks, by pool id
  int open_pool_ = 0, next_pool_ = 1;
  std::vector<std::pair<size_t, void*>> retired_;  // workspaces replaced while a graph lived
  std::unordered_map<void*, size_t> kept_;         // pool and retired blocks: bytes counted in the peak
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  bool exiting_ = false;
};

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

  CachingAllocator& get(int device) {
    if (device < 0 || device >= device_count_) {
      const std::string reason = cuda_unavailable_reason();
      fail("cuda:{} is not available ({} CUDA device(s){}{})", device, device_count_,
           reason.empty() ? "" : ": ", reason);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    CachingAllocator*& slot = allocators_[static_cast<size_t>(device)];
    if (slot == nullptr) {
      // Immortal on purpose (see the top of this file).
      auto* allocator = new CachingAllocator(device);
      cuda::context(device).set_workspace_provider(
          [allocator](size_t bytes) { return allocator->workspace(bytes); });
      streams_[static_cast<size_t>(device)].store(cuda::context(device).stream(), std::memory_order_release);
      slot = allocator;
    }
    return *slot;
  }

  void release_at_exit() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (CachingAllocator* allocator : allocators_) {
      if (allocator != nullptr) allocator->release_at_exit();
    }
  }

 private:
  int device_count_ = 0;
  std::mutex mutex_;
  std::vector<CachingAllocator*> allocators_;
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
  CachingAllocator& allocator = registry().get(device.index);
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
