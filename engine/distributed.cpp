// engine/distributed.cpp — the single-process communicator, and the one that drives the MPI
// plugin (engine/mpi_plugin.h) loaded with dlopen, with NCCL (engine/nccl.h) for CUDA tensors.
#include "engine/distributed.h"

#include <dlfcn.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/mpi_plugin.h"
#include "engine/nccl.h"

namespace hisvid {

namespace {

namespace fs = std::filesystem;

class Solo final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  std::string describe() const override { return "one process"; }
  void sum(const std::vector<Tensor>&) override {}
  void sum(std::vector<double>&) override {}
  void broadcast(std::string&, int) override {}
  void barrier() override {}
  void abort(int code) override { std::_Exit(code); }
};

// The directory of the running binary, where the build puts the plugin.
std::string binary_directory() {
  std::error_code error;
  const fs::path self = fs::read_symlink("/proc/self/exe", error);
  return error ? std::string(".") : self.parent_path().string();
}

class Mpi final : public Communicator {
 public:
  Mpi() {
    const char* given = std::getenv("HISVID_MPI_PLUGIN");
    const std::string path =
        given != nullptr && *given != '\0' ? std::string(given) : binary_directory() + "/libhisvid_mpi.so";
    if (!fs::exists(path)) {
      fail(
          "hisvid was started by an MPI launcher, but its MPI plugin {} does not exist: this hisvid was "
          "built "
          "without MPI (install libopenmpi-dev, e.g. with scripts/setup-deps, and build again), or set "
          "HISVID_MPI_PLUGIN to the plugin's path",
          path);
    }
    handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_ == nullptr) fail("{}: cannot load the MPI plugin: {}", path, dlerror());
    auto init = reinterpret_cast<HisvidMpiInit>(dlsym(handle_, kHisvidMpiInitSymbol));
    if (init == nullptr) fail("{}: not a hisvid MPI plugin (no {})", path, kHisvidMpiInitSymbol);
    check(init(&api_, error_.data(), error_.size()), "starting MPI");
    if (api_.abi != kHisvidMpiAbi) {
      fail("{}: a plugin of interface version {}, this hisvid needs {} (build them together)", path, api_.abi,
           kHisvidMpiAbi);
    }
  }
  ~Mpi() override {
    nccl_.reset();  // before MPI goes
    if (api_.finalize != nullptr) api_.finalize();
  }
  int rank() const override { return api_.rank; }
  int size() const override { return api_.size; }
  int local_rank() const override { return api_.local_rank; }
  std::string describe() const override { return api_.description; }

  void sum(const std::vector<Tensor>& tensors) override {
    if (tensors.empty()) return;
    const Device device = tensors[0].device();
    const DType dtype = tensors[0].dtype();
    size_t count = 0;
    for (const Tensor& t : tensors) {
      if (t.device() != device || t.dtype() != dtype) {
        fail("summing across ranks: tensors of {} and {} in one call", tensors[0].describe(), t.describe());
      }
      count += static_cast<size_t>(t.numel());
    }
    const int type = dtype == DType::Float32 ? kHisvidMpiFloat32 : kHisvidMpiFloat64;
    const size_t item = dtype_size(dtype);
    // One buffer for all tensors: one reduction instead of one per weight.
    Tensor flat = Tensor::empty(Shape{static_cast<int64_t>(count)}, dtype, device);
    auto* bytes = static_cast<char*>(flat.data_ptr());
    size_t at = 0;
    for (const Tensor& t : tensors) {
      copy_bytes(bytes + at * item, device, t.data_ptr(), device, t.nbytes());
      at += static_cast<size_t>(t.numel());
    }
    if (device.is_cpu()) {
      check(api_.sum_host(flat.data_ptr(), count, type, error_.data(), error_.size()), "summing gradients");
    } else {
      if (nccl_ == nullptr) {  // rank 0's unique id, through MPI; one group for the run's device
        std::string id = rank() == 0 ? nccl_unique_id() : std::string();
        broadcast(id, 0);
        nccl_ = std::make_unique<NcclGroup>(id, size(), rank(), device);
      }
      if (nccl_->device() != device) {
        fail("summing across ranks: NCCL was set up on {}, these tensors are on {}", nccl_->device().str(),
             device.str());
      }
      nccl_->sum(flat.data_ptr(), count, dtype);
    }
    at = 0;
    for (const Tensor& t : tensors) {
      copy_bytes(t.data_ptr(), device, bytes + at * item, device, t.nbytes());
      at += static_cast<size_t>(t.numel());
    }
  }

  void sum(std::vector<double>& values) override {
    check(api_.sum_host(values.data(), values.size(), kHisvidMpiFloat64, error_.data(), error_.size()),
          "summing metrics");
  }

  void broadcast(std::string& bytes, int root) override {
    uint64_t length = bytes.size();
    check(api_.broadcast(&length, sizeof length, root, error_.data(), error_.size()), "broadcasting");
    bytes.resize(length);
    check(api_.broadcast(bytes.data(), bytes.size(), root, error_.data(), error_.size()), "broadcasting");
  }

  void barrier() override { check(api_.barrier(error_.data(), error_.size()), "waiting for every rank"); }
  void abort(int code) override { api_.abort(code); }

 private:
  void check(int status, const char* what) {
    if (status != 0) fail("MPI rank {}: {}: {}", api_.rank, what, error_.data());
  }

  void* handle_ = nullptr;  // never closed: MPI's libraries stay loaded until exit
  HisvidMpi api_;
  std::unique_ptr<NcclGroup> nccl_;  // set up on the first sum of CUDA tensors
  std::array<char, 512> error_{};
};

}  // namespace

bool started_by_mpi_launcher() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

Communicator& world() {
  static const std::unique_ptr<Communicator> communicator = []() -> std::unique_ptr<Communicator> {
    if (!started_by_mpi_launcher()) return std::make_unique<Solo>();
    return std::make_unique<Mpi>();
  }();
  return *communicator;
}

bool same_on_every_rank(Communicator& comm, uint64_t value) {
  if (comm.size() == 1) return true;
  std::string root(sizeof value, '\0');
  std::memcpy(root.data(), &value, sizeof value);
  comm.broadcast(root, 0);
  uint64_t theirs = 0;
  std::memcpy(&theirs, root.data(), sizeof theirs);
  std::vector<double> differ = {theirs == value ? 0.0 : 1.0};
  comm.sum(differ);
  return differ[0] == 0.0;
}

}  // namespace hisvid
