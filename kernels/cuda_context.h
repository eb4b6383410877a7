// kernels/cuda_context.h — what every CUDA kernel file shares: checked calls, RAII owners of
// CUDA / cuBLAS / cuDNN objects, and the per-device Context (stream, library handles,
// workspace).
//
// Errors: CUDA_CHECK, CUBLAS_CHECK and CUDNN_CHECK throw std::runtime_error naming the file,
// the line, the call and the library's error string (kernels/ does not depend on engine/, so
// not hisvid::Error, which derives from std::runtime_error and is caught the same way).
// HISVID_CHECK_LAUNCH() follows every kernel launch: it checks the launch itself, and debug
// builds (no NDEBUG) also synchronise the device so that a fault is reported at the kernel
// that caused it. That synchronisation cannot happen while a stream is being captured into a
// CUDA graph: capture graphs from release builds.
//
// The Context of a device owns one non-blocking stream, a cuBLAS handle and a cuDNN handle
// bound to it, and the workspace. Every kernel that needs library handles or scratch memory
// (matmul, conv2d, the reductions) must be called with that stream: scratch memory is reused
// in the order of that one stream, which is what makes reusing it without synchronising safe.
// Math is full FP32 (cuBLAS CUBLAS_DEFAULT_MATH, cuDNN CUDNN_FMA_MATH) unless
// set_allow_tf32(true).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace hisvid::cuda {

// Throws std::runtime_error "<library> error at <file>:<line>: <expr>: <what>".
[[noreturn]] void throw_call_error(const char* library, const char* expr, const char* file, int line,
                                   const char* what);
const char* cublas_status_string(cublasStatus_t status);

}  // namespace hisvid::cuda

#define CUDA_CHECK(expr)                                                    \
  do {                                                                      \
    const cudaError_t hisvid_status_ = (expr);                              \
    if (hisvid_status_ != cudaSuccess) {                                    \
      ::hisvid::cuda::throw_call_error("CUDA", #expr, __FILE__, __LINE__,   \
                                       cudaGetErrorString(hisvid_status_)); \
    }                                                                       \
  } while (0)

#define CUBLAS_CHECK(expr)                                                                    \
  do {                                                                                        \
    const cublasStatus_t hisvid_status_ = (expr);                                             \
    if (hisvid_status_ != CUBLAS_STATUS_SUCCESS) {                                            \
      ::hisvid::cuda::throw_call_error("cuBLAS", #expr, __FILE__, __LINE__,                   \
                                       ::hisvid::cuda::cublas_status_string(hisvid_status_)); \
    }                                                                                         \
  } while (0)

#define CUDNN_CHECK(expr)                                                    \
  do {                                                                       \
    const cudnnStatus_t hisvid_status_ = (expr);                             \
    if (hisvid_status_ != CUDNN_STATUS_SUCCESS) {                            \
      ::hisvid::cuda::throw_call_error("cuDNN", #expr, __FILE__, __LINE__,   \
                                       cudnnGetErrorString(hisvid_status_)); \
    }                                                                        \
  } while (0)

#ifdef NDEBUG
#define HISVID_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
#else
#define HISVID_CHECK_LAUNCH()            \
  do {                                   \
    CUDA_CHECK(cudaGetLastError());      \
    CUDA_CHECK(cudaDeviceSynchronize()); \
  } while (0)
#endif

