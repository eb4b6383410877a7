// engine/block_cache.h — the bookkeeping of the CUDA caching allocator, apart from the device:
// size classes, the general cache, CUDA graphs' pools, the workspace and the counted bytes.
// engine/cuda_device.cpp gives it cudaMalloc and cudaFree (and says why it caches); the CPU
// tests give it the host's, so that what the allocator decides is checked on every machine.
//
// Size classes: multiples of 512 bytes up to 1 MiB, of 2 MiB above; a large request may take a
// cached block up to 1/8 larger. When the system has no memory left, the cached blocks are
// released (after synchronising) and the allocation retried once, except while a pool is open
// (a capture may not synchronise: the allocation fails).
//
// Graph pools. A CUDA graph replays its kernels on the very addresses they used when it was
// captured, long after the tensors there were freed. While a pool is open (a capture runs),
// blocks come from that pool (its own freed blocks first, then the general cache, then the
// system) and become the pool's; a pool's block, freed, returns to its pool. The pool's blocks
// are the graph's until release_pool: then its free blocks join the general cache, and the ones
// still held by tensors join it when they are freed. The workspace is shared scratch, ordered on
// the one stream like everything else; a workspace replaced by a larger one while a pool lives
// is kept out of the cache until no pool is left (the graph's kernels may still use it).
//
// Counted bytes (CountingAllocator): bytes_in_use() is what is handed out; the peak also counts
// the blocks pools keep for their replays (free blocks of a pool, retired workspaces), which no
// tensor holds but no other allocation may take.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/device.h"

namespace hisvid {

// How a BlockCache gets and gives back memory. The callbacks run with the cache's mutex held
// and must not call back into it; free and synchronize must not throw (they also run at exit,
// from a destructor).
struct BlockSystem {
  std::string name;  // the device, for messages ("cuda:0")
  // A new block of `bytes`, or nullptr when the device has no memory for it (other failures
  // throw).
  std::function<void*(size_t bytes)> allocate;
  std::function<void(void* ptr)> free;  // errors ignored
  // Waits until the work queued on the device is done (before cached blocks are freed).
  std::function<void()> synchronize;
};

// The size class a request of `bytes` takes (bytes > 0).
size_t block_size_class(size_t bytes);

class BlockCache final : public CountingAllocator {
 public:
  explicit BlockCache(BlockSystem system) : system_(std::move(system)) {}

  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t /*bytes: the size recorded at allocation is used*/) override;

  // The context's workspace: at least `bytes`, the same block while it is large enough. The
  // block replaced by a larger one returns to the cache (safe in stream order), or is retired
  // while a pool lives.
  void* workspace(size_t bytes);
  // The workspace back to the cache, unless a pool lives (its kernels may use the block).
  void release_workspace() override;

  // Routes allocations to a new pool until close_pool(); returns its id.
  int open_pool();
  void close_pool();
  // The graph of pool `id` is gone: its free blocks join the cache, its held ones will.
  void release_pool(int id);

  // At exit: synchronise, free the cached blocks, the pools' and the workspace, and from now
  // on free blocks as they are returned.
  void release_at_exit();

 private:
  struct Block {
    size_t class_bytes;  // what the system gave
    size_t requested;    // what the caller asked for (counted in bytes_in_use)
    int pool;            // the pool it belongs to; 0: the general cache
  };
  struct Cached {
    void* ptr;
    size_t bytes;
  };
  using FreeLists = std::map<size_t, std::vector<void*>>;  // cached, by size, most recently freed last

  void* allocate_locked(size_t bytes);
  void deallocate_locked(void* ptr);
  Cached take_cached(FreeLists& free, size_t cls);
  void* system_block(size_t cls, size_t bytes);
  void release_cached();
  void keep_for_graphs(void* ptr, size_t bytes);
  void give_up_kept(void* ptr);

  const BlockSystem system_;
  std::unordered_map<void*, Block> blocks_;  // handed out
  FreeLists free_;                           // the general cache
  std::map<int, FreeLists> pools_;           // the pools' free blocks, by pool id
  int open_pool_ = 0, next_pool_ = 1;
  std::vector<std::pair<size_t, void*>> retired_;  // workspaces replaced while a pool lived
  std::unordered_map<void*, size_t> kept_;         // pool and retired blocks: bytes counted in the peak
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  bool exiting_ = false;
};

}  // namespace hisvid
