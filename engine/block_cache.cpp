// engine/block_cache.cpp — see block_cache.h.
#include "engine/block_cache.h"

#include <mutex>

#include "engine/error.h"

namespace hisvid {

namespace {

size_t round_up(size_t bytes, size_t step) { return (bytes + step - 1) / step * step; }

}  // namespace

size_t block_size_class(size_t bytes) {
  constexpr size_t kSmallLimit = size_t(1) << 20, kSmallStep = 512, kLargeStep = size_t(2) << 20;
  return bytes <= kSmallLimit ? round_up(bytes, kSmallStep) : round_up(bytes, kLargeStep);
}

void* BlockCache::allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  std::lock_guard<std::mutex> lock(mutex_);
  return allocate_locked(bytes);
}

void BlockCache::deallocate(void* ptr, size_t /*bytes*/) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  deallocate_locked(ptr);
}

void* BlockCache::workspace(size_t bytes) {
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

void BlockCache::release_workspace() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (workspace_ == nullptr || !pools_.empty()) return;
  deallocate_locked(workspace_);
  workspace_ = nullptr;
  workspace_bytes_ = 0;
}

int BlockCache::open_pool() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (open_pool_ != 0) fail("{}: a graph capture is already allocating", system_.name);
  open_pool_ = next_pool_++;
  pools_[open_pool_];
  return open_pool_;
}

void BlockCache::close_pool() {
  std::lock_guard<std::mutex> lock(mutex_);
  open_pool_ = 0;
}

void BlockCache::release_pool(int id) {
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

void BlockCache::release_at_exit() {
  std::lock_guard<std::mutex> lock(mutex_);
  system_.synchronize();
  if (workspace_ != nullptr) {
    auto it = blocks_.find(workspace_);
    if (it != blocks_.end()) {
      note_freed(it->second.requested);
      blocks_.erase(it);
    }
    system_.free(workspace_);
    workspace_ = nullptr;
    workspace_bytes_ = 0;
  }
  for (auto& entry : free_) {
    for (void* ptr : entry.second) system_.free(ptr);
  }
  free_.clear();
  for (auto& pool : pools_) {
    for (auto& entry : pool.second) {
      for (void* ptr : entry.second) system_.free(ptr);
    }
  }
  pools_.clear();
  for (const auto& retired : retired_) system_.free(retired.second);
  retired_.clear();
  exiting_ = true;
}

void* BlockCache::allocate_locked(size_t bytes) {
  const size_t cls = block_size_class(bytes);
  // A capture takes its pool's blocks, then the general cache's (their earlier uses are all
  // queued before the capture began), and they become the pool's.
  Cached block = open_pool_ == 0 ? Cached{nullptr, 0} : take_cached(pools_[open_pool_], cls);
  if (block.ptr != nullptr) give_up_kept(block.ptr);
  if (block.ptr == nullptr) block = take_cached(free_, cls);
  if (block.ptr == nullptr) block = Cached{system_block(cls, bytes), cls};
  blocks_[block.ptr] = Block{block.bytes, bytes, open_pool_};
  note_allocated(bytes);
  return block.ptr;
}

void BlockCache::deallocate_locked(void* ptr) {
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
    system_.free(ptr);
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

// A cached block for class `cls` ({nullptr, 0} when none fits): exactly that class for small
// blocks, at most 1/8 larger for large ones.
BlockCache::Cached BlockCache::take_cached(FreeLists& free, size_t cls) {
  auto it = free.lower_bound(cls);
  if (it == free.end()) return Cached{nullptr, 0};
  const size_t limit = cls <= (size_t(1) << 20) ? cls : cls + cls / 8;
  if (it->first > limit) return Cached{nullptr, 0};
  const Cached block{it->second.back(), it->first};  // the most recently freed: still in L2
  it->second.pop_back();
  if (it->second.empty()) free.erase(it);
  return block;
}

void* BlockCache::system_block(size_t cls, size_t bytes) {
  note_system_allocation();
  void* ptr = system_.allocate(cls);
  // Releasing the cache synchronises the device, which a capture forbids: out of memory during
  // a capture fails the capture (the steps then run directly).
  if (ptr == nullptr && open_pool_ == 0) {
    release_cached();
    ptr = system_.allocate(cls);
  }
  if (ptr == nullptr) {
    fail("out of memory on {} allocating {} bytes ({} in use{})", system_.name, bytes, in_use_locked(),
         open_pool_ == 0 ? ", the cache released" : ", during a graph capture");
  }
  return ptr;
}

// Frees every cached block, after the queued work that may still use them.
void BlockCache::release_cached() {
  system_.synchronize();
  for (auto& entry : free_) {
    for (void* ptr : entry.second) system_.free(ptr);
  }
  free_.clear();
}

// A block a graph's replays may use (in its pool, or a retired workspace) counts in the peak as
// `bytes` until it is handed out again or joins the general cache.
void BlockCache::keep_for_graphs(void* ptr, size_t bytes) {
  kept_[ptr] = bytes;
  note_graph_kept(bytes);
}

void BlockCache::give_up_kept(void* ptr) {
  auto it = kept_.find(ptr);
  if (it == kept_.end()) return;
  note_graph_gave_up(it->second);
  kept_.erase(it);
}

}  // namespace hisvid
