// CUDA version of kernels/conv2d.h through cuDNN (legacy convolution API), channels-last.
//
// Layouts. Activations are NHWC, which cuDNN describes directly (CUDNN_TENSOR_NHWC). The
// Keras kernel (KH,KW,C/G,F) is not a cuDNN filter layout: cuDNN's NHWC filter is
// (F,KH,KW,C/G). Viewing the kernel as a row-major (KH*KW*C/G, F) matrix, cuDNN's filter is its
// transpose (F, KH*KW*C/G), so forward and backward-data transpose the kernel into the
// workspace, and backward-filter lets cuDNN write the (F,KH,KW,C/G) gradient into the workspace
// and adds its transpose into dweight (which keeps the += contract of parameter gradients).
// Groups are cuDNN's group count on the convolution descriptors, the same layouts.
//
// Padding. cuDNN pads symmetrically: pad rows above and the same number below. TensorFlow's
// 'same' puts the odd row of an odd total padding below (pad_bottom = pad_top + 1), and
// 'valid' may leave rows unused at the bottom. With symmetric pad_top, cuDNN's output row ho
// reads input rows ho*SH - pad_top + kh, exactly the rows hisvid's row ho reads, so the two
// agree wherever cuDNN has the row; cuDNN merely produces fewer rows when the bottom padding
// is larger. The last row hisvid needs reads input rows up to (HO-1)*SH - pad_top + KH - 1,
// which cuDNN's own padding covers up to H - 1 + pad_top. The shortfall
//   extra_h = max(0, (HO-1)*SH + KH - H - 2*pad_top)   (0 or 1 under TensorFlow's rule)
// is closed by handing cuDNN an input extended with extra_h zero rows at the bottom: its
// output then has exactly HO rows, each reading the same input values as hisvid's (real rows,
// or zeros, be they cuDNN's padding or the appended rows). Columns likewise. Backward-data
// then computes the gradient of the extended input and drops the appended rows and columns
// (they are constants); backward-filter reads the extended input. No copy is made when the
// padding is symmetric (3x3 stride 1 'same', 'valid'), the common case.
//
// Algorithms. One plan per (device, geometry, TF32 flag): cuDNN descriptors plus, per
// direction, the algorithm chosen by the cuDNN heuristics (cudnnGet*Algorithm_v7), which
// runs nothing on the device, so the choice is the same on every run. The first
// deterministic algorithm in heuristic order is taken (runs stay reproducible), else the
// first that works; see pick(). Math type CUDNN_FMA_MATH (true FP32: CUDNN_DEFAULT_MATH
// would let FP32 convolutions run on TF32 tensor cores on Ampere and later) unless TF32 is
// allowed.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/conv2d.h"
#include "kernels/cuda_context.h"
#include "kernels/elementwise.h"

namespace hisvid::cuda {

namespace {

// The transposes around cuDNN. Each takes matrices in (z, rows, cols) to out (z, cols, rows),
// out (= or +=) in's element, plus bias[r] for in's row r where bias is given (an NCHW output's
// bias, added on its way back to NHWC). Three kernels, by the matrices' shape:
//   - 32x32 shared tiles, blocks of (32, 8) threads over (ceil(cols/32), row tiles, matrices);
//   - narrow columns (cols <= kNarrow, e.g. an image's (H*W, 3) pixels): a block reads kSpan
//     whole rows as one contiguous span and writes each of the `cols` output rows' kSpan floats;
//   - narrow rows (rows <= kNarrow, e.g. an NCHW output's (16, H*W)): the mirror image.
// A 32x32 tile over 3 columns would load 12 bytes a warp and leave 29 of 32 threads idle.
constexpr int kNarrow = 16;  // the widest side the narrow kernels take
constexpr int kSpan = 256;   // rows (or columns) per narrow block, one per thread

__device__ inline void put(float* dst, float value, bool accumulate) {
  *dst = accumulate ? *dst + value : value;
}

__global__ void transpose_kernel(float* out, const float* in, int rows, int cols, bool accumulate,
                                 const float* bias) {
  __shared__ float tile[32][33];  // +1 column: the transposed reads hit 32 different banks
  const int64_t matrix = int64_t(blockIdx.z) * rows * cols;
  in += matrix;
  out += matrix;
  const int c0 = blockIdx.x * 32;
  for (int r0 = blockIdx.y * 32; r0 < rows; r0 += gridDim.y * 32) {  // rows beyond the grid's y extent
    for (int dy = threadIdx.y; dy < 32; dy += blockDim.y) {
      const int r = r0 + dy, c = c0 + threadIdx.x;
      if (r < rows && c < cols) tile[dy][threadIdx.x] = in[int64_t(r) * cols + c];
    }
    __syncthreads();
    for (int dy = threadIdx.y; dy < 32; dy += blockDim.y) {
      const int c = c0 + dy, r = r0 + threadIdx.x;
      if (c < cols && r < rows) {
        put(out + int64_t(c) * rows + r, tile[threadIdx.x][dy] + (bias != nullptr ? bias[r] : 0.0f),
            accumulate);
      }
    }
    __syncthreads();  // the tile is refilled for the next rows
  }
}

// cols <= kNarrow: block x takes rows [x * kSpan, x * kSpan + kSpan) of matrix z.
__global__ void transpose_narrow_cols_kernel(float* out, const float* in, int rows, int cols, bool accumulate,
                                             const float* bias) {
  __shared__ float tile[kSpan][kNarrow + 1];
  const int64_t matrix = int64_t(blockIdx.z) * rows * cols;
  in += matrix;
  out += matrix;
  const int r0 = blockIdx.x * kSpan, count = min(kSpan, rows - r0);
  const float* src = in + int64_t(r0) * cols;
  for (int i = threadIdx.x; i < count * cols; i += blockDim.x) tile[i / cols][i % cols] = src[i];
  __syncthreads();
  for (int i = threadIdx.x; i < count * cols; i += blockDim.x) {
    const int c = i / count, j = i % count;
    put(out + int64_t(c) * rows + r0 + j, tile[j][c] + (bias != nullptr ? bias[r0 + j] : 0.0f), accumulate);
  }
}

// rows <= kNarrow: block x takes columns [x * kSpan, x * kSpan + kSpan) of matrix z.
__global__ void transpose_narrow_rows_kernel(float* out, const float* in, int rows, int cols, bool accumulate,
                                             const float* bias) {
  __shared__ float tile[kSpan][kNarrow + 1];
  const int64_t matrix = int64_t(blockIdx.z) * rows * cols;
  in += matrix;
  out += matrix;
  const int c0 = blockIdx.x * kSpan, count = min(kSpan, cols - c0);
  for (int i = threadIdx.x; i < rows * count; i += blockDim.x) {
    const int r = i / count, j = i % count;
    tile[j][r] = in[int64_t(r) * cols + c0 + j];
  }
  __syncthreads();
  float* dst = out + int64_t(c0) * rows;
  for (int i = threadIdx.x; i < count * rows; i += blockDim.x) {
    const int j = i / rows, r = i % rows;
    put(dst + i, tile[j][r] + (bias != nullptr ? bias[r] : 0.0f), accumulate);
  }
}

// dst (N,HD,WD,C) = src (N,HS,WS,C) where h < HS and w < WS, zero elsewhere: appends zero
// rows/columns (HD >= HS) or drops them (HD <= HS).
__global__ void resize_hw_kernel(float* dst, const float* src, int64_t N, int HD, int WD, int HS, int WS,
                                 int64_t C) {
  const int64_t n_total = N * HD * WD * C;
  for (const int64_t i : device::grid_stride(n_total)) {
    const int64_t c = i % C;
    int64_t rest = i / C;
    const int w = static_cast<int>(rest % WD);
    rest /= WD;
    const int h = static_cast<int>(rest % HD);
    const int64_t n = rest / HD;
    dst[i] = (h < HS && w < WS) ? src[((n * HS + h) * WS + w) * C + c] : 0.0f;
  }
}

// out (batch, cols, rows) (= or +=) the transposes of in (batch, rows, cols), plus bias (rows)
// per row of in where given.
void transpose(float* out, const float* in, int rows, int cols, bool accumulate, cudaStream_t stream,
               int64_t batch = 1, const float* bias = nullptr) {
  constexpr int64_t kMostMatrices = 65535;  // the grid's y and z extents
  const int64_t size = int64_t(rows) * cols;
  for (int64_t first = 0; first < batch; first += kMostMatrices) {
    const unsigned matrices = unsigned(std::min(kMostMatrices, batch - first));
    float* o = out + first * size;
    const float* i = in + first * size;
    if (cols <= kNarrow && cols <= rows) {
      const dim3 grid((rows + kSpan - 1) / kSpan, 1, matrices);
      transpose_narrow_cols_kernel<<<grid, kSpan, 0, stream>>>(o, i, rows, cols, accumulate, bias);
    } else if (rows <= kNarrow) {
      const dim3 grid((cols + kSpan - 1) / kSpan, 1, matrices);
      transpose_narrow_rows_kernel<<<grid, kSpan, 0, stream>>>(o, i, rows, cols, accumulate, bias);
    } else {
      const dim3 grid((cols + 31) / 32, unsigned(std::min<int64_t>((rows + 31) / 32, kMostMatrices)),
                      matrices);
      transpose_kernel<<<grid, dim3(32, 8), 0, stream>>>(o, i, rows, cols, accumulate, bias);
    }
    HISVID_CHECK_LAUNCH();
  }
}

void resize_hw(float* dst, const float* src, int64_t N, int HD, int WD, int HS, int WS, int64_t C,
               cudaStream_t stream) {
  const int64_t n = N * HD * WD * C;
  resize_hw_kernel<<<grid_blocks(n, kThreads), kThreads, 0, stream>>>(dst, src, N, HD, WD, HS, WS, C);
  HISVID_CHECK_LAUNCH();
}

std::string describe(const Conv2dGeometry& g) {
  return "input (" + std::to_string(g.N) + "," + std::to_string(g.H) + "," + std::to_string(g.W) + "," +
         std::to_string(g.C) + "), kernel (" + std::to_string(g.KH) + "," + std::to_string(g.KW) + "," +
         std::to_string(g.group_channels()) + "," + std::to_string(g.F) + "), groups " + std::to_string(g.G) +
         ", strides (" + std::to_string(g.SH) + "," + std::to_string(g.SW) + "), output (" +
         std::to_string(g.HO) + "," + std::to_string(g.WO) + "), pad top/left (" + std::to_string(g.pad_top) +
         "," + std::to_string(g.pad_left) + ")";
}

void validate(const Conv2dGeometry& g, const char* op) {
  if (!conv2d_geometry_valid(g)) {
    throw std::runtime_error(std::string("hisvid::cuda::") + op + ": invalid geometry, " + describe(g));
  }
}

// Workspace in 256-byte aligned pieces carved out of one request.
class WorkspaceLayout {
 public:
  size_t add(size_t bytes) {
    const size_t offset = total_;
    total_ += (bytes + 255) / 256 * 256;
    return offset;
  }
  size_t total() const { return total_; }

