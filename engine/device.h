// engine/device.h — devices, allocators and the byte-level operations every backend offers.
//
// The CPU allocator hands out 64-byte aligned blocks. The CUDA backend (engine/cuda_device.cpp,
// built when HISVID_WITH_CUDA) plugs in a caching allocator behind the same interface.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

namespace hisvid {

enum class DeviceType : int { CPU = 0, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  // "cpu" or "cuda:0"
  std::string str() const;
};

// Parses "cpu", "cuda", "cuda:1"; "auto" is CUDA when a device is present, else CPU.
Device parse_device(const std::string& text);

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr, size_t bytes) = 0;
  // Bytes currently handed out; the most ever held at once, counting besides what is handed out
  // the blocks a CUDA graph keeps for its replays (its pool's free blocks: the activations of a
  // captured step, which no tensor holds between replays but no other allocation may take).
  virtual size_t bytes_in_use() const = 0;
  virtual size_t peak_bytes_in_use() const = 0;
  virtual void reset_peak() = 0;
  // Gives back the scratch block the allocator holds for the device's kernels (CUDA: the
  // context's workspace, as large as the largest request so far) to its cache, so that what is
  // in use from here on is the next work's own; a no-op where there is none, or while a CUDA
  // graph may still use it. Benchmarks call it before each model, whose peak would otherwise
  // count an earlier model's workspace.
  virtual void release_workspace() {}
  // How many allocations went to the system (aligned_alloc, cudaMalloc) rather than to a
  // cached block: constant once a training loop has reached its steady state.
  virtual size_t system_allocations() const = 0;
};

// The bookkeeping both caching allocators share: one mutex guarding the allocator's state
// and the bytes-in-use / peak counters behind bytes_in_use(), peak_bytes_in_use() and
// reset_peak(). Subclasses call note_allocated / note_freed with mutex_ held.
class CountingAllocator : public Allocator {
 public:
  size_t bytes_in_use() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return in_use_;
  }
  size_t peak_bytes_in_use() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return peak_;
  }
  void reset_peak() override {
    std::lock_guard<std::mutex> lock(mutex_);
    peak_ = in_use_ + graph_held_;
  }
  size_t system_allocations() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return system_allocations_;
  }

 protected:
  void note_allocated(size_t bytes) {
    in_use_ += bytes;
    raise_peak();
  }
  void note_freed(size_t bytes) { in_use_ -= bytes; }
  // Bytes a graph's pool keeps from here on (a block freed into it), and gives up (a block taken
  // from it, or the pool released).
  void note_graph_kept(size_t bytes) {
    graph_held_ += bytes;
    raise_peak();
  }
  void note_graph_gave_up(size_t bytes) { graph_held_ -= bytes; }
  void note_system_allocation() { ++system_allocations_; }
  size_t in_use_locked() const { return in_use_; }

  mutable std::mutex mutex_;

 private:
  void raise_peak() { peak_ = std::max(peak_, in_use_ + graph_held_); }

  size_t in_use_ = 0, peak_ = 0, system_allocations_ = 0, graph_held_ = 0;
};

Allocator& allocator_for(Device device);

// True when hisvid was built with CUDA and at least one device answers.
bool cuda_available();
// Why cuda_available() is false ("" when it is true).
std::string cuda_unavailable_reason();

// Copies bytes between any two devices; ordered with the device's stream (synchronous for
// host destinations).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void zero_bytes(void* dst, Device device, size_t bytes);
// Waits until all work queued on the device has finished (no-op on the CPU).
void synchronize(Device device);

// How many times this process has read values back on the host: a copy from a device to the
// host, Tensor::to_vector() / item() of a host tensor, or an op whose result is a host value
// (ops::accuracy_count). On a GPU each is a synchronisation;
// tests count them around a training epoch (the loop reads once per epoch, not per step).
uint64_t host_reads();
void count_host_read();

// How many device operations this process has queued: kernel-table calls (run_kernel), copies
// and zero fills, counted alike on every device. On a GPU each is at least one launch (a cuBLAS
// or cuDNN call may be a few), so a step's count is what its launch overhead grows with and
// what a CUDA graph of the step replays; bench/bench_models.cpp reports it per step.
uint64_t device_calls();
void count_device_call();

}  // namespace hisvid