namespace hisvid::cuda {

// Owns one handle or descriptor (a pointer type) and destroys it with Destroy. Destruction
// errors are ignored: destructors must not throw, and at process exit the runtime may
// already be unloading.
template <typename Handle, auto Destroy>
class UniqueHandle {
 public:
  UniqueHandle() = default;
  explicit UniqueHandle(Handle handle) : handle_(handle) {}
  ~UniqueHandle() { reset(); }
  UniqueHandle(const UniqueHandle&) = delete;
  UniqueHandle& operator=(const UniqueHandle&) = delete;
  UniqueHandle(UniqueHandle&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  UniqueHandle& operator=(UniqueHandle&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }

  Handle get() const { return handle_; }
  void reset() {
    if (handle_ != nullptr) {
      (void)Destroy(handle_);
      handle_ = nullptr;
    }
  }

 private:
  Handle handle_ = nullptr;
};

using UniqueStream = UniqueHandle<cudaStream_t, cudaStreamDestroy>;
using UniqueCublas = UniqueHandle<cublasHandle_t, cublasDestroy>;
using UniqueCudnn = UniqueHandle<cudnnHandle_t, cudnnDestroy>;
using TensorDescriptor = UniqueHandle<cudnnTensorDescriptor_t, cudnnDestroyTensorDescriptor>;
using FilterDescriptor = UniqueHandle<cudnnFilterDescriptor_t, cudnnDestroyFilterDescriptor>;
using ConvolutionDescriptor = UniqueHandle<cudnnConvolutionDescriptor_t, cudnnDestroyConvolutionDescriptor>;

TensorDescriptor make_tensor_descriptor();
FilterDescriptor make_filter_descriptor();
ConvolutionDescriptor make_convolution_descriptor();

// Device memory from cudaMalloc, freed on destruction (errors ignored, see UniqueHandle).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      reset();
      ptr_ = std::exchange(other.ptr_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }

  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  void reset();

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Makes `device` current for its lifetime and restores the previous device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

// cuBLAS scratch handed to cublasSetWorkspace before every GEMM (32 MiB is what the cuBLAS
// guide recommends for Hopper); the GEMM then never allocates, so it can be graph-captured.
inline constexpr size_t kCublasWorkspaceBytes = size_t(32) << 20;

class Context {
 public:
  // Returns device memory of at least `bytes`. The memory stays valid for all work enqueued
  // on the context stream before the next call (a later call may hand the same memory out
  // again, or release it: both are safe in the order of the one stream).
  using WorkspaceProvider = std::function<void*(size_t bytes)>;

  explicit Context(int device);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_.get(); }
  cublasHandle_t cublas() const { return cublas_.get(); }
  cudnnHandle_t cudnn() const { return cudnn_.get(); }

  // TF32 tensor cores for FP32 GEMMs and convolutions; off by default (full FP32).
  bool allow_tf32() const { return allow_tf32_; }
  void set_allow_tf32(bool allow);
  // The cuDNN math type that convolutions set on their descriptors.
  cudnnMathType_t cudnn_math_type() const { return allow_tf32_ ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH; }

  // Installs where workspace memory comes from (the engine installs its caching allocator);
  // an empty provider returns to the context-owned buffer. Synchronises the stream first.
  void set_workspace_provider(WorkspaceProvider provider);
  // Scratch memory for one kernel call (see WorkspaceProvider). Without a provider, a
  // context-owned buffer that grows on demand (synchronising the stream when it does, so
  // it must reach its final size before any graph capture).
  void* workspace(size_t bytes);