 private:
  size_t total_ = 0;
};

// A direction's algorithm, its workspace size, the math type it runs with and whether it gives
// the same bits on every run.
template <typename Algo>
struct Choice {
  bool found = false;
  Algo algo{};
  size_t bytes = 0;
  cudnnMathType_t math = CUDNN_FMA_MATH;
  cudnnDeterminism_t determinism = CUDNN_DETERMINISTIC;
};

// Algorithms needing more scratch than this are passed over.
constexpr size_t kMaxAlgorithmWorkspace = size_t(512) << 20;

// The results worth trying, best first: status success and workspace within the cap;
// deterministic ones before the others (a run on the GPU then repeats bit for bit), each group
// in heuristic order. Without TF32, results reported with CUDNN_FMA_MATH come before
// CUDNN_DEFAULT_MATH ones (run under FMA math all the same: the caller keeps the descriptor at
// CUDNN_FMA_MATH) and tensor-op results never qualify; with TF32, any math type but the one
// that converts to half precision.
template <typename Perf>
std::vector<const Perf*> ranked(const Perf* perf, int count, bool allow_tf32) {
  std::vector<const Perf*> order;
  for (int deterministic = 1; deterministic >= 0; --deterministic) {
    for (int level = 0; level < (allow_tf32 ? 1 : 2); ++level) {
      for (int i = 0; i < count; ++i) {
        const Perf& p = perf[i];
        if (p.status != CUDNN_STATUS_SUCCESS || p.memory > kMaxAlgorithmWorkspace) continue;
        if ((p.determinism == CUDNN_DETERMINISTIC) != (deterministic == 1)) continue;
        if (allow_tf32 ? p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION
                       : p.mathType != (level == 0 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH)) {
          continue;
        }
        order.push_back(&p);
      }
    }
  }
  return order;
}

// The first `most` ranked results whose workspace query succeeds under the math type each will
// run with (a DEFAULT_MATH result may not support FMA math: it is passed over then), all of the
// first one's math type, which the descriptor keeps, and of its determinism (so that a timed
// choice never trades a deterministic algorithm for one that is not). workspace_of(algo, &bytes)
// returns the query's status.
template <typename Perf, typename Algo, typename WorkspaceQuery>
std::vector<Choice<Algo>> usable(cudnnConvolutionDescriptor_t conv, const Perf* perf, int count,
                                 bool allow_tf32, size_t most, WorkspaceQuery workspace_of) {
  std::vector<Choice<Algo>> found;
  cudnnDeterminism_t determinism = CUDNN_DETERMINISTIC;
  for (const Perf* p : ranked(perf, count, allow_tf32)) {
    if (found.size() == most) break;
    const cudnnMathType_t math = allow_tf32 ? p->mathType : CUDNN_FMA_MATH;
    if (!found.empty() && (math != found.front().math || p->determinism != determinism)) continue;
    CUDNN_CHECK(cudnnSetConvolutionMathType(conv, math));
    size_t bytes = 0;
    if (workspace_of(p->algo, &bytes) != CUDNN_STATUS_SUCCESS) continue;
    if (found.empty()) determinism = p->determinism;
    found.push_back(Choice<Algo>{true, p->algo, bytes, math, p->determinism});
  }
  if (!found.empty()) CUDNN_CHECK(cudnnSetConvolutionMathType(conv, found.front().math));
  return found;
}

enum class Path { Undecided, Direct, Cudnn, Lanes, DirectV2, CudnnNchw, Const };

// A hand-written candidate of a timed choice besides the tiled kernels (the lanes kernels, the
// const kernel), where it applies to the call: which, and one call of it.
struct Extra {
  Path path;
  std::function<void()> run;
};

// The layout cuDNN is handed: hisvid's own NHWC (CUDNN_TENSOR_NHWC, filter (F,KH,KW,C/G)), or
// NCHW copies made around the call (filter (F,C/G,KH,KW)), as TensorFlow does for FP32
// convolutions on cuDNN: its NCHW kernels are the older and more complete set.
enum class Layout { Nhwc, Nchw };

// Descriptors and chosen algorithms of one convolution geometry on one device, in one layout.
struct ConvPlan {
  Conv2dGeometry g{};
  Layout layout = Layout::Nhwc;
  int HP = 0, WP = 0;  // input extent cuDNN sees: H, W plus the appended zero rows/columns
  TensorDescriptor x, y;
  FilterDescriptor w;
  ConvolutionDescriptor forward_conv, backward_data_conv, backward_filter_conv;
  Choice<cudnnConvolutionFwdAlgo_t> forward;
  Choice<cudnnConvolutionBwdDataAlgo_t> backward_data;
  Choice<cudnnConvolutionBwdFilterAlgo_t> backward_filter;

