// engine/cuda_device.h — the engine's entry points into the CUDA backend. With CUDA built
// they live in engine/cuda_device.cpp; without it, in engine/cuda_stub.cpp, where each one
// reports that this build has no CUDA (never a silent fallback to the CPU).
#pragma once

#include <cstddef>
#include <string>

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
// The stream the kernels of `device` run on (its context's), with `device` made current where
// there are several. Cheap enough for every launch: no device query with one GPU, no locking.
CUstream_st* cuda_stream(Device device);

}  // namespace hisvid
