// engine/cuda_device.h — the engine's entry points into the CUDA backend. With CUDA built
// they live in engine/cuda_device.cpp; without it, in engine/cuda_stub.cpp, where each one
// reports that this build has no CUDA (never a silent fallback to the CPU).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/device.h"
#include "kernels/registry.h"

namespace hisvid {

Allocator& cuda_allocator(Device device);
std::string cuda_unavailable_reason();
void cuda_copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void cuda_zero_bytes(void* dst, Device device, size_t bytes);
void cuda_synchronize(Device device);
// Makes `device` the calling thread's current CUDA device.
void cuda_make_current(Device device);
// TF32 tensor cores for the float32 GEMMs (cuBLAS) and the cuDNN convolutions of `device`: off
// (full float32) unless a run opts in (`--tf32`). Products then round their inputs to 10
// mantissa bits (about 5e-4 relative); the hand-written kernels stay float32 either way.
void cuda_set_allow_tf32(Device device, bool allow);
// The choices the CUDA kernels made by timing in this process so far (a convolution's path, the
// ConvLSTM step's version; kernels/conv2d.cu, kernels/lstm.cu), one line each: the op, the shape,
// each candidate's fastest time, the one kept. None in a build without CUDA.
std::vector<std::string> cuda_timed_choices();
// The stream the kernels of `device` run on (its context's), with `device` made current where
// there are several. Cheap enough for every launch: no device query with one GPU, no locking.
CUstream_st* cuda_stream(Device device);

// Timing marks for the kernel profile (engine/kernel_profile.h): a CUDA event recorded now on
// device's stream; the milliseconds from one mark to a later one (waits for the later one);
// and a mark's release.
void* cuda_mark(Device device);
// Whether the device's stream is being captured into a CUDA graph.
bool cuda_capturing(Device device);
float cuda_ms_between(void* start, void* stop);
void cuda_release_mark(void* mark) noexcept;

// Uploads that do not make the host wait: two pinned host buffers (cudaHostAlloc) used in
// turn. next() hands out the next one once the copies that last read it are done; copy()
// enqueues an asynchronous copy from it to device memory on the device's stream; done() marks
// the end of its copies. A copy from pageable memory, by contrast, may wait for the stream.
class UploadStaging {
 public:
  struct State;
  UploadStaging(Device device, size_t bytes);
  ~UploadStaging();
  UploadStaging(const UploadStaging&) = delete;
  UploadStaging& operator=(const UploadStaging&) = delete;
  size_t bytes() const;
  uint8_t* next();
  void copy(void* device_dst, size_t offset, size_t bytes);
  void done();

 private:
  std::unique_ptr<State> state_;
};

// A CUDA graph: the work one call enqueued on a device's stream, replayed at will with the same
// kernels, arguments and addresses. The memory the call allocated belongs to the graph's pool
// (engine/cuda_device.cpp) until the graph is destroyed, so that replays never write over
// tensors allocated since; what lives across replays (weights, optimizer slots, inputs staged
// before each replay) must be allocated before the capture.
class CudaGraph {
 public:
  struct State;
  explicit CudaGraph(std::unique_ptr<State> state);
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;
  // Enqueues the graph on its device's stream (no host synchronisation).
  void replay() const;

 private:
  std::unique_ptr<State> state_;
};

// Captures the work record() enqueues on device's stream (nothing runs). Throws an Error with
// the reason when the work cannot be captured (a host synchronisation or a copy from pageable
// memory inside record, an exception from it); the stream is usable again after it.
std::unique_ptr<CudaGraph> cuda_capture(Device device, const std::function<void()>& record);

}  // namespace hisvid
