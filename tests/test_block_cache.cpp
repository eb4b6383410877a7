// The CUDA caching allocator's bookkeeping (engine/block_cache.h) over host memory: what it
// hands out, caches, keeps for CUDA graphs and counts, checked without a GPU. The host system
// counts its calls and can be told to run out of memory; every test ends with the exit release
// and checks that each block the system gave was freed once.
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <string>

#include "engine/block_cache.h"
#include "engine/error.h"

namespace hisvid {
namespace {

constexpr size_t kMiB = size_t(1) << 20;

// Host blocks standing for a device's, and what was asked of the system.
class HostSystem {
 public:
  int allocations = 0, frees = 0, synchronizations = 0;
  int out_of_memory = 0;  // that many next allocations find no memory

  BlockSystem system() {
    BlockSystem s;
    s.name = "host-test";
    s.allocate = [this](size_t bytes) -> void* {
      if (out_of_memory > 0) {
        --out_of_memory;
        return nullptr;
      }
      ++allocations;
      void* ptr = std::malloc(bytes);
      live_.insert(ptr);
      return ptr;
    };
    s.free = [this](void* ptr) {
      ++frees;
      EXPECT_EQ(live_.erase(ptr), 1u) << "a block freed twice, or one the system never gave";
      std::free(ptr);
    };
    s.synchronize = [this] { ++synchronizations; };
    return s;
  }
  size_t live() const { return live_.size(); }