  bool extended() const { return HP != g.H || WP != g.W; }
};

ConvolutionDescriptor make_conv(const ConvPlan& plan, cudnnMathType_t math) {
  ConvolutionDescriptor conv = make_convolution_descriptor();
  CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv.get(), plan.g.pad_top, plan.g.pad_left, plan.g.SH,
                                              plan.g.SW, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  CUDNN_CHECK(cudnnSetConvolutionMathType(conv.get(), math));
  CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv.get(), plan.g.G));
  return conv;
}

std::unique_ptr<ConvPlan> make_plan(const Conv2dGeometry& g, cudnnMathType_t math, Layout layout) {
  auto plan = std::make_unique<ConvPlan>();
  plan->g = g;
  plan->layout = layout;
  plan->HP = g.H + std::max(0, (g.HO - 1) * g.SH + g.KH - g.H - 2 * g.pad_top);
  plan->WP = g.W + std::max(0, (g.WO - 1) * g.SW + g.KW - g.W - 2 * g.pad_left);
  const cudnnTensorFormat_t format = layout == Layout::Nchw ? CUDNN_TENSOR_NCHW : CUDNN_TENSOR_NHWC;
  plan->x = make_tensor_descriptor();
  CUDNN_CHECK(
      cudnnSetTensor4dDescriptor(plan->x.get(), format, CUDNN_DATA_FLOAT, g.N, g.C, plan->HP, plan->WP));
  plan->y = make_tensor_descriptor();
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->y.get(), format, CUDNN_DATA_FLOAT, g.N, g.F, g.HO, g.WO));
  plan->w = make_filter_descriptor();
  CUDNN_CHECK(cudnnSetFilter4dDescriptor(plan->w.get(), CUDNN_DATA_FLOAT, format, g.F, g.group_channels(),
                                         g.KH, g.KW));
  plan->forward_conv = make_conv(*plan, math);
  plan->backward_data_conv = make_conv(*plan, math);
  plan->backward_filter_conv = make_conv(*plan, math);

  int dims[4] = {0, 0, 0, 0};  // N, C, H, W as cuDNN computes the output
  CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(plan->forward_conv.get(), plan->x.get(), plan->w.get(),
                                                    &dims[0], &dims[1], &dims[2], &dims[3]));
  if (dims[0] != g.N || dims[1] != g.F || dims[2] != g.HO || dims[3] != g.WO) {
    throw std::runtime_error("hisvid::cuda::conv2d: cuDNN's output (" + std::to_string(dims[2]) + "," +
                             std::to_string(dims[3]) + ") does not match the geometry, " + describe(g));
  }
  return plan;
}

// The heuristics' usable algorithms of each direction, best first, at most `most`.
std::vector<Choice<cudnnConvolutionFwdAlgo_t>> forward_candidates(ConvPlan& plan, cudnnHandle_t handle,
                                                                  bool allow_tf32, size_t most) {
  std::array<cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT> perf{};
  int count = 0;
  CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(handle, plan.x.get(), plan.w.get(),
                                                     plan.forward_conv.get(), plan.y.get(),
                                                     static_cast<int>(perf.size()), &count, perf.data()));
  return usable<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(
      plan.forward_conv.get(), perf.data(), count, allow_tf32, most,
      [&](cudnnConvolutionFwdAlgo_t algo, size_t* bytes) {
        return cudnnGetConvolutionForwardWorkspaceSize(handle, plan.x.get(), plan.w.get(),
                                                       plan.forward_conv.get(), plan.y.get(), algo, bytes);
      });
}

std::vector<Choice<cudnnConvolutionBwdDataAlgo_t>> backward_data_candidates(ConvPlan& plan,
                                                                            cudnnHandle_t handle,
                                                                            bool allow_tf32, size_t most) {
  std::array<cudnnConvolutionBwdDataAlgoPerf_t, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT> perf{};
  int count = 0;
  CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
      handle, plan.w.get(), plan.y.get(), plan.backward_data_conv.get(), plan.x.get(),
      static_cast<int>(perf.size()), &count, perf.data()));
  return usable<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(
      plan.backward_data_conv.get(), perf.data(), count, allow_tf32, most,
      [&](cudnnConvolutionBwdDataAlgo_t algo, size_t* bytes) {
        return cudnnGetConvolutionBackwardDataWorkspaceSize(
            handle, plan.w.get(), plan.y.get(), plan.backward_data_conv.get(), plan.x.get(), algo, bytes);
      });
}

std::vector<Choice<cudnnConvolutionBwdFilterAlgo_t>> backward_filter_candidates(ConvPlan& plan,
                                                                                cudnnHandle_t handle,
                                                                                bool allow_tf32,
                                                                                size_t most) {
  std::array<cudnnConvolutionBwdFilterAlgoPerf_t, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT> perf{};
  int count = 0;
  CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
      handle, plan.x.get(), plan.y.get(), plan.backward_filter_conv.get(), plan.w.get(),
      static_cast<int>(perf.size()), &count, perf.data()));
  return usable<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(
      plan.backward_filter_conv.get(), perf.data(), count, allow_tf32, most,
      [&](cudnnConvolutionBwdFilterAlgo_t algo, size_t* bytes) {
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(
            handle, plan.x.get(), plan.y.get(), plan.backward_filter_conv.get(), plan.w.get(), algo, bytes);
      });
}

// The heuristics' first usable algorithm into `choice`; `op` names the pass in the error.
template <typename Algo>
void take_first(Choice<Algo>& choice, std::vector<Choice<Algo>> candidates, const ConvPlan& plan,
                const char* op) {
  if (candidates.empty()) {
    throw std::runtime_error(std::string("hisvid::cuda::") + op + ": no cuDNN algorithm for " +
                             describe(plan.g));
  }
  choice = candidates.front();
}

enum class Direction { Forward, BackwardData, BackwardFilter };

// What plans (and timed choices) are kept by: the device, the TF32 flag and the geometry.
using PlanKey = std::array<int, 16>;

PlanKey plan_key(const Context& ctx, const Conv2dGeometry& g) {
  return {ctx.device(), ctx.allow_tf32() ? 1 : 0,
          g.N,          g.H,
          g.W,          g.C,
          g.F,          g.KH,
          g.KW,         g.SH,
          g.SW,         g.HO,
          g.WO,         g.pad_top,
          g.pad_left,   g.G};
}

// The plan of g on ctx's device in `layout`, with the algorithm of `direction` chosen. Plans
// live until exit; a training run meets a handful of geometries.
ConvPlan& plan_for(Context& ctx, const Conv2dGeometry& g, Direction direction, Layout layout = Layout::Nhwc) {
  static std::mutex mutex;
  static std::map<PlanKey, std::unique_ptr<ConvPlan>> plans[2];  // by layout
  const bool tf32 = ctx.allow_tf32();
  std::lock_guard<std::mutex> lock(mutex);
  std::unique_ptr<ConvPlan>& plan = plans[layout == Layout::Nchw ? 1 : 0][plan_key(ctx, g)];
  if (!plan) plan = make_plan(g, ctx.cudnn_math_type(), layout);
  switch (direction) {
    case Direction::Forward:
      if (!plan->forward.found) {
        take_first(plan->forward, forward_candidates(*plan, ctx.cudnn(), tf32, 1), *plan, "conv2d_forward");
      }
      break;
    case Direction::BackwardData:
      if (!plan->backward_data.found) {
        take_first(plan->backward_data, backward_data_candidates(*plan, ctx.cudnn(), tf32, 1), *plan,
                   "conv2d_backward_data");
      }
      break;
    case Direction::BackwardFilter:
      if (!plan->backward_filter.found) {
        take_first(plan->backward_filter, backward_filter_candidates(*plan, ctx.cudnn(), tf32, 1), *plan,
                   "conv2d_backward_filter");
      }
      break;
  }
  return *plan;
}