 private:
  int device_;
  bool allow_tf32_ = false;
  UniqueStream stream_;
  UniqueCublas cublas_;
  UniqueCudnn cudnn_;
  WorkspaceProvider provider_;
  DeviceBuffer own_workspace_;
};

// The context of a device, created on first use (thread-safe). Throws when the device does
// not exist.
Context& context(int device);
// The context of the calling thread's current CUDA device.
Context& current_context();
// The current context, checking that `stream` is its stream; `op` names the caller in the
// error. Kernels that use library handles or workspace call this.
Context& context_for_stream(cudaStream_t stream, const char* op);

// Blocks for a 1-D grid-stride launch over n elements with `threads` threads per block.
inline unsigned int grid_blocks(int64_t n, int threads) {
  const int64_t kMaxBlocks = int64_t(1) << 16;
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  return static_cast<unsigned int>(blocks);
}

inline constexpr int kThreads = 256;  // threads per block of the 1-D kernels

// The current device's multiprocessor count (asked once per thread and device).
int multiprocessors();

// Calls launch(Index{}) with the index type of a kernel over `elements` elements: uint32_t
// where their flat indices fit (64-bit division is a long software sequence on the GPU, and
// kernels that find coordinates by division pay it per element), else int64_t.
template <typename Launch>
void with_index_type(int64_t elements, const Launch& launch) {
  if (elements <= int64_t(UINT32_MAX)) {
    launch(uint32_t{});
  } else {
    launch(int64_t{});
  }
}

// The parts a sum of `terms` terms per tap splits into across warp lanes: a power of two up to
// `most` (at most 32) that leaves each part at least two terms.
inline int lane_parts(int64_t terms, int most) {
  int parts = 1;
  while (parts < most && 2 * (2 * parts) <= terms) parts *= 2;
  return parts;
}

// Calls f(std::integral_constant<int, P>{}) for P == value, a power of two up to Max: the
// run-time part count as a template argument of the kernel f launches.
template <int Max, typename F>
void with_power_of_two(int value, const F& f) {
  if constexpr (Max > 1) {
    if (value < Max) return with_power_of_two<Max / 2>(value, f);
  }
  f(std::integral_constant<int, Max>{});
}

// --- choices made by timing (the convolutions' paths, the ConvLSTM step's version) ----------

// A candidate replaces the baseline (the path that runs without timing) only when it runs in
// under kClearWin of the baseline's time, so that noise between near-equal candidates rarely
// changes the choice from one process to the next.
inline constexpr float kClearWin = 0.95f;
inline constexpr int kTimedRuns = 3;  // timed runs per candidate, after one to warm up

// One CUDA event, destroyed with its owner.
class Event {
 public:
  Event() { CUDA_CHECK(cudaEventCreate(&event_)); }
  ~Event() { cudaEventDestroy(event_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// The fastest of kTimedRuns runs of run() on `stream`, in ms, after one to warm up.
template <typename Run>
float fastest_ms(const Run& run, cudaStream_t stream) {
  run();
  Event start, stop;
  float best = 0.0f;
  for (int i = 0; i < kTimedRuns; ++i) {
    CUDA_CHECK(cudaEventRecord(start.get(), stream));
    run();
    CUDA_CHECK(cudaEventRecord(stop.get(), stream));
    CUDA_CHECK(cudaEventSynchronize(stop.get()));
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start.get(), stop.get()));
    if (i == 0 || ms < best) best = ms;
  }
  return best;
}

// What one choice made by timing measured, for the record (hisvid_bench prints them): the op and
// the shape timed, each candidate's fastest run in ms in the order tried (the baseline first),
// the one kept, and the candidates that could not run, with why.
struct TimedChoice {
  std::string op, shape, kept;
  std::vector<std::pair<std::string, float>> candidates_ms;
  std::string failed;
};
// Adds a choice to the process's record (thread-safe).
void record_timed_choice(TimedChoice choice);
// Every choice recorded so far, in the order made.
std::vector<TimedChoice> timed_choices();

// fastest_ms for one candidate of a timed choice: a candidate that cannot run (a launch it
// cannot make, memory it cannot get) is passed over, its error added to `failed` as
// "name: what", and nothing returned; a device left unusable (a fault) is rethrown.
template <typename Run>
std::optional<float> try_fastest_ms(const Run& run, cudaStream_t stream, const std::string& name,
                                    std::string& failed) {
  try {
    return fastest_ms(run, stream);
  } catch (const std::exception& e) {
    (void)cudaGetLastError();  // a launch error is not sticky; a device fault is, and
    if (cudaStreamSynchronize(stream) != cudaSuccess) throw;  // then nothing more can run
    failed += (failed.empty() ? "" : "; ") + name + ": " + e.what();
    return std::nullopt;
  }
}

// Device memory for the timing runs of a call whose own output they must not touch: `bytes`
// holding a copy of `src`, or zeros where src is null, enqueued on `stream`; the stream is
// synchronised before the memory goes. Throws (CUDA_CHECK) when the memory cannot be had.
class TimingScratch {
 public:
  TimingScratch(size_t bytes, const void* src, cudaStream_t stream) : buffer_(bytes), stream_(stream) {
    if (src != nullptr) {
      CUDA_CHECK(cudaMemcpyAsync(buffer_.get(), src, bytes, cudaMemcpyDeviceToDevice, stream));
    } else {
      CUDA_CHECK(cudaMemsetAsync(buffer_.get(), 0, bytes, stream));
    }
  }
  ~TimingScratch() { (void)cudaStreamSynchronize(stream_); }  // the timing runs are done with it
  TimingScratch(const TimingScratch&) = delete;
  TimingScratch& operator=(const TimingScratch&) = delete;
  float* floats() const { return static_cast<float*>(buffer_.get()); }