 private:
  std::set<void*> live_;
};

// A cache over a HostSystem; at the end of the scope, the exit release frees everything cached
// and the blocks still out are freed as they come back.
struct BlockCacheTest : ::testing::Test {
  HostSystem host;
  BlockCache cache{host.system()};
  void TearDown() override {
    cache.release_at_exit();
    EXPECT_EQ(host.live(), 0u) << "blocks still held after the exit release (a test did not free its own)";
  }
};

TEST(BlockCache, SizeClasses) {
  EXPECT_EQ(block_size_class(1), 512u);
  EXPECT_EQ(block_size_class(512), 512u);
  EXPECT_EQ(block_size_class(513), 1024u);
  EXPECT_EQ(block_size_class(kMiB), kMiB);
  EXPECT_EQ(block_size_class(kMiB + 1), 2 * kMiB);
  EXPECT_EQ(block_size_class(3 * kMiB), 4 * kMiB);
}

TEST_F(BlockCacheTest, AFreedBlockServesTheNextRequestOfItsClass) {
  void* a = cache.allocate(1000);
  EXPECT_EQ(cache.bytes_in_use(), 1000u);
  cache.deallocate(a, 1000);
  EXPECT_EQ(cache.bytes_in_use(), 0u);
  void* b = cache.allocate(900);  // the same 1024-byte class
  EXPECT_EQ(b, a);
  void* c = cache.allocate(1100);  // the next class: a new block
  EXPECT_NE(c, a);
  EXPECT_EQ(host.allocations, 2);
  EXPECT_EQ(cache.system_allocations(), 2u);
  cache.deallocate(b, 900);
  cache.deallocate(c, 1100);
  EXPECT_EQ(cache.allocate(0), nullptr);
}

// A large request takes a cached block of up to 1/8 more than its class, not more.
TEST_F(BlockCacheTest, ALargeRequestTakesABlockAtMostAnEighthLarger) {
  void* big = cache.allocate(18 * kMiB);
  void* bigger = cache.allocate(20 * kMiB);
  cache.deallocate(bigger, 0);
  cache.deallocate(big, 0);
  void* a = cache.allocate(16 * kMiB);  // class 16 MiB: the 18 MiB block fits, within 1/8
  EXPECT_EQ(a, big);
  void* b = cache.allocate(16 * kMiB);  // the 20 MiB block is more than 1/8 larger: a new one
  EXPECT_NE(b, bigger);
  EXPECT_EQ(host.allocations, 3);
  cache.deallocate(a, 0);
  cache.deallocate(b, 0);
}

// Blocks freed during a capture stay the pool's while it lives (a graph's replays write there),
// and join the cache when it is released.
TEST_F(BlockCacheTest, APoolKeepsItsBlocksUntilReleased) {
  const int pool = cache.open_pool();
  void* p = cache.allocate(4096);
  cache.deallocate(p, 4096);
  cache.close_pool();
  void* q = cache.allocate(4096);
  EXPECT_NE(q, p) << "a pool's block was handed out while its graph lives";
  cache.deallocate(q, 4096);
  cache.release_pool(pool);
  void* r = cache.allocate(4096);
  EXPECT_EQ(r, p) << "the released pool's block did not join the cache";
  cache.deallocate(r, 4096);
}

// A capture takes the general cache's blocks too; they become the pool's, and return to it
// when freed after the capture.
TEST_F(BlockCacheTest, ACachedBlockTakenInACaptureBecomesThePools) {
  void* a = cache.allocate(4096);
  cache.deallocate(a, 4096);
  const int pool = cache.open_pool();
  void* b = cache.allocate(4096);
  EXPECT_EQ(b, a);
  cache.close_pool();
  cache.deallocate(b, 4096);  // after the capture: still the pool's
  void* c = cache.allocate(4096);
  EXPECT_NE(c, a);
  cache.deallocate(c, 4096);
  cache.release_pool(pool);
  void* d = cache.allocate(4096);
  EXPECT_EQ(d, a);
  cache.deallocate(d, 4096);
}

// Blocks freed during a capture, its own or the cache's, serve its next requests, the most
// recently freed first.
TEST_F(BlockCacheTest, BlocksFreedDuringACaptureServeItsNextRequests) {
  void* cached = cache.allocate(4096);
  const int pool = cache.open_pool();
  void* first = cache.allocate(4096);
  cache.deallocate(first, 4096);
  cache.deallocate(cached, 4096);  // freed during the capture: the pool's now, the most recent
  void* again = cache.allocate(4096);
  EXPECT_EQ(again, cached);
  void* next = cache.allocate(4096);
  EXPECT_EQ(next, first);
  EXPECT_EQ(host.allocations, 2);
  cache.deallocate(again, 4096);
  cache.deallocate(next, 4096);
  cache.close_pool();
  cache.release_pool(pool);
}

// The workspace: the same block while large enough; a larger request replaces it, and the old
// one goes back to the cache, or, while a pool lives, is kept out of it until none is left.
TEST_F(BlockCacheTest, AWorkspaceReplacedWhileAPoolLivesIsRetired) {
  void* small = cache.workspace(8 * kMiB);
  EXPECT_EQ(cache.workspace(kMiB), small);
  void* replaced = cache.workspace(10 * kMiB);  // no pool: the old block joins the cache
  EXPECT_NE(replaced, small);
  void* from_cache = cache.allocate(8 * kMiB);
  EXPECT_EQ(from_cache, small);
  cache.deallocate(from_cache, 0);

  const int pool = cache.open_pool();
  cache.close_pool();
  void* larger = cache.workspace(64 * kMiB);
  EXPECT_NE(larger, replaced);
  void* probe = cache.allocate(10 * kMiB);
  EXPECT_NE(probe, replaced) << "the replaced workspace was handed out while a pool lives";
  cache.release_workspace();  // a pool lives: the workspace stays
  EXPECT_EQ(cache.workspace(kMiB), larger);
  cache.deallocate(probe, 0);
  cache.release_pool(pool);
  void* after = cache.allocate(10 * kMiB);
  EXPECT_EQ(after, replaced) << "the retired workspace did not join the cache with the pools gone";
  cache.deallocate(after, 0);
  cache.release_workspace();  // no pool now: back to the cache
  EXPECT_EQ(cache.allocate(64 * kMiB), larger);
  cache.deallocate(larger, 0);
}

// bytes_in_use is what is handed out; the peak also counts what pools keep for their replays
// (their free blocks, retired workspaces), until they are released.
TEST_F(BlockCacheTest, ThePeakCountsTheBlocksPoolsKeep) {
  void* held = cache.allocate(1000);
  const int pool = cache.open_pool();
  void* scratch = cache.allocate(3 * kMiB);
  cache.deallocate(scratch, 0);
  cache.close_pool();
  EXPECT_EQ(cache.bytes_in_use(), 1000u);
  cache.reset_peak();
  EXPECT_EQ(cache.peak_bytes_in_use(), 1000u + 3 * kMiB);

  void* workspace = cache.workspace(2 * kMiB);
  void* larger = cache.workspace(4 * kMiB);  // the 2 MiB one retired, still counted
  EXPECT_NE(larger, workspace);
  EXPECT_EQ(cache.bytes_in_use(), 1000u + 4 * kMiB);
  cache.reset_peak();
  EXPECT_EQ(cache.peak_bytes_in_use(), 1000u + 4 * kMiB + 3 * kMiB + 2 * kMiB);

  cache.release_pool(pool);
  cache.reset_peak();
  EXPECT_EQ(cache.peak_bytes_in_use(), 1000u + 4 * kMiB);
  cache.deallocate(held, 0);
}

// Out of memory: the cache is released (after synchronising) and the allocation retried once;
// during a capture nothing may synchronise, and the allocation fails naming the device.
TEST_F(BlockCacheTest, OutOfMemoryReleasesTheCacheAndRetriesOnce) {
  void* cached = cache.allocate(kMiB);
  cache.deallocate(cached, 0);
  host.out_of_memory = 1;
  void* a = cache.allocate(3 * kMiB);
  EXPECT_NE(a, nullptr);
  EXPECT_EQ(host.synchronizations, 1);
  EXPECT_EQ(host.frees, 1) << "the cached block was not released";

  host.out_of_memory = 2;
  try {
    cache.allocate(5 * kMiB);
    ADD_FAILURE() << "an allocation the system could not serve twice succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of memory on host-test allocating 5242880 bytes"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(host.synchronizations, 2);

  const int pool = cache.open_pool();
  host.out_of_memory = 1;
  EXPECT_THROW(cache.allocate(kMiB), Error);
  EXPECT_EQ(host.synchronizations, 2) << "a capture synchronised";
  cache.close_pool();
  cache.release_pool(pool);
  cache.deallocate(a, 0);
}

TEST_F(BlockCacheTest, OnlyOneCaptureAllocatesAtATime) {
  const int pool = cache.open_pool();
  EXPECT_THROW(cache.open_pool(), Error);
  cache.close_pool();
  cache.release_pool(pool);
}

// After the exit release, blocks are freed as they come back; a block the cache did not hand
// out is left alone.
TEST_F(BlockCacheTest, AfterTheExitReleaseBlocksAreFreedAsTheyReturn) {
  void* out = cache.allocate(4096);
  void* cached = cache.allocate(8192);
  cache.deallocate(cached, 0);
  int foreign = 0;
  cache.deallocate(&foreign, sizeof foreign);
  cache.release_at_exit();
  EXPECT_EQ(host.frees, 1);
  EXPECT_EQ(host.live(), 1u);
  cache.deallocate(out, 0);
  EXPECT_EQ(host.frees, 2);
  EXPECT_EQ(host.live(), 0u);
}

// During a capture the pool's own freed blocks come before the general cache's, and a block taken
// back from the pool no longer counts as kept.
TEST_F(BlockCacheTest, PoolBlocksComeBeforeTheCacheAndStopCountingWhenTaken) {
  void* a = cache.allocate(4096);
  void* b = cache.allocate(4096);
  cache.deallocate(a, 0);
  cache.deallocate(b, 0);  // the cache: [a, b]
  const int pool = cache.open_pool();
  void* x = cache.allocate(4096);  // b, from the cache: the pool's now
  EXPECT_EQ(x, b);
  cache.deallocate(x, 0);  // the pool: [b]; the cache: [a]
  void* y = cache.allocate(4096);
  EXPECT_EQ(y, b) << "the capture took the general cache's block before its pool's";
  cache.reset_peak();
  EXPECT_EQ(cache.peak_bytes_in_use(), 4096u) << "a block taken back from the pool still counts as kept";
  cache.deallocate(y, 0);
  cache.close_pool();
  cache.release_pool(pool);
}

// A pool's block still held when the pool is released joins the general cache when freed, and
// is not counted as kept; the pool does not come back.
TEST_F(BlockCacheTest, AHeldBlockOfAReleasedPoolJoinsTheCacheWhenFreed) {
  const int pool = cache.open_pool();
  void* p = cache.allocate(4096);
  cache.close_pool();
  cache.release_pool(pool);
  cache.deallocate(p, 0);
  cache.reset_peak();
  EXPECT_EQ(cache.peak_bytes_in_use(), 0u);
  void* again = cache.allocate(4096);
  EXPECT_EQ(again, p);
  cache.deallocate(again, 0);
  void* ws = cache.workspace(kMiB);
  cache.workspace(2 * kMiB);  // no pool lives: the old workspace goes back to the cache
  EXPECT_EQ(cache.allocate(kMiB), ws);
  cache.deallocate(ws, 0);
}

// A retired workspace waits for the last pool, not the first.
TEST_F(BlockCacheTest, ARetiredWorkspaceWaitsForTheLastPool) {
  const int first = cache.open_pool();
  cache.close_pool();
  const int second = cache.open_pool();
  cache.close_pool();
  void* ws = cache.workspace(kMiB);
  cache.workspace(2 * kMiB);
  cache.release_pool(first);
  void* probe = cache.allocate(kMiB);
  EXPECT_NE(probe, ws) << "a retired workspace was handed out while a pool lives";
  cache.deallocate(probe, 0);
  cache.release_pool(second);
  void* after = cache.allocate(kMiB);
  EXPECT_EQ(after, ws);
  cache.deallocate(after, 0);
}

// Out of memory releases the general cache only: a pool's blocks and the retired workspaces stay.
TEST_F(BlockCacheTest, OutOfMemoryKeepsThePoolsBlocks) {
  const int pool = cache.open_pool();
  void* p = cache.allocate(4096);
  cache.deallocate(p, 0);
  cache.close_pool();
  void* ws = cache.workspace(kMiB);
  cache.workspace(2 * kMiB);  // ws retired
  host.out_of_memory = 1;
  void* big = cache.allocate(8 * kMiB);
  EXPECT_EQ(host.synchronizations, 1);
  EXPECT_EQ(host.frees, 0) << "a pool's block or a retired workspace was freed under a live graph";
  cache.release_pool(pool);
  void* q = cache.allocate(4096);
  EXPECT_EQ(q, p);
  void* r = cache.allocate(kMiB);
  EXPECT_EQ(r, ws);
  cache.deallocate(q, 0);
  cache.deallocate(r, 0);
  cache.deallocate(big, 0);
}

// A block freed during another pool's capture joins that capture's pool.
TEST_F(BlockCacheTest, ABlockFreedDuringACaptureJoinsThatCapturesPool) {
  const int first = cache.open_pool();
  void* a = cache.allocate(4096);
  cache.close_pool();
  const int second = cache.open_pool();
  cache.deallocate(a, 0);
  cache.close_pool();
  cache.release_pool(first);
  void* b = cache.allocate(4096);
  EXPECT_NE(b, a) << "the block left the capturing pool when its first pool went";
  cache.deallocate(b, 0);
  cache.release_pool(second);
  void* c = cache.allocate(4096);
  EXPECT_EQ(c, a);
  cache.deallocate(c, 0);
}

// A small request takes its own class only, no larger one.
TEST_F(BlockCacheTest, ASmallRequestTakesItsClassOnly) {
  void* a = cache.allocate(8704);
  cache.deallocate(a, 0);
  void* b = cache.allocate(8192);
  EXPECT_NE(b, a);
  EXPECT_EQ(host.allocations, 2);
  cache.deallocate(b, 0);
}

// The exit release frees live pools' blocks, retired workspaces and the workspace, and counts
// the workspace freed.
TEST_F(BlockCacheTest, TheExitReleaseFreesPoolsRetiredAndTheWorkspace) {
  cache.open_pool();
  void* p = cache.allocate(4096);
  cache.deallocate(p, 0);
  cache.close_pool();
  cache.workspace(kMiB);
  cache.workspace(2 * kMiB);
  cache.release_at_exit();
  EXPECT_EQ(host.live(), 0u);
  EXPECT_EQ(cache.bytes_in_use(), 0u);
}

// The workspace is as large as its block's class: a request up to the class keeps it.
TEST_F(BlockCacheTest, TheWorkspaceKeepsItsWholeClass) {
  const int pool = cache.open_pool();  // a live pool: a replaced workspace would be retired
  cache.close_pool();
  void* ws = cache.workspace(1000);
  EXPECT_EQ(cache.workspace(1024), ws);
  EXPECT_EQ(host.allocations, 1);
  cache.release_pool(pool);
}

}  // namespace
}  // namespace hisvid