// --- the three passes on cuDNN, with a given algorithm ---------------------------------------
//
// In the NCHW layout each pass copies its activations and gradients in and out of NCHW in the
// workspace around the call (a batched transpose per image: (H*W, C) <-> (C, H*W)), and the
// filter (F,KH,KW,C/G) <-> (F,C/G,KH,KW) (a transpose per filter: (KH*KW, C/G) <-> (C/G, KH*KW)).

// The Keras kernel (KH,KW,C/G,F) as the plan's cuDNN filter, in the workspace at w_t (and, for
// NCHW, w_n, which is then returned): (F,KH,KW,C/G), or (F,C/G,KH,KW).
const float* cudnn_filter(const float* weight, const ConvPlan& plan, float* w_t, float* w_n,
                          cudaStream_t stream) {
  const Conv2dGeometry& g = plan.g;
  transpose(w_t, weight, g.KH * g.KW * g.group_channels(), g.F, false, stream);
  if (plan.layout == Layout::Nhwc) return w_t;
  transpose(w_n, w_t, g.KH * g.KW, g.group_channels(), false, stream, g.F);
  return w_n;
}

// out (N,HO,WO,F) = conv(inp (N,H,W,C), weight (KH,KW,C/G,F)) + bias (F) (bias may be null)
void forward_cudnn(const Conv2dForward<float>& k, Context& ctx, const ConvPlan& plan,
                   const Choice<cudnnConvolutionFwdAlgo_t>& algo, cudaStream_t stream) {
  float* out = k.out;
  const float *inp = k.inp, *weight = k.weight, *bias = k.bias;
  const Conv2dGeometry& g = k.g;
  const bool nchw = plan.layout == Layout::Nchw;

  const int R = g.KH * g.KW * g.group_channels();  // rows of the kernel viewed as (KH*KW*C/G, F)
  const size_t x_bytes = sizeof(float) * size_t(g.N) * plan.HP * plan.WP * g.C;
  const size_t y_bytes = sizeof(float) * size_t(g.N) * g.HO * g.WO * g.F;
  WorkspaceLayout layout;
  const size_t w_at = layout.add(sizeof(float) * size_t(R) * g.F);
  const size_t wn_at = nchw ? layout.add(sizeof(float) * size_t(R) * g.F) : 0;
  const size_t x_at = plan.extended() ? layout.add(x_bytes) : 0;
  const size_t xn_at = nchw ? layout.add(x_bytes) : 0;
  const size_t yn_at = nchw ? layout.add(y_bytes) : 0;
  const size_t scratch_at = layout.add(algo.bytes);
  char* ws = static_cast<char*>(ctx.workspace(layout.total()));
  const auto at = [ws](size_t offset) { return reinterpret_cast<float*>(ws + offset); };

  const float* w = cudnn_filter(weight, plan, at(w_at), at(wn_at), stream);
  const float* x = inp;
  if (plan.extended()) {
    resize_hw(at(x_at), inp, g.N, plan.HP, plan.WP, g.H, g.W, g.C, stream);  // (N,HP,WP,C)
    x = at(x_at);
  }
  if (nchw) {
    transpose(at(xn_at), x, plan.HP * plan.WP, g.C, false, stream, g.N);  // (N,C,HP,WP)
    x = at(xn_at);
  }
  float* y = nchw ? at(yn_at) : out;
  const float one = 1.0f, zero = 0.0f;
  CUDNN_CHECK(cudnnConvolutionForward(ctx.cudnn(), &one, plan.x.get(), x, plan.w.get(), w,
                                      plan.forward_conv.get(), algo.algo, ws + scratch_at, algo.bytes, &zero,
                                      plan.y.get(), y));
  if (nchw) {  // (N,F,HO,WO) -> (N,HO,WO,F), the bias added on the way
    transpose(out, y, g.F, g.HO * g.WO, false, stream, g.N, bias);
  } else if (bias != nullptr) {
    BiasAddForward<float> add_bias;
    add_bias.out = out, add_bias.inp = out, add_bias.bias = bias;
    add_bias.M = int64_t(g.N) * g.HO * g.WO, add_bias.C = g.F;
    bias_add_forward(add_bias, stream);
  }
}

// dinp (N,H,W,C) (=) from dout (N,HO,WO,F) and weight (KH,KW,C/G,F)
void backward_data_cudnn(const Conv2dBackwardData<float>& k, Context& ctx, const ConvPlan& plan,
                         const Choice<cudnnConvolutionBwdDataAlgo_t>& algo, cudaStream_t stream) {
  float* dinp = k.dinp;
  const float *dout = k.dout, *weight = k.weight;
  const Conv2dGeometry& g = k.g;
  const bool nchw = plan.layout == Layout::Nchw;

  const int R = g.KH * g.KW * g.group_channels();
  const size_t x_bytes = sizeof(float) * size_t(g.N) * plan.HP * plan.WP * g.C;
  const size_t y_bytes = sizeof(float) * size_t(g.N) * g.HO * g.WO * g.F;
  WorkspaceLayout layout;
  const size_t w_at = layout.add(sizeof(float) * size_t(R) * g.F);
  const size_t wn_at = nchw ? layout.add(sizeof(float) * size_t(R) * g.F) : 0;
  const size_t dx_at = plan.extended() ? layout.add(x_bytes) : 0;
  const size_t dxn_at = nchw ? layout.add(x_bytes) : 0;
  const size_t dyn_at = nchw ? layout.add(y_bytes) : 0;
  const size_t scratch_at = layout.add(algo.bytes);
  char* ws = static_cast<char*>(ctx.workspace(layout.total()));
  const auto at = [ws](size_t offset) { return reinterpret_cast<float*>(ws + offset); };
  float* dx = plan.extended() ? at(dx_at) : dinp;  // (N,HP,WP,C)

  const float* w = cudnn_filter(weight, plan, at(w_at), at(wn_at), stream);
  const float* dy = dout;
  if (nchw) {
    transpose(at(dyn_at), dout, g.HO * g.WO, g.F, false, stream, g.N);  // (N,F,HO,WO)
    dy = at(dyn_at);
  }
  const float one = 1.0f, zero = 0.0f;
  CUDNN_CHECK(cudnnConvolutionBackwardData(ctx.cudnn(), &one, plan.w.get(), w, plan.y.get(), dy,
                                           plan.backward_data_conv.get(), algo.algo, ws + scratch_at,
                                           algo.bytes, &zero, plan.x.get(), nchw ? at(dxn_at) : dx));
  if (nchw) transpose(dx, at(dxn_at), g.C, plan.HP * plan.WP, false, stream, g.N);  // back to (N,HP,WP,C)
  if (plan.extended()) resize_hw(dinp, dx, g.N, g.H, g.W, plan.HP, plan.WP, g.C, stream);
}

