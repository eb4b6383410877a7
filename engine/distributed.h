// engine/distributed.h — the processes of a data-parallel run, and what they share.
//
// hisvid is one process (world().size() == 1, nothing shared) unless an MPI launcher started
// it (mpirun, srun: OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK in the environment). Then
// world() loads libhisvid_mpi.so from beside the hisvid binary (or HISVID_MPI_PLUGIN), which
// joins MPI_COMM_WORLD; CUDA tensors are summed with NCCL, one GPU per rank, set up through MPI.
// A hisvid built without MPI refuses to run under a launcher, naming what to install.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace hisvid {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The rank among those of its machine: which GPU a CUDA rank takes.
  virtual int local_rank() const = 0;
  virtual std::string describe() const = 0;
  // Sums every tensor across ranks, in place (all on one device, float32 or float64): one
  // reduction over all of them together. Every rank ends with the same bits: on the CPU the sum
  // is taken at rank 0 in rank order and broadcast; on CUDA NCCL's ring gives all ranks its
  // result.
  virtual void sum(const std::vector<Tensor>& tensors) = 0;
  // Sums host values across ranks, in place, with the same bits on every rank.
  virtual void sum(std::vector<double>& values) = 0;
  // Rank `root`'s bytes on every rank (resized to root's length).
  virtual void broadcast(std::string& bytes, int root) = 0;
  virtual void barrier() = 0;
  // Ends the whole job with `code` (a rank that failed; the others would wait forever).
  virtual void abort(int code) = 0;
};

// The process's communicator (created on first use).
Communicator& world();
// True when an MPI launcher started this process.
bool started_by_mpi_launcher();

// This rank's contiguous share of `all`: [r n / N, (r + 1) n / N), possibly empty when there
// are fewer items than ranks. The shares of all ranks, in rank order, are `all`.
template <typename T>
std::vector<T> share_of(const std::vector<T>& all, const Communicator& comm) {
  const size_t n = all.size(), N = static_cast<size_t>(comm.size()), r = static_cast<size_t>(comm.rank());
  return {all.begin() + static_cast<std::ptrdiff_t>(r * n / N),
          all.begin() + static_cast<std::ptrdiff_t>((r + 1) * n / N)};
}

// True when `value` is the same on every rank.
bool same_on_every_rank(Communicator& comm, uint64_t value);

}  // namespace hisvid
