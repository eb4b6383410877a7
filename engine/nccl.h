// engine/nccl.h — NCCL for summing CUDA tensors across the ranks of a data-parallel run
// (engine/distributed.h). The library is loaded at run time (dlopen): libnccl.so.2 from the
// loader's path, or the file HISVID_NCCL_LIBRARY names. Neither the hisvid binary nor a build
// without NCCL's header needs it; a rank that needs it and finds none says so.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "engine/device.h"
#include "engine/tensor.h"

namespace hisvid {

// "" when NCCL can be used (this build has its header and the library loads), else why not.
std::string nccl_unavailable_reason();
// A fresh NCCL unique id (rank 0 makes it; the others receive it, e.g. through MPI).
std::string nccl_unique_id();

// This rank's member of a group of `ranks` ranks summing on one CUDA device each.
class NcclGroup {
 public:
  NcclGroup(const std::string& unique_id, int ranks, int rank, Device device);
  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;
  // count values (float32 or float64) at data, on the group's device, summed across the group
  // in place, in the order of the device's stream; every rank receives the same bits.
  void sum(void* data, size_t count, DType dtype);
  Device device() const { return device_; }

 private:
  struct Comm;
  std::unique_ptr<Comm> comm_;
  Device device_;
};

}  // namespace hisvid