// dweight (KH,KW,C/G,F) (+=) and dbias (F) (+=, may be null) from dout (N,HO,WO,F), inp (N,H,W,C)
void backward_filter_cudnn(const Conv2dBackwardFilter<float>& k, Context& ctx, const ConvPlan& plan,
                           const Choice<cudnnConvolutionBwdFilterAlgo_t>& algo, cudaStream_t stream) {
  float *dweight = k.dweight, *dbias = k.dbias;
  const float *dout = k.dout, *inp = k.inp;
  const Conv2dGeometry& g = k.g;
  const bool nchw = plan.layout == Layout::Nchw;

  const int R = g.KH * g.KW * g.group_channels();
  const size_t x_bytes = sizeof(float) * size_t(g.N) * plan.HP * plan.WP * g.C;
  const size_t y_bytes = sizeof(float) * size_t(g.N) * g.HO * g.WO * g.F;
  WorkspaceLayout layout;
  const size_t dw_at = layout.add(sizeof(float) * size_t(R) * g.F);
  const size_t dwn_at = nchw ? layout.add(sizeof(float) * size_t(R) * g.F) : 0;
  const size_t x_at = plan.extended() ? layout.add(x_bytes) : 0;
  const size_t xn_at = nchw ? layout.add(x_bytes) : 0;
  const size_t dyn_at = nchw ? layout.add(y_bytes) : 0;
  const size_t scratch_at = layout.add(algo.bytes);
  char* ws = static_cast<char*>(ctx.workspace(layout.total()));
  const auto at = [ws](size_t offset) { return reinterpret_cast<float*>(ws + offset); };
  float* dw_t = at(dw_at);  // (F,KH,KW,C/G)

  const float* x = inp;
  if (plan.extended()) {
    resize_hw(at(x_at), inp, g.N, plan.HP, plan.WP, g.H, g.W, g.C, stream);  // (N,HP,WP,C)
    x = at(x_at);
  }
  const float* dy = dout;
  if (nchw) {
    transpose(at(xn_at), x, plan.HP * plan.WP, g.C, false, stream, g.N);  // (N,C,HP,WP)
    transpose(at(dyn_at), dout, g.HO * g.WO, g.F, false, stream, g.N);    // (N,F,HO,WO)
    x = at(xn_at), dy = at(dyn_at);
  }
  const float one = 1.0f, zero = 0.0f;
  CUDNN_CHECK(cudnnConvolutionBackwardFilter(ctx.cudnn(), &one, plan.x.get(), x, plan.y.get(), dy,
                                             plan.backward_filter_conv.get(), algo.algo, ws + scratch_at,
                                             algo.bytes, &zero, plan.w.get(), nchw ? at(dwn_at) : dw_t));
  // (F,C/G,KH,KW) -> (F,KH,KW,C/G)
  if (nchw) transpose(dw_t, at(dwn_at), g.group_channels(), g.KH * g.KW, false, stream, g.F);
  transpose(dweight, dw_t, g.F, R, true, stream);
  // Asks for workspace again, after every use of ws above has been enqueued.
  if (dbias != nullptr) {
    BiasAddBackward<float> sum_columns;
    sum_columns.dbias = dbias, sum_columns.dout = dout, sum_columns.M = int64_t(g.N) * g.HO * g.WO,
    sum_columns.C = g.F;
    bias_add_backward(sum_columns, stream);
  }
}

// --- which implementation runs -------------------------------------------------------------
//
// Measured on an H100. Small convolutions (bench/results/2026-11-26-h100*.md: kernel_lab with
// CUDA events, and hisvid_bench with HISVID_CUDA_CONV=cudnn against the rule in one run): a cuDNN
// convolution costs at least ~30 us per call whatever its size (the legacy API's host work and
// the kernel transposes around it); the direct kernels ran the harness's small cases in 3-50 us
// and beat cuDNN in every pass of every seed layer at batch 4 (e.g. backward filter of the
// LRCN's second layer 0.064 ms against 0.605). Large ones (bench/results/2026-11-27-h100.md,
// per-layer times at batch 32 and 256 under each path): neither path wins them all. cuDNN's
// heuristic-first algorithm took 43.5 ms for the backward pass of the LRCN's first layer at
// batch 256 where the direct kernels took 13.3, and 236 ms against 48 for the second ConvLSTM
// layer's; the direct kernels lost the LRCN's third and fourth layers there (0.70 / 1.58 ms
// against 0.32 / 0.75), their tiles idle on small outputs.
// So, by default: the direct kernels where the tiled path applies and the work, counting the
// idle part of the tiles for the forward and backward-data kernels, is at most kDirectMaxFlops
// (twice the largest seed layer at batch 4, 0.28 GFLOP); above that, or where the tiles do not
// apply, a choice made by timing (conv2d_*_timed below). Where version 2's direct kernels apply
// (3x3 stride 1; small filter gradients) the choice is timed too, version 1 against version 2
// (written after that run, not yet measured: timing decides until a run does).
constexpr double kDirectMaxFlops = 6e8;

// HISVID_CUDA_CONV: auto (or unset) as above; `rule` the fixed rule of commit c872e8d (direct up
// to kDirectMaxFlops, cuDNN's heuristic-first algorithm above: no timing, the same choice in
// every run); `timed` times every convolution; `cudnn`, `cudnn_nchw` or `direct_v1` forces one
// path; `direct_v2` the direct path with version 2's kernels.
enum class ConvChoice { Auto, Rule, Timed, Cudnn, CudnnNchw, Direct, DirectV2 };

ConvChoice forced_choice() {
  static const ConvChoice choice = [] {
    const char* v = std::getenv("HISVID_CUDA_CONV");
    const std::string s = v == nullptr ? "" : v;
    if (s.empty() || s == "auto") return ConvChoice::Auto;
    if (s == "rule") return ConvChoice::Rule;
    if (s == "timed") return ConvChoice::Timed;
    if (s == "cudnn") return ConvChoice::Cudnn;
    if (s == "cudnn_nchw") return ConvChoice::CudnnNchw;
    if (s == "direct_v1") return ConvChoice::Direct;
    if (s == "direct_v2") return ConvChoice::DirectV2;
    throw std::invalid_argument("HISVID_CUDA_CONV='" + s +
                                "': expected auto, rule, timed, cudnn, cudnn_nchw, direct_v1 or direct_v2");
  }();
  return choice;
}

// HISVID_CUDA_CONV_NCHW=0 leaves cuDNN's NCHW candidates out of the timed choices (1 or unset:
// timed beside the NHWC ones), as when its rows failed on a GPU.
bool nchw_timed() {
  static const bool timed = [] {
    const char* v = std::getenv("HISVID_CUDA_CONV_NCHW");
    const std::string s = v == nullptr ? "" : v;
    if (s.empty() || s == "1") return true;
    if (s == "0") return false;
    throw std::invalid_argument("HISVID_CUDA_CONV_NCHW='" + s + "': expected 0 or 1");
  }();
  return timed;
}

// The direct path's kernels: version 2's under HISVID_CUDA_CONV=direct_v2 (version 1's
// where version 2's do not apply), else version 1.
void direct_forward(const Conv2dForward<float>& k, cudaStream_t stream) {
  forced_choice() == ConvChoice::DirectV2 ? conv2d_forward_direct_v2(k, stream)
                                          : conv2d_forward_direct_v1(k, stream);
}

void direct_backward_data(const Conv2dBackwardData<float>& k, cudaStream_t stream) {
  forced_choice() == ConvChoice::DirectV2 ? conv2d_backward_data_direct_v2(k, stream)
                                          : conv2d_backward_data_direct_v1(k, stream);
}

void direct_backward_filter(const Conv2dBackwardFilter<float>& k, cudaStream_t stream) {
  forced_choice() == ConvChoice::DirectV2 ? conv2d_backward_filter_direct_v2(k, stream)
                                          : conv2d_backward_filter_direct_v1(k, stream);
}

