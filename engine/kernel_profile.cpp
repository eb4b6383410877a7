#include "engine/kernel_profile.h"

#include <algorithm>
#include <map>

#include "engine/cuda_device.h"
#include "engine/error.h"

namespace hisvid {

namespace {
thread_local KernelProfile* active_profile = nullptr;
}  // namespace

KernelProfile::KernelProfile(Device device) : device_(device) {
  if (active_profile != nullptr) fail("KernelProfile: this thread already has an active kernel profile");
  active_profile = this;
}

KernelProfile::~KernelProfile() {
  release();
  active_profile = nullptr;
}

KernelProfile* KernelProfile::active(Device device) {
  KernelProfile* profile = active_profile;
  return profile != nullptr && profile->device_ == device ? profile : nullptr;
}

size_t KernelProfile::begin(const char* kernel) {
  // Inside a graph capture an event would become a node of the graph: such calls go untimed.
  if (device_.is_cuda() && cuda_capturing(device_)) return kUntimed;
  calls_.emplace_back();
  Call& call = calls_.back();
  call.kernel = kernel;
  if (device_.is_cuda()) {
    call.start = cuda_mark(device_);  // throws on failure: the profiled call fails with the error
  } else {
    call.t0 = std::chrono::steady_clock::now();
  }
  return calls_.size() - 1;
}

void KernelProfile::end(size_t index) noexcept {
  if (index == kUntimed) return;
  Call& call = calls_[index];
  if (device_.is_cuda()) {
    try {
      call.stop = cuda_mark(device_);
    } catch (...) {
      call.stop = nullptr;  // rows() leaves the call out; the failing call reports its own error
    }
  } else {
    call.host_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - call.t0).count();
  }
}

std::vector<KernelProfile::Row> KernelProfile::rows() {
  std::map<std::string, Row> by_kernel;
  for (const Call& call : calls_) {
    if (device_.is_cuda() && (call.start == nullptr || call.stop == nullptr)) continue;  // failed or untimed
    Row& row = by_kernel[call.kernel];
    row.kernel = call.kernel;
    row.calls += 1;
    row.ms += device_.is_cuda() ? double(cuda_ms_between(call.start, call.stop)) : call.host_ms;
  }
  release();
  std::vector<Row> out;
  for (auto& [name, row] : by_kernel) out.push_back(row);
  std::stable_sort(out.begin(), out.end(), [](const Row& a, const Row& b) { return a.ms > b.ms; });
  return out;
}

void KernelProfile::release() {
  for (const Call& call : calls_) {
    cuda_release_mark(call.start);
    cuda_release_mark(call.stop);
  }
  calls_.clear();
}

}  // namespace hisvid
