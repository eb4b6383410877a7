// kernels/registry.h — the kernel table. A kernel is named by its argument struct (one per
// kernel, declared with the kernel in kernels/<family>.h and shared by every backend), whose
// static kName is the kernel's name in the table, the lab and the tests. Each implementation
// of it is one row of KernelTable<Args>, registered once, in kernels/<family>_table.cpp:
//
//   naive  the definition: plain loop nests, float and double, on host memory. The gradient
//          checks run on it and every other row is checked against it (kernels/harness.h).
//   cpu    tuned host code (GEMM, AVX2, specialisations) where the naive loops are not enough.
//   cuda   float on the GPU, given the stream of the device the buffers live on.
//
// One row per backend is its default, the one the engine runs; other rows (a numbered
// version of a kernel being optimised, a fixed algorithm) are there for the harness and the
// lab to test and time. A CPU tensor runs the cpu default where there is one, else the naive
// row; float64 always runs naive. A missing row is an error naming the kernel, the backend
// and the element type, never a silent fallback to another backend.
#pragma once

#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

struct CUstream_st;  // cudaStream_t is CUstream_st*: the table needs no CUDA headers

namespace hisvid {

enum class Backend : int { Naive = 0, Cpu, Cuda };

inline const char* backend_name(Backend backend) {
  switch (backend) {
    case Backend::Naive:
      return "naive";
    case Backend::Cpu:
      return "cpu";
    case Backend::Cuda:
      return "cuda";
  }
  return "unknown";
}

// What a row needs beyond its arguments: the CUDA stream of the buffers' device (null on host).
struct Launch {
  CUstream_st* stream = nullptr;
};

template <typename Args>
struct Implementation {
  std::string name;  // "naive", "cpu", "cpu.gemm", "cuda", "cuda.direct_v1", ...
  Backend backend = Backend::Naive;
  bool is_default = false;
  void (*run)(const Args&, const Launch&) = nullptr;
  // Where the row runs code of its own; null: on every argument. An alternative row that hands
  // other arguments to another row (version 2 of a kernel running version 1 where its kernel
  // does not apply) says where it does not, so that the harness checks and times it only where
  // its own code runs, and fails a row that runs on none of its kernel's cases.
  bool (*applies)(const Args&) = nullptr;

  // This row, running its own code only where `predicate` holds.
  Implementation where(bool (*predicate)(const Args&)) const {
    Implementation row = *this;
    row.applies = predicate;
    return row;
  }
};

// The name of every kernel with a table, once per element type (the harness checks that each
// has cases).
inline std::vector<std::string>& kernel_names() {
  static std::vector<std::string> names;
  return names;
}

template <typename Args>
class KernelTable {
 public:
  static KernelTable& get() {
    static KernelTable table;
    return table;
  }
  KernelTable() { kernel_names().push_back(Args::kName); }

  void add(const Implementation<Args>& impl) {
    for (const Implementation<Args>& row : rows_) {
      if (row.name == impl.name)
        throw std::logic_error(std::string(Args::kName) + ": two rows named " + impl.name);
      if (impl.is_default && row.is_default && row.backend == impl.backend) {
        throw std::logic_error(std::string(Args::kName) + ": two default rows for " +
                               backend_name(impl.backend));
      }
    }
    rows_.push_back(impl);
  }

  const std::vector<Implementation<Args>>& rows() const { return rows_; }

  // The default row of `backend`, or null.
  const Implementation<Args>* find(Backend backend) const {
    for (const Implementation<Args>& row : rows_) {
      if (row.backend == backend && row.is_default) return &row;
    }
    return nullptr;
  }
  // The row called `name`, or null.
  const Implementation<Args>* find(const std::string& name) const {
    for (const Implementation<Args>& row : rows_) {
      if (row.name == name) return &row;
    }
    return nullptr;
  }

 private:
  std::vector<Implementation<Args>> rows_;
};

namespace registry_detail {

template <typename Fn>
struct HostArgs;
template <typename A>
struct HostArgs<void (*)(const A&)> {
  using type = A;
};
template <typename Fn>
struct CudaArgs;
template <typename A>
struct CudaArgs<void (*)(const A&, CUstream_st*)> {
  using type = A;
};

template <auto Fn>
void call_host(const typename HostArgs<decltype(Fn)>::type& args, const Launch&) {
  Fn(args);
}
template <auto Fn>
void call_cuda(const typename CudaArgs<decltype(Fn)>::type& args, const Launch& launch) {
  Fn(args, launch.stream);
}

}  // namespace registry_detail

// Rows, for the registrations in kernels/<family>_table.cpp:
//   register_rows(host_row<naive::fill<float>>(Backend::Naive, "naive"), ...);
// Fn is `void fn(const Args&)` on the host and `void fn(const Args&, cudaStream_t)` on CUDA. A
// row that runs its own code only on some arguments is registered with `.where(predicate)`.
enum class Role : bool { Alternative = false, Default = true };

template <auto Fn>
Implementation<typename registry_detail::HostArgs<decltype(Fn)>::type> host_row(Backend backend,
                                                                                std::string name,
                                                                                Role role = Role::Default) {
  return {std::move(name), backend, role == Role::Default, &registry_detail::call_host<Fn>};
}

template <auto Fn>
Implementation<typename registry_detail::CudaArgs<decltype(Fn)>::type> cuda_row(std::string name,
                                                                                Role role = Role::Default) {
  return {std::move(name), Backend::Cuda, role == Role::Default, &registry_detail::call_cuda<Fn>};
}

template <typename Args>
void add_row(const Implementation<Args>& row) {
  KernelTable<Args>::get().add(row);
}

template <typename... Rows>
bool register_rows(const Rows&... rows) {
  (add_row(rows), ...);
  return true;
}

}  // namespace hisvid