// The multiply-adds x 2 of a convolution producing rows x cols output pixels per image from
// (KH, KW, C/G) windows, F values each; with `tiled`, rows and cols rounded up to the forward
// kernel's 8x8 tiles.
double conv_flops(const Conv2dGeometry& g, int rows, int cols, bool tiled) {
  const double r = tiled ? (rows + 7) / 8 * 8 : rows, c = tiled ? (cols + 7) / 8 * 8 : cols;
  return 2.0 * g.N * r * c * double(g.F) * g.KH * g.KW * g.group_channels();
}

// Whether the direct kernels run g's pass on their tiled path (backward data: stride 1 runs the
// tiled forward kernel over the input's H x W; other strides the plain kernel), and the work
// they do there.
bool direct_tiled(const Conv2dGeometry& g, Direction pass) {
  return conv2d_direct_v1_tiles(g) && (pass != Direction::BackwardData || (g.SH == 1 && g.SW == 1));
}

double direct_flops(const Conv2dGeometry& g, Direction pass) {
  switch (pass) {
    case Direction::Forward:
      return conv_flops(g, g.HO, g.WO, true);
    case Direction::BackwardData:
      return conv_flops(g, g.H, g.W, true);
    case Direction::BackwardFilter:
      return conv_flops(g, g.HO, g.WO, false);
  }
  return 0.0;
}

// The fixed rule: the direct kernels where tiled and small, cuDNN otherwise.
Path rule_path(const Conv2dGeometry& g, Direction pass) {
  return direct_tiled(g, pass) && direct_flops(g, pass) <= kDirectMaxFlops ? Path::Direct : Path::Cudnn;
}

// The share of the tiled kernel's threads that compute an output of g's pass: the forward
// kernel's 8x8 tiles over HO x WO, or over H x W for backward data; 1 for backward filter.
double tile_use(const Conv2dGeometry& g, Direction pass) {
  if (pass == Direction::BackwardFilter) return 1.0;
  const int rows = pass == Direction::Forward ? g.HO : g.H, cols = pass == Direction::Forward ? g.WO : g.W;
  return double(rows) * cols / (double((rows + 7) / 8 * 8) * ((cols + 7) / 8 * 8));
}

// Below this share of busy tile threads the default rows time the tiled kernels against the
// lanes kernels (and cuDNN): the LRCN's 4x4 and 2x2 layers (1/4, 1/16), not its 64x64 and
// 16x16 ones nor the ConvLSTM's 62x62, 29x29 and 13x13 ones (0.94, 0.82, 0.66).
constexpr double kTimedBelowTileUse = 0.5;

// Whether version 2's direct kernel of g's pass applies (else its row runs version 1): the
// strips kernel for 3x3 stride-1 forward and backward data (whose transposed convolution is
// 3x3 stride 1 too), the small-result kernel for the filter gradient.
bool v2_applies(const Conv2dGeometry& g, Direction pass) {
  return pass == Direction::BackwardFilter ? conv2d_filter_small_applies(g) : conv2d_strips_apply(g);
}

// Whether the const kernel applies to g's pass (none for the filter gradient).
bool const_applies(const Conv2dGeometry& g, Direction pass) {
  switch (pass) {
    case Direction::Forward:
      return conv2d_const_applies(g);
    case Direction::BackwardData:
      return conv2d_backward_data_const_applies(g);
    case Direction::BackwardFilter:
      break;
  }
  return false;
}

// Which path the default rows take without timing: forced, or the rule; Undecided where the
// choice is left to timing.
Path untimed_path(const Conv2dGeometry& g, Direction pass) {
  switch (forced_choice()) {
    case ConvChoice::Cudnn:
      return Path::Cudnn;
    case ConvChoice::CudnnNchw:
      return Path::CudnnNchw;
    case ConvChoice::Direct:
    case ConvChoice::DirectV2:
      return Path::Direct;
    case ConvChoice::Rule:
      return rule_path(g, pass);
    case ConvChoice::Timed:
      return Path::Undecided;
    case ConvChoice::Auto:
      break;
  }
  // Small work goes to the tiled direct kernels untimed, unless their tiles would mostly idle
  // (then the lanes kernels may win: timed) or version 2's kernels or the const kernel apply
  // (timed against them).
  return rule_path(g, pass) == Path::Direct && tile_use(g, pass) >= kTimedBelowTileUse &&
                 !v2_applies(g, pass) && !const_applies(g, pass)
             ? Path::Direct
             : Path::Undecided;
}

// --- the choice made by timing ----------------------------------------------------------------
//
// At the first call of a geometry and pass (per device, per process), outside a graph capture:
// each candidate runs once to warm up, then kTimedRuns times between CUDA events; the fastest
// run counts. The candidates: the tiled direct kernels where they apply; version 2's where they
// apply; the lanes kernels where the tiles would be under half busy; cuDNN's first kTimedAlgorithms usable
// algorithms in heuristic order (deterministic ones first as always), in hisvid's NHWC layout and on NCHW
// copies, where the rule would run cuDNN (large work, no tiles) or under HISVID_CUDA_CONV=timed, so that
// small layers need no cuDNN. Only algorithms as deterministic as the heuristics' first, and with at most
// kTimedExtraWorkspace more scratch than the NHWC one, are timed (the NCHW copies come on top: the
// workspace keeps their size even where NCHW loses).
// The rule's path stays unless a candidate beats it by kClearWin, so that noise between
// near-equal paths rarely changes the choice from one process to the next; still, a timed
// choice may differ between runs and with it the result's last bits (HISVID_CUDA_CONV=rule
// fixes the choice). The timing runs write the call's own output (forward, backward data:
// overwritten by the chosen path's call that follows) or scratch memory (backward filter
// accumulates into dweight). Inside a capture nothing can be timed: a geometry first met there
// keeps the rule's path (the graph's), in that capture and every call after it.
constexpr size_t kTimedAlgorithms = 4;
// The workspace is one block that keeps the largest size asked for: a timed candidate may ask
// for up to this much more than the rule's algorithm, no more.
constexpr size_t kTimedExtraWorkspace = size_t(64) << 20;

