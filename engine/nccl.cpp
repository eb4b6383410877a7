// engine/nccl.cpp — NCCL through dlopen (engine/nccl.h). Only the five entry points hisvid uses
// are looked up; the types come from nccl.h at build time (HISVID_WITH_NCCL).
#include "engine/nccl.h"

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "engine/error.h"

#ifdef HISVID_WITH_NCCL
#include <dlfcn.h>
#include <nccl.h>

#include "engine/cuda_device.h"
#endif

namespace hisvid {

#ifdef HISVID_WITH_NCCL

namespace {

struct Library {
  std::string error;  // why it is not usable ("" when it is)
  ncclResult_t (*get_unique_id)(ncclUniqueId*) = nullptr;
  ncclResult_t (*init_rank)(ncclComm_t*, int, ncclUniqueId, int) = nullptr;
  ncclResult_t (*all_reduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t,
                             cudaStream_t) = nullptr;
  ncclResult_t (*destroy)(ncclComm_t) = nullptr;
  const char* (*error_string)(ncclResult_t) = nullptr;
};

const Library& library() {
  static const Library lib = [] {
    Library l;
    const char* given = std::getenv("HISVID_NCCL_LIBRARY");
    const std::string name = given != nullptr && *given != '\0' ? given : "libnccl.so.2";
    void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      l.error = fmt::format("cannot load NCCL ({}): {} (set HISVID_NCCL_LIBRARY to libnccl.so.2's path)",
                            name, dlerror());
      return l;
    }
    const auto find = [&](const char* symbol, auto& fn) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(handle, symbol));
      if (fn == nullptr && l.error.empty()) l.error = fmt::format("{}: no {} in it", name, symbol);
    };
    find("ncclGetUniqueId", l.get_unique_id);
    find("ncclCommInitRank", l.init_rank);
    find("ncclAllReduce", l.all_reduce);
    find("ncclCommDestroy", l.destroy);
    find("ncclGetErrorString", l.error_string);
    return l;
  }();
  return lib;
}

const Library& usable() {
  const Library& lib = library();
  if (!lib.error.empty()) fail("summing CUDA tensors across ranks: {}", lib.error);
  return lib;
}

void check(ncclResult_t result, const char* what) {
  if (result != ncclSuccess) fail("{}: {}", what, usable().error_string(result));
}

}  // namespace

struct NcclGroup::Comm {
  ncclComm_t comm = nullptr;
};

std::string nccl_unavailable_reason() { return library().error; }

std::string nccl_unique_id() {
  ncclUniqueId id;
  check(usable().get_unique_id(&id), "ncclGetUniqueId");
  return std::string(id.internal, sizeof id.internal);
}

NcclGroup::NcclGroup(const std::string& unique_id, int ranks, int rank, Device device)
    : comm_(std::make_unique<Comm>()), device_(device) {
  if (!device.is_cuda()) fail("NCCL sums CUDA tensors, not {}", device.str());
  ncclUniqueId id;
  if (unique_id.size() != sizeof id.internal) {
    fail("an NCCL unique id has {} bytes, not {}", sizeof id.internal, unique_id.size());
  }
  std::memcpy(id.internal, unique_id.data(), sizeof id.internal);
  cuda_make_current(device);
  check(usable().init_rank(&comm_->comm, ranks, id, rank), "ncclCommInitRank");
}

NcclGroup::~NcclGroup() {
  if (comm_->comm != nullptr) library().destroy(comm_->comm);
}

void NcclGroup::sum(void* data, size_t count, DType dtype) {
  check(usable().all_reduce(data, data, count, dtype == DType::Float64 ? ncclFloat64 : ncclFloat32, ncclSum,
                            comm_->comm, cuda_stream(device_)),
        "ncclAllReduce");
}

#else  // a build without NCCL's header

struct NcclGroup::Comm {};

std::string nccl_unavailable_reason() {
  return "this hisvid was built without NCCL (CUDA and nccl.h are needed)";
}

std::string nccl_unique_id() { fail("{}", nccl_unavailable_reason()); }

NcclGroup::NcclGroup(const std::string&, int, int, Device device) : device_(device) {
  fail("{}", nccl_unavailable_reason());
}

NcclGroup::~NcclGroup() = default;

void NcclGroup::sum(void*, size_t, DType) { fail("{}", nccl_unavailable_reason()); }

#endif

}  // namespace hisvid
