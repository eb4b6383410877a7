// engine/kernel_profile.h — where a step's device time goes, kernel by kernel. While a
// KernelProfile is active on a thread, every kernel-table call that thread makes on the
// profile's device (run_kernel, engine/dispatch.h) and every copy and fill there
// (copy_bytes, zero_bytes) is timed and added to its kernel's row:
//   CPU   the wall clock around the call (a CPU kernel is done when its call returns);
//   CUDA  a CUDA event recorded on the device's stream before the call and one after, read
//         when the rows are asked for (one synchronisation). On a GPU that has drained its
//         queue, a call's time includes its own launch latency (a few microseconds): the
//         event before it completes at once, the kernel starts when the launch arrives. Calls
//         queued while the stream is captured into a CUDA graph go untimed (their events would
//         become nodes of the graph).
// The per-layer profile (bench/step.h) says which layer costs; this says which kernel inside
// it (the ConvLSTM's step kernels against its convolutions, the fused block's passes).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/device.h"

namespace hisvid {

class KernelProfile {
 public:
  struct Row {
    std::string kernel;  // the kernel table's name ("conv2d_forward"), or "copy", "fill"
    int64_t calls = 0;
    double ms = 0.0;
  };

  // Becomes the calling thread's active profile for `device` (one at a time per thread: a
  // second is an Error).
  explicit KernelProfile(Device device);
  ~KernelProfile();
  KernelProfile(const KernelProfile&) = delete;
  KernelProfile& operator=(const KernelProfile&) = delete;

  // The calls timed since the start or the last rows(), one row per kernel, the most time
  // first; then starts over. Synchronises the device.
  std::vector<Row> rows();

  // The thread's active profile when it profiles `device`, else null.
  static KernelProfile* active(Device device);
  // Timing of one call, for run_kernel, copy_bytes and zero_bytes: begin's index goes to end
  // (kUntimed for a call that is not timed).
  static constexpr size_t kUntimed = ~size_t(0);
  size_t begin(const char* kernel);
  void end(size_t call) noexcept;

 private:
  struct Call {
    const char* kernel = nullptr;
    void* start = nullptr;  // CUDA events (engine/cuda_device.h), or null on the CPU
    void* stop = nullptr;
    std::chrono::steady_clock::time_point t0;
    double host_ms = 0.0;
  };
  void release();

  Device device_;
  std::vector<Call> calls_;
};

// Times the enclosing scope as one call of `kernel` when a profile is active for `device`.
class ProfiledCall {
 public:
  ProfiledCall(const char* kernel, Device device) : profile_(KernelProfile::active(device)) {
    if (profile_ != nullptr) call_ = profile_->begin(kernel);
  }
  ~ProfiledCall() {
    if (profile_ != nullptr) profile_->end(call_);
  }
  ProfiledCall(const ProfiledCall&) = delete;
  ProfiledCall& operator=(const ProfiledCall&) = delete;

 private:
  KernelProfile* profile_;
  size_t call_ = 0;
};

}  // namespace hisvid