 private:
  DeviceBuffer buffer_;
  cudaStream_t stream_;
};

// A TimingScratch, or none where its memory cannot be had: then nothing is timed, and `failed`
// says why. A device left unusable (a fault) is rethrown.
inline std::unique_ptr<TimingScratch> try_timing_scratch(size_t bytes, const void* src, cudaStream_t stream,
                                                         std::string& failed) {
  std::unique_ptr<TimingScratch> scratch;
  try {
    scratch = std::make_unique<TimingScratch>(bytes, src, stream);
  } catch (const std::exception& e) {
    (void)cudaGetLastError();  // an allocation failure is not sticky; a device fault is, and
    if (cudaStreamSynchronize(stream) != cudaSuccess) throw;  // then nothing more can run
    failed = std::string("no memory for the timing runs' scratch: ") + e.what();
  }
  return scratch;
}

// Whether `stream` is being captured into a CUDA graph (where nothing can be timed).
inline bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

}  // namespace hisvid::cuda

#if defined(__CUDACC__)
// Device helpers shared by the .cu files (header-only: no relocatable device code needed).
namespace hisvid::cuda::device {

// The indices of [0, n) a thread takes in a 1-D grid-stride loop: its global index, then steps
// of the whole grid's threads. Every 1-D kernel loops this way:
//   for (const int64_t i : device::grid_stride(n)) out[i] = ...;
class GridStride {
 public:
  struct Index {
    int64_t i, step;
    __device__ int64_t operator*() const { return i; }
    __device__ Index& operator++() {
      i += step;
      return *this;
    }
    __device__ bool operator!=(const Index& end) const { return i < end.i; }
  };
  // lanes > 1: groups of `lanes` consecutive threads take the same indices (see group_stride).
  __device__ explicit GridStride(int64_t n, int lanes = 1) : n_(n), lanes_(lanes) {}
  __device__ Index begin() const {
    return {(blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / lanes_,
            int64_t(gridDim.x) * blockDim.x / lanes_};
  }
  __device__ Index end() const { return {n_, 0}; }

 private:
  int64_t n_;
  int lanes_;
};
__device__ __forceinline__ GridStride grid_stride(int64_t n) { return GridStride(n); }

// Groups of L consecutive lanes of a warp (L a power of two, at most 32; blockDim.x a multiple
// of 32) sharing one item of [0, n): every lane of a group takes the same items, hence the same
// number of trips, so the group's shuffles always find all its lanes.
template <int L>
__device__ __forceinline__ GridStride group_stride(int64_t n) {
  static_assert(L >= 1 && L <= 32 && (L & (L - 1)) == 0, "a power of two up to a warp");
  return GridStride(n, L);
}

// The coordinates (n, y, x, c) of element i of an (N,Y,X,C) tensor, by division in Index:
// uint32_t where the element count fits (64-bit division is a long software sequence), else
// int64_t.
struct Coordinates {
  int64_t n;
  int y, x, c;
};

template <typename Index>
__device__ __forceinline__ Coordinates coordinates(int64_t i, int Y, int X, int C) {
  const Index flat = static_cast<Index>(i), channels = C, columns = X, rows = Y;
  const Index pixel = flat / channels, row = pixel / columns, n = row / rows;
  return {int64_t(n), static_cast<int>(row - n * rows), static_cast<int>(pixel - row * columns),
          static_cast<int>(flat - pixel * channels)};
}

// The mask of this thread's group of L lanes, for the shuffles below.
template <int L>
__device__ __forceinline__ unsigned lane_group_mask() {
  if constexpr (L == 32) {
    return 0xffffffffu;
  } else {
    return ((1u << L) - 1) << ((threadIdx.x % 32) / L * L);
  }
}

// The sum of v over each aligned run of W lanes inside the group `mask` (W <= the group's
// size), every lane of the run getting it: an xor tree, the same order on every run.
template <int W>
__device__ __forceinline__ float lane_group_sum(float v, unsigned mask) {
  for (int offset = W / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(mask, v, offset, W);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

// Sum of v over the threads of a one-dimensional block (blockDim.x a multiple of 32), valid in
// thread 0: each warp's sum, then thread 0 adds the warps' sums in warp order (the same bits on
// every run). Once per kernel, or with a __syncthreads() between two calls.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T per_warp[32];
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) per_warp[threadIdx.x / 32] = v;
  __syncthreads();
  T total = T(0);
  if (threadIdx.x == 0) {
    for (int w = 0; w < int(blockDim.x / 32); ++w) total += per_warp[w];
  }
  return total;
}

__device__ __forceinline__ float warp_max(float value) {
  for (int offset = 16; offset > 0; offset >>= 1)
    value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}

// Per-channel sums over the rows of an (M,C) matrix, in two deterministic passes: the
// partial kernel gives each block a tile of TX channels and a fixed set of rows, and writes
// one partial sum per (row block, channel) in double; a finalize kernel then adds a
// channel's partials in row-block order. The result depends only on (M, C), never on
// timing, and double accumulation keeps it accurate for M in the hundreds of thousands.
struct ColumnTiling {
  dim3 block;      // (TX channels, TY row lanes), TX * TY = 256
  dim3 grid;       // (row blocks, channel tiles)
  int row_blocks;  // partial sums per channel
};

inline ColumnTiling column_tiling(int64_t M, int64_t C) {
  int tx = 1;
  while (tx < 32 && tx < C) tx *= 2;
  const int ty = 256 / tx;
  // About 16 rows per thread, at most 512 row blocks.
  int64_t row_blocks = (M + int64_t(ty) * 16 - 1) / (int64_t(ty) * 16);
  if (row_blocks < 1) row_blocks = 1;
  if (row_blocks > 512) row_blocks = 512;
  const int64_t channel_tiles = (C + tx - 1) / tx;
  return ColumnTiling{dim3(tx, ty),
                      dim3(static_cast<unsigned int>(row_blocks), static_cast<unsigned int>(channel_tiles)),
                      static_cast<int>(row_blocks)};
}

// Called by every thread of a partial kernel launched with column_tiling(M, C): adds
// load(m, c, values) (which fills kValues doubles for element (m, c)) over this block's rows
// and writes partials (row_blocks, kValues, C).
template <int kValues, typename Load>
__device__ void column_partial_sums(double* partials, int64_t M, int64_t C, Load load) {
  __shared__ double tile[kValues][256];
  const int tx = threadIdx.x, ty = threadIdx.y, tx_n = blockDim.x, ty_n = blockDim.y;
  const int64_t c = int64_t(blockIdx.y) * tx_n + tx;
  double acc[kValues];
#pragma unroll
  for (int v = 0; v < kValues; ++v) acc[v] = 0.0;
  if (c < C) {
    for (int64_t m = int64_t(blockIdx.x) * ty_n + ty; m < M; m += int64_t(gridDim.x) * ty_n) {
      double values[kValues];
      load(m, c, values);
#pragma unroll
      for (int v = 0; v < kValues; ++v) acc[v] += values[v];
    }
  }
  const int slot = ty * tx_n + tx;
#pragma unroll
  for (int v = 0; v < kValues; ++v) tile[v][slot] = acc[v];
  __syncthreads();
  for (int half = ty_n / 2; half > 0; half /= 2) {
    if (ty < half) {
#pragma unroll
      for (int v = 0; v < kValues; ++v) tile[v][slot] += tile[v][slot + half * tx_n];
    }
    __syncthreads();
  }
  if (ty == 0 && c < C) {
#pragma unroll
    for (int v = 0; v < kValues; ++v) partials[(int64_t(blockIdx.x) * kValues + v) * C + c] = tile[v][tx];
  }
}

// sums[v] = sum over row blocks of partials (row_blocks, kValues, C) for channel c, in order.
template <int kValues>
__device__ void column_total(double sums[kValues], const double* partials, int row_blocks, int64_t C,
                             int64_t c) {
#pragma unroll
  for (int v = 0; v < kValues; ++v) sums[v] = 0.0;
  for (int b = 0; b < row_blocks; ++b) {
#pragma unroll
    for (int v = 0; v < kValues; ++v) sums[v] += partials[(int64_t(b) * kValues + v) * C + c];
  }
}

// Column sums of partial (rows, n), in a fixed order (the same bits on every run): blocks of
// (kSumRowsColumns, kSumRowsLanes) threads take 32 consecutive columns, lane y adds rows y,
// y+8, ..., then lane 0 the 8 sums in lane order; store(j, total) receives column j's sum.
// Launch: sum_rows_blocks(n) blocks of dim3(kSumRowsColumns, kSumRowsLanes).
constexpr int kSumRowsColumns = 32, kSumRowsLanes = 8;
inline unsigned int sum_rows_blocks(int64_t n) {
  return static_cast<unsigned int>((n + kSumRowsColumns - 1) / kSumRowsColumns);
}

template <typename Store>
__global__ void __launch_bounds__(kSumRowsColumns* kSumRowsLanes)
    sum_rows_kernel(const float* partial, int64_t rows, int64_t n, Store store) {
  __shared__ float sums[kSumRowsLanes][kSumRowsColumns + 1];
  const int64_t j = int64_t(blockIdx.x) * kSumRowsColumns + threadIdx.x;
  float s = 0.0f;
  if (j < n) {
    for (int64_t z = threadIdx.y; z < rows; z += kSumRowsLanes) s += partial[z * n + j];
  }
  sums[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y != 0 || j >= n) return;
  float total = 0.0f;
  for (int y = 0; y < kSumRowsLanes; ++y) total += sums[y][threadIdx.x];
  store(j, total);
}

}  // namespace hisvid::cuda::device
#endif
