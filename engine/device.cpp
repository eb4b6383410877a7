#include "engine/device.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "engine/cuda_device.h"
#include "engine/error.h"
#include "engine/kernel_profile.h"

namespace hisvid {

std::string Device::str() const { return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index); }

Device parse_device(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "auto") return cuda_available() ? Device::cuda(0) : Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.rfind("cuda:", 0) == 0) {
    const std::string index = text.substr(5);
    if (!index.empty() && std::all_of(index.begin(), index.end(), ::isdigit)) {
      return Device::cuda(std::stoi(index));
    }
  }
  fail("unknown device '{}' (expected cpu, cuda, cuda:N or auto)", text);
}

namespace {

// Host memory, 64-byte aligned. Released blocks are kept on free lists by size and handed out
// again: a training step allocates the same sizes every step, so from its second step on it
// takes every block from the lists and calls the system allocator no more (a fresh large block
// would also come from mmap and page-fault on first touch every time). At most a quarter of
// physical memory (8 GiB at most) is kept: a released block that does not fit evicts the
// cached blocks of other sizes first, so the cache follows the current working set (one model
// after another in a benchmark run) instead of holding on to the first one's.
class CpuAllocator final : public CountingAllocator {
 public:
  static constexpr size_t kAlignment = 64;
#if defined(__SANITIZE_ADDRESS__)
  // Under AddressSanitizer every block goes back to the system, so that a use after free is
  // caught rather than served from the cache.
  static constexpr bool kCacheBlocks = false;
#else
  static constexpr bool kCacheBlocks = true;
#endif
  static constexpr size_t kPageRoundedBytes = size_t(64) << 10;  // from here on, sizes round to pages

  CpuAllocator() {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    const size_t physical = pages > 0 && page > 0 ? size_t(pages) * size_t(page) : size_t(4) << 30;
    max_cached_ = std::min(physical / 4, size_t(8) << 30);
  }

  ~CpuAllocator() override {
    for (auto& [bytes, blocks] : free_) {
      for (void* block : blocks) std::free(block);
    }
  }

  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    const size_t rounded = round_up(bytes);
    void* ptr = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(rounded);
      if (it != free_.end() && !it->second.empty()) {
        ptr = it->second.back();
        it->second.pop_back();
        cached_ -= rounded;
      }
      note_allocated(bytes);
      if (ptr == nullptr) note_system_allocation();
    }
    if (ptr == nullptr) ptr = std::aligned_alloc(kAlignment, rounded);
    if (ptr == nullptr) fail("out of host memory allocating {} bytes", bytes);
    return ptr;
  }

  void deallocate(void* ptr, size_t bytes) override {
    if (ptr == nullptr) return;
    const size_t rounded = round_up(bytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      note_freed(bytes);
      if (kCacheBlocks && rounded <= max_cached_) {
        for (auto it = free_.begin(); cached_ + rounded > max_cached_ && it != free_.end(); ++it) {
          if (it->first == rounded) continue;
          while (!it->second.empty() && cached_ + rounded > max_cached_) {
            std::free(it->second.back());
            it->second.pop_back();
            cached_ -= it->first;
          }
        }
        if (cached_ + rounded <= max_cached_) {
          free_[rounded].push_back(ptr);
          cached_ += rounded;
          return;
        }
      }
    }
    std::free(ptr);
  }

 private:
  // Small blocks to the alignment, large ones to 4 KiB pages (fewer distinct sizes to cache).
  static size_t round_up(size_t bytes) {
    const size_t unit = bytes >= kPageRoundedBytes ? 4096 : kAlignment;
    return (bytes + unit - 1) / unit * unit;
  }

  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t max_cached_;
  size_t cached_ = 0;
};

}  // namespace

Allocator& allocator_for(Device device) {
  if (device.is_cpu()) {
    static CpuAllocator cpu;
    return cpu;
  }
  return cuda_allocator(device);
}

bool cuda_available() { return cuda_unavailable_reason().empty(); }

namespace {
std::atomic<uint64_t> host_read_count{0};
std::atomic<uint64_t> device_call_count{0};
}  // namespace

uint64_t host_reads() { return host_read_count.load(std::memory_order_relaxed); }
void count_host_read() { host_read_count.fetch_add(1, std::memory_order_relaxed); }
uint64_t device_calls() { return device_call_count.load(std::memory_order_relaxed); }
void count_device_call() { device_call_count.fetch_add(1, std::memory_order_relaxed); }

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  count_device_call();
  const ProfiledCall timing("copy", dst_device.is_cpu() ? src_device : dst_device);
  if (dst_device.is_cpu() && !src_device.is_cpu()) count_host_read();
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
  cuda_copy_bytes(dst, dst_device, src, src_device, bytes);
}

void zero_bytes(void* dst, Device device, size_t bytes) {
  if (bytes == 0) return;
  count_device_call();
  const ProfiledCall timing("fill", device);
  if (device.is_cpu()) {
    std::memset(dst, 0, bytes);
    return;
  }
  cuda_zero_bytes(dst, device, bytes);
}

void synchronize(Device device) {
  if (device.is_cuda()) cuda_synchronize(device);
}

}  // namespace hisvid