// Times the candidates of one pass and records the choice in path and chosen. run_direct() and
// run_cudnn(algo) run one call each; `candidates` are cuDNN's, best first by its heuristics, and
// `nchw_candidates` its algorithms for the NCHW plan, run by run_cudnn_nchw(algo); `failures`
// says why candidates are missing (a plan cuDNN refused), for the record. A
// candidate that fails (its workspace cannot be had, cuDNN refuses it) is passed over, unless
// the failure left the device unusable; the first that runs is the baseline (normally the
// rule's path), kept unless another beats it by kClearWin.
template <typename Algo, typename RunDirect, typename RunDirectV2, typename RunCudnn, typename RunCudnnNchw>
void time_paths(const char* op, const Conv2dGeometry& g, Direction pass,
                const std::vector<Choice<Algo>>& candidates, const std::vector<Choice<Algo>>& nchw_candidates,
                const RunDirect& run_direct, const RunDirectV2& run_direct_v2, const RunCudnn& run_cudnn,
                const RunCudnnNchw& run_cudnn_nchw, const std::vector<Extra>& extras, cudaStream_t stream,
                std::string failures, Path& path, Choice<Algo>& chosen) {
  Path best_path = Path::Undecided;
  float best_ms = 0.0f, baseline_ms = 0.0f;
  std::string best_name;
  TimedChoice record{op, describe(g), "", {}, ""};
  const auto consider = [&](Path p, const Choice<Algo>* algo, const auto& run) {
    const std::string name = p == Path::Cudnn ? "cudnn algo " + std::to_string(static_cast<int>(algo->algo))
                             : p == Path::CudnnNchw
                                 ? "cudnn_nchw algo " + std::to_string(static_cast<int>(algo->algo))
                             : p == Path::DirectV2 ? "direct_v2"
                             : p == Path::Lanes    ? "lanes"
                             : p == Path::Const    ? "const"
                                                   : "direct_v1";
    const std::optional<float> timed = try_fastest_ms(run, stream, name, failures);
    if (!timed) return;
    const float ms = *timed;
    record.candidates_ms.emplace_back(name, ms);
    const bool baseline = best_path == Path::Undecided;
    if (baseline) baseline_ms = ms;
    if (baseline || (ms < best_ms && ms < kClearWin * baseline_ms)) {
      best_path = p, best_ms = ms, best_name = name;
      if (algo != nullptr) chosen = *algo;
    }
  };
  const bool direct = direct_tiled(g, pass), rule_direct = rule_path(g, pass) == Path::Direct;
  if (rule_direct) consider(Path::Direct, nullptr, run_direct);
  const std::vector<Choice<Algo>>& first = candidates.empty() ? nchw_candidates : candidates;
  const size_t most_bytes = first.empty() ? 0 : first.front().bytes + kTimedExtraWorkspace;
  for (const Choice<Algo>& algo : candidates) {
    if (algo.bytes > most_bytes) continue;
    consider(Path::Cudnn, &algo, [&] { run_cudnn(algo); });
  }
  for (const Choice<Algo>& algo : nchw_candidates) {
    if (algo.bytes > most_bytes) continue;
    consider(Path::CudnnNchw, &algo, [&] { run_cudnn_nchw(algo); });
  }
  if (direct && !rule_direct) consider(Path::Direct, nullptr, run_direct);
  if (v2_applies(g, pass)) consider(Path::DirectV2, nullptr, run_direct_v2);
  for (const Extra& extra : extras) consider(extra.path, nullptr, extra.run);
  if (best_path == Path::Undecided) {
    throw std::runtime_error("hisvid::cuda::conv2d: no path could run " + describe(g) +
                             (failures.empty() ? "" : ": " + failures));
  }
  path = best_path;
  record.kept = best_name;
  record.failed = failures;
  record_timed_choice(std::move(record));
}

std::mutex& timing_mutex() {
  static std::mutex mutex;
  return mutex;
}

// What timing chose for one geometry and pass (Algo says which pass): the tiled direct
// kernels, the lanes kernels, or cuDNN with `algo`; Undecided until timed.
template <typename Algo>
struct Timed {
  Path path = Path::Undecided;
  Choice<Algo> algo;
};

// The timed choice of g's pass on ctx's device (guarded by timing_mutex). Kept apart from the
// cuDNN plans: small geometries are timed between the direct kernels alone, with no cuDNN.
template <typename Algo>
Timed<Algo>& timed_choice(const Context& ctx, const Conv2dGeometry& g) {
  static std::map<PlanKey, Timed<Algo>> choices;
  return choices[plan_key(ctx, g)];
}

// The NCHW candidates worth timing beside the NHWC ones: none where the NCHW copies of the
// activations would take more than a quarter of the device's free memory (the workspace keeps
// them, chosen or not), and only deterministic ones where the NHWC choice is (a timed choice never
// trades reproducibility for speed). What is left out is said in `missing`.
template <typename Algo>
void trim_nchw_candidates(const ConvPlan& nchw, const std::vector<Choice<Algo>>& nhwc,
                          std::vector<Choice<Algo>>& candidates, std::string& missing) {
  if (candidates.empty()) return;
  const Conv2dGeometry& g = nchw.g;
  const double copies =
      sizeof(float) * (double(g.N) * nchw.HP * nchw.WP * g.C + double(g.N) * g.HO * g.WO * g.F);
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess && copies > 0.25 * double(free_bytes)) {
    missing += std::string(missing.empty() ? "" : "; ") + "cudnn_nchw: its copies (" +
               std::to_string(static_cast<long long>(copies / 1048576.0)) + " MiB) exceed a quarter of the " +
               std::to_string(free_bytes >> 20) + " MiB free";
    candidates.clear();
    return;
  }
  const bool deterministic = nhwc.empty() || nhwc.front().determinism == CUDNN_DETERMINISTIC;
  if (!deterministic) return;
  candidates.erase(std::remove_if(candidates.begin(), candidates.end(),
                                  [](const Choice<Algo>& c) { return c.determinism != CUDNN_DETERMINISTIC; }),
                   candidates.end());
}

// One pass of a timed row: at the first call outside a capture, time_paths over the pass's
// candidates, on the arguments with_trial hands to its callback (the call's own, or with
// scratch for an accumulated output); then the chosen path runs the call. cuDNN is among the
// candidates where the rule would run it (large work, or no tiles), or everywhere under
// HISVID_CUDA_CONV=timed; the lanes kernel (`lanes`, nullptr where the pass has none) where the
// tiles would be under half busy; the const kernel (`konst`, nullptr where the pass has none)
// where its weights fit in constant memory. rule_algo: cuDNN's heuristic-first algorithm in the plan.
template <typename Args, typename Algo, typename Candidates, typename Direct, typename DirectV2,
          typename Cudnn, typename Lanes, typename Const, typename WithTrial>
void run_timed(const Args& k, cudaStream_t stream, const char* op, Direction pass,
               Choice<Algo> ConvPlan::*rule_algo, const Candidates& candidates, const Direct& direct,
               const DirectV2& direct_v2, const Cudnn& cudnn, const Lanes& lanes, const Const& konst,
               const WithTrial& with_trial) {
  validate(k.g, op);
  if (k.g.N == 0) return;
  Context& ctx = context_for_stream(stream, op);
  const bool rule_direct = rule_path(k.g, pass) == Path::Direct;
  Timed<Algo> chosen;
  {
    std::lock_guard<std::mutex> lock(timing_mutex());
    Timed<Algo>& timed = timed_choice<Algo>(ctx, k.g);
    if (timed.path == Path::Undecided && !capturing(stream)) {
      ConvPlan *plan = nullptr, *nchw_plan = nullptr;
      std::vector<Choice<Algo>> algos, nchw_algos;
      std::string missing;  // why a layout's candidates could not be had, for the record
      if (!rule_direct || forced_choice() == ConvChoice::Timed) {
        try {
          plan = &plan_for(ctx, k.g, pass);
          algos = candidates(*plan, ctx.cudnn(), ctx.allow_tf32(), kTimedAlgorithms);
        } catch (const std::exception& e) {
          missing = std::string("cudnn plan: ") + e.what();
          algos.clear();
        }
        if (nchw_timed()) {
          try {
            nchw_plan = &plan_for(ctx, k.g, pass, Layout::Nchw);
            nchw_algos = candidates(*nchw_plan, ctx.cudnn(), ctx.allow_tf32(), kTimedAlgorithms);
          } catch (const std::exception& e) {
            missing += std::string(missing.empty() ? "" : "; ") + "cudnn_nchw plan: " + e.what();
            nchw_algos.clear();
          }
          if (nchw_plan != nullptr) trim_nchw_candidates(*nchw_plan, algos, nchw_algos, missing);
        }
        if (!rule_direct && algos.empty() && nchw_algos.empty()) {  // the rule's own path is cuDNN
          throw std::runtime_error(std::string("hisvid::cuda::") + op + ": no cuDNN algorithm for " +
                                   describe(k.g) + ": " + missing);
        }
      }
      with_trial([&](const Args& trial) {
        std::vector<Extra> extras;
        if constexpr (!std::is_same_v<Lanes, std::nullptr_t>) {
          if (tile_use(k.g, pass) < kTimedBelowTileUse)
            extras.push_back({Path::Lanes, [&] { lanes(trial, stream); }});
        }
        if constexpr (!std::is_same_v<Const, std::nullptr_t>) {
          if (const_applies(k.g, pass)) extras.push_back({Path::Const, [&] { konst(trial, stream); }});
        }
        time_paths(
            op, k.g, pass, algos, nchw_algos, [&] { direct(trial, stream); },
            [&] { direct_v2(trial, stream); },
            [&](const Choice<Algo>& a) { cudnn(trial, ctx, *plan, a, stream); },
            [&](const Choice<Algo>& a) { cudnn(trial, ctx, *nchw_plan, a, stream); }, extras, stream, missing,
            timed.path, timed.algo);
      });
    }
    // Inside a capture nothing is timed: the geometry keeps the rule's path from then on, so that
    // the direct calls after it compute what the graph's replays do.
    if (timed.path == Path::Undecided) timed.path = rule_path(k.g, pass);
    chosen = timed;
  }
  if constexpr (!std::is_same_v<Lanes, std::nullptr_t>) {
    if (chosen.path == Path::Lanes) return lanes(k, stream);
  }
  if constexpr (!std::is_same_v<Const, std::nullptr_t>) {
    if (chosen.path == Path::Const) return konst(k, stream);
  }
  if (chosen.path == Path::Direct) return direct(k, stream);
  if (chosen.path == Path::DirectV2) return direct_v2(k, stream);
  const ConvPlan& plan =
      plan_for(ctx, k.g, pass, chosen.path == Path::CudnnNchw ? Layout::Nchw : Layout::Nhwc);
  cudnn(k, ctx, plan, chosen.algo.found ? chosen.algo : plan.*rule_algo, stream);
}

