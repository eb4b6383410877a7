// engine/mpi_plugin.h — the C interface between hisvid and its MPI plugin, libhisvid_mpi.so
// (engine/mpi_plugin.cpp). hisvid loads the plugin only when an MPI launcher started it, so
// neither the hisvid binary nor a single-process run needs MPI at run time. (CUDA ranks sum
// with NCCL, engine/nccl.h; MPI only carries NCCL's unique id.)
//
// Every function returns 0 on success, or nonzero with a message in error[error_size].
#pragma once

#include <cstddef>

extern "C" {

// Bumped whenever this struct changes: a plugin of another version is refused.
constexpr int kHisvidMpiAbi = 2;

enum HisvidMpiType { kHisvidMpiFloat32 = 0, kHisvidMpiFloat64 = 1 };

struct HisvidMpi {
  int abi = 0;
  int rank = 0, size = 1;
  int local_rank = 0;          // among the ranks of this machine (a GPU index for CUDA ranks)
  char description[256] = {};  // "Open MPI v4.1.4, 2 ranks (2 on this machine)"
  // Sums `count` values in host memory across ranks, in place. Reduced at rank 0 in rank order,
  // then broadcast: every rank receives the same bits.
  int (*sum_host)(void* data, size_t count, int type, char* error, size_t error_size) = nullptr;
  int (*broadcast)(void* data, size_t bytes, int root, char* error, size_t error_size) = nullptr;
  // Waits for every rank, polling and sleeping: a rank waiting for another that works (rank 0
  // building the clip cache) leaves it the CPU.
  int (*barrier)(char* error, size_t error_size) = nullptr;
  // Ends every rank of the job (after a rank's fatal error, so that no rank waits forever).
  void (*abort)(int code) = nullptr;
  void (*finalize)() = nullptr;
};

// The plugin's entry point: MPI_Init (thread level FUNNELED) and the fields above.
typedef int (*HisvidMpiInit)(HisvidMpi* out, char* error, size_t error_size);
constexpr const char* kHisvidMpiInitSymbol = "hisvid_mpi_init";
}
