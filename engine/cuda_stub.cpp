// The CUDA entry points of a build without CUDA: each says so.
#include "engine/cuda_device.h"
#include "engine/error.h"

namespace hisvid {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  fail(
      "{}: this hisvid was built without CUDA (configure with HISVID_CUDA=ON on a machine with "
      "nvcc and cuDNN)",
      what);
}
}  // namespace

std::string cuda_unavailable_reason() { return "hisvid was built without CUDA"; }
Allocator& cuda_allocator(Device) { no_cuda("allocating CUDA memory"); }
void cuda_copy_bytes(void*, Device, const void*, Device, size_t) { no_cuda("copying to or from CUDA"); }
void cuda_zero_bytes(void*, Device, size_t) { no_cuda("zeroing CUDA memory"); }
void cuda_synchronize(Device) { no_cuda("synchronizing a CUDA device"); }
void cuda_make_current(Device) { no_cuda("selecting a CUDA device"); }
void cuda_set_allow_tf32(Device, bool) { no_cuda("allowing TF32"); }
std::vector<std::string> cuda_timed_choices() { return {}; }
CUstream_st* cuda_stream(Device) { no_cuda("running a CUDA kernel"); }
void* cuda_mark(Device) { no_cuda("timing a CUDA kernel"); }
float cuda_ms_between(void*, void*) { no_cuda("timing a CUDA kernel"); }
void cuda_release_mark(void*) noexcept {}
bool cuda_capturing(Device) { return false; }

struct UploadStaging::State {};
UploadStaging::UploadStaging(Device, size_t) { no_cuda("staging an upload"); }
UploadStaging::~UploadStaging() = default;
size_t UploadStaging::bytes() const { no_cuda("staging an upload"); }
uint8_t* UploadStaging::next() { no_cuda("staging an upload"); }
void UploadStaging::copy(void*, size_t, size_t) { no_cuda("staging an upload"); }
void UploadStaging::done() { no_cuda("staging an upload"); }

struct CudaGraph::State {};
CudaGraph::CudaGraph(std::unique_ptr<State> state) : state_(std::move(state)) {}
CudaGraph::~CudaGraph() = default;
void CudaGraph::replay() const { no_cuda("replaying a CUDA graph"); }
std::unique_ptr<CudaGraph> cuda_capture(Device, const std::function<void()>&) {
  no_cuda("capturing a CUDA graph");
}

}  // namespace hisvid