// One pass of a cudnn row: cuDNN in `layout` with the plan's heuristic-first algorithm (its
// member `algo`).
template <typename Args, typename Algo, typename Cudnn>
void run_cudnn(const Args& k, cudaStream_t stream, const char* op, Direction pass,
               Choice<Algo> ConvPlan::*algo, const Cudnn& cudnn, Layout layout = Layout::Nhwc) {
  validate(k.g, op);
  if (k.g.N == 0) return;
  Context& ctx = context_for_stream(stream, op);
  const ConvPlan& plan = plan_for(ctx, k.g, pass, layout);
  cudnn(k, ctx, plan, plan.*algo, stream);
}

// One pass of a default row: the path chosen without timing where there is one, else the
// pass's timed row (Lanes and Const are only ever chosen by timing).
template <typename Args, typename Direct, typename CudnnRow, typename CudnnNchwRow, typename TimedRow>
void run_default(const Args& k, cudaStream_t stream, Direction pass, const Direct& direct,
                 const CudnnRow& cudnn, const CudnnNchwRow& cudnn_nchw, const TimedRow& timed) {
  switch (untimed_path(k.g, pass)) {
    case Path::Direct:
      return direct(k, stream);
    case Path::Cudnn:
      return cudnn(k, stream);
    case Path::CudnnNchw:
      return cudnn_nchw(k, stream);
    case Path::Undecided:
    case Path::Lanes:
    case Path::DirectV2:
    case Path::Const:
      return timed(k, stream);
  }
}

}  // namespace

void conv2d_forward_cudnn(const Conv2dForward<float>& k, cudaStream_t stream) {
  run_cudnn(k, stream, "conv2d_forward", Direction::Forward, &ConvPlan::forward, forward_cudnn);
}

void conv2d_backward_data_cudnn(const Conv2dBackwardData<float>& k, cudaStream_t stream) {
  run_cudnn(k, stream, "conv2d_backward_data", Direction::BackwardData, &ConvPlan::backward_data,
            backward_data_cudnn);
}

void conv2d_backward_filter_cudnn(const Conv2dBackwardFilter<float>& k, cudaStream_t stream) {
  run_cudnn(k, stream, "conv2d_backward_filter", Direction::BackwardFilter, &ConvPlan::backward_filter,
            backward_filter_cudnn);
}

void conv2d_forward_cudnn_nchw(const Conv2dForward<float>& k, cudaStream_t stream) {
  run_cudnn(k, stream, "conv2d_forward", Direction::Forward, &ConvPlan::forward, forward_cudnn, Layout::Nchw);
}

void conv2d_backward_data_cudnn_nchw(const Conv2dBackwardData<float>& k, cudaStream_t stream) {
  run_cudnn(k, stream, "conv2d_backward_data", Direction::BackwardData, &ConvPlan::backward_data,
            backward_data_cudnn, Layout::Nchw);
}

void conv2d_backward_filter_cudnn_nchw(const Conv2dBackwardFilter<float>& k, cudaStream_t stream) {
  run_cudnn(k, stream, "conv2d_backward_filter", Direction::BackwardFilter, &ConvPlan::backward_filter,
            backward_filter_cudnn, Layout::Nchw);
}

void conv2d_forward_timed(const Conv2dForward<float>& k, cudaStream_t stream) {
  run_timed(k, stream, "conv2d_forward", Direction::Forward, &ConvPlan::forward, forward_candidates,
            direct_forward, conv2d_forward_direct_v2, forward_cudnn, conv2d_forward_lanes,
            conv2d_forward_const, [&](const auto& time_with) { time_with(k); });
}

void conv2d_backward_data_timed(const Conv2dBackwardData<float>& k, cudaStream_t stream) {
  run_timed(k, stream, "conv2d_backward_data", Direction::BackwardData, &ConvPlan::backward_data,
            backward_data_candidates, direct_backward_data, conv2d_backward_data_direct_v2,
            backward_data_cudnn, conv2d_backward_data_lanes, conv2d_backward_data_const,
            [&](const auto& time_with) { time_with(k); });
}

void conv2d_backward_filter_timed(const Conv2dBackwardFilter<float>& k, cudaStream_t stream) {
  // The timing runs accumulate into scratch, not into the call's gradients. Without memory for
  // it nothing is timed: the geometry keeps the rule's path, and the record says why.
  const auto with_scratch = [&](const auto& time_with) {
    const size_t weights = size_t(k.g.KH) * k.g.KW * k.g.group_channels() * k.g.F;
    std::string failed;
    const std::unique_ptr<TimingScratch> scratch =
        try_timing_scratch(sizeof(float) * (weights + k.g.F), nullptr, stream, failed);
    if (!scratch) {
      record_timed_choice({"conv2d_backward_filter", describe(k.g), "the rule's path, untimed", {}, failed});
      return;
    }
    Conv2dBackwardFilter<float> trial = k;
    trial.dweight = scratch->floats();
    trial.dbias = k.dbias != nullptr ? trial.dweight + weights : nullptr;
    time_with(trial);
  };
  run_timed(k, stream, "conv2d_backward_filter", Direction::BackwardFilter, &ConvPlan::backward_filter,
            backward_filter_candidates, direct_backward_filter, conv2d_backward_filter_direct_v2,
            backward_filter_cudnn, nullptr, nullptr, with_scratch);
}

void conv2d_forward(const Conv2dForward<float>& k, cudaStream_t stream) {
  run_default(k, stream, Direction::Forward, direct_forward, conv2d_forward_cudnn, conv2d_forward_cudnn_nchw,
              conv2d_forward_timed);
}

void conv2d_backward_data(const Conv2dBackwardData<float>& k, cudaStream_t stream) {
  run_default(k, stream, Direction::BackwardData, direct_backward_data, conv2d_backward_data_cudnn,
              conv2d_backward_data_cudnn_nchw, conv2d_backward_data_timed);
}

void conv2d_backward_filter(const Conv2dBackwardFilter<float>& k, cudaStream_t stream) {
  run_default(k, stream, Direction::BackwardFilter, direct_backward_filter, conv2d_backward_filter_cudnn,
              conv2d_backward_filter_cudnn_nchw, conv2d_backward_filter_timed);
}

}  // namespace hisvid::cuda
