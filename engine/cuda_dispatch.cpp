// The CUDA float row of the dispatch table: every entry an adapter that calls the
// hisvid::cuda kernel on the stream of the calling thread's current device, whose context
// draws its workspace from the engine's caching allocator.
#include <array>
#include <mutex>

#include "engine/cuda_device.h"
#include "engine/dispatch.h"
#include "kernels/batchnorm.h"
#include "kernels/conv2d.h"
#include "kernels/cuda_context.h"
#include "kernels/dropout.h"
#include "kernels/elementwise.h"
#include "kernels/lstm.h"
#include "kernels/matmul.h"
#include "kernels/optim.h"
#include "kernels/pool.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"

namespace hisvid {

namespace {

constexpr int kMaxDevices = 64;

// The context stream of the current device, after making sure the device's allocator exists
// (creating it installs the allocator as the context's workspace provider).
cudaStream_t stream() {
  static std::array<std::once_flag, kMaxDevices> allocator_ready;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  if (device < 0 || device >= kMaxDevices)
    fail("CUDA device {} is beyond the {} hisvid supports", device, kMaxDevices);
  std::call_once(allocator_ready[static_cast<size_t>(device)],
                 [device] { cuda_allocator(Device::cuda(device)); });
  return cuda::context(device).stream();
}

// A device int64 from the caching allocator, returned when the scope ends.
class DeviceCount {
 public:
  explicit DeviceCount(Allocator& allocator)
      : allocator_(allocator), ptr_(static_cast<int64_t*>(allocator.allocate(sizeof(int64_t)))) {}
  ~DeviceCount() { allocator_.deallocate(ptr_, sizeof(int64_t)); }
  DeviceCount(const DeviceCount&) = delete;
  DeviceCount& operator=(const DeviceCount&) = delete;
  int64_t* get() const { return ptr_; }

 private:
  Allocator& allocator_;
  int64_t* ptr_;
};

// The table's contract: the count lands in host memory. The kernel writes a device scalar,
// copied back (which synchronises the stream).
template <void (*Count)(int64_t*, const float*, const float*, int64_t, int64_t, cudaStream_t)>
void count_to_host(int64_t* correct, const float* scores, const float* targets, int64_t N, int64_t K) {
  const cudaStream_t s = stream();
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  const DeviceCount count(cuda_allocator(Device::cuda(device)));
  Count(count.get(), scores, targets, N, K, s);
  CUDA_CHECK(cudaMemcpyAsync(correct, count.get(), sizeof(int64_t), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

KernelTable<float> make_cuda_table() {
  KernelTable<float> k;
  // elementwise.h
  k.fill = [](float* out, float value, int64_t n) { cuda::fill(out, value, n, stream()); };
  k.add = [](float* out, const float* a, const float* b, int64_t n) { cuda::add(out, a, b, n, stream()); };
  k.sub = [](float* out, const float* a, const float* b, int64_t n) { cuda::sub(out, a, b, n, stream()); };
  k.mul = [](float* out, const float* a, const float* b, int64_t n) { cuda::mul(out, a, b, n, stream()); };
  k.scale = [](float* out, const float* a, float alpha, int64_t n) {
    cuda::scale(out, a, alpha, n, stream());
  };
  k.axpy = [](float* y, float alpha, const float* x, int64_t n) { cuda::axpy(y, alpha, x, n, stream()); };
  k.bias_add_forward = [](float* out, const float* inp, const float* bias, int64_t M, int64_t C) {
    cuda::bias_add_forward(out, inp, bias, M, C, stream());
  };
  k.bias_add_backward = [](float* dbias, const float* dout, int64_t M, int64_t C) {
    cuda::bias_add_backward(dbias, dout, M, C, stream());
  };
  k.activation_forward = [](float* out, const float* inp, int64_t n, Activation act) {
    cuda::activation_forward(out, inp, n, act, stream());
  };
  k.activation_backward = [](float* dinp, const float* dout, const float* out, int64_t n, Activation act) {
    cuda::activation_backward(dinp, dout, out, n, act, stream());
  };
  // matmul.h
  k.matmul = [](float* out, const float* a, const float* b, int64_t M, int64_t P, int64_t K, bool trans_a,
                bool trans_b, bool accumulate) {
    cuda::matmul(out, a, b, M, P, K, trans_a, trans_b, accumulate, stream());
  };
  // conv2d.h
  k.conv2d_forward = [](float* out, const float* inp, const float* weight, const float* bias,
                        const Conv2dGeometry& g) {
    cuda::conv2d_forward(out, inp, weight, bias, g, stream());
  };
  k.conv2d_backward_data = [](float* dinp, const float* dout, const float* weight, const Conv2dGeometry& g) {
    cuda::conv2d_backward_data(dinp, dout, weight, g, stream());
  };
  k.conv2d_backward_filter = [](float* dweight, float* dbias, const float* dout, const float* inp,
                                const Conv2dGeometry& g) {
    cuda::conv2d_backward_filter(dweight, dbias, dout, inp, g, stream());
  };
  // pool.h
  k.maxpool2d_forward = [](float* out, int32_t* argmax, const float* inp, const Pool2dGeometry& g) {
    cuda::maxpool2d_forward(out, argmax, inp, g, stream());
  };
  k.maxpool2d_backward = [](float* dinp, const float* dout, const int32_t* argmax, const Pool2dGeometry& g) {
    cuda::maxpool2d_backward(dinp, dout, argmax, g, stream());
  };
  k.global_avgpool_forward = [](float* out, const float* inp, int64_t N, int64_t S, int64_t C) {
    cuda::global_avgpool_forward(out, inp, N, S, C, stream());
  };
  k.global_avgpool_backward = [](float* dinp, const float* dout, int64_t N, int64_t S, int64_t C) {
    cuda::global_avgpool_backward(dinp, dout, N, S, C, stream());
  };
  // dropout.h
  k.dropout_forward = [](float* out, const float* inp, int64_t n, float rate, uint64_t seed,
                         uint64_t offset) {
    cuda::dropout_forward(out, inp, n, rate, seed, offset, stream());
  };
  k.dropout_backward = [](float* dinp, const float* dout, int64_t n, float rate, uint64_t seed,
                          uint64_t offset) {
    cuda::dropout_backward(dinp, dout, n, rate, seed, offset, stream());
  };
  k.dropout_mask = [](float* mask, int64_t n, float rate, uint64_t seed, uint64_t offset) {
    cuda::dropout_mask(mask, n, rate, seed, offset, stream());
  };
  k.spatial_dropout_forward = [](float* out, const float* inp, int64_t N, int64_t S, int64_t C, float rate,
                                 uint64_t seed, uint64_t offset) {
    cuda::spatial_dropout_forward(out, inp, N, S, C, rate, seed, offset, stream());
  };
  k.spatial_dropout_backward = [](float* dinp, const float* dout, int64_t N, int64_t S, int64_t C, float rate,
                                  uint64_t seed, uint64_t offset) {
    cuda::spatial_dropout_backward(dinp, dout, N, S, C, rate, seed, offset, stream());
  };
  // lstm.h
  k.lstm_cell_forward = [](float* h, float* c, float* gates, const float* z, const float* c_prev, int64_t M,
                           int64_t U, Activation act, Activation rec_act) {
    cuda::lstm_cell_forward(h, c, gates, z, c_prev, M, U, act, rec_act, stream());
  };
  k.lstm_cell_backward = [](float* dz, float* dc_prev, const float* dh, const float* dc, const float* gates,
                            const float* c, const float* c_prev, int64_t M, int64_t U, Activation act,
                            Activation rec_act) {
    cuda::lstm_cell_backward(dz, dc_prev, dh, dc, gates, c, c_prev, M, U, act, rec_act, stream());
  };
  // batchnorm.h
  k.batchnorm_forward_train = [](float* out, float* mean, float* var, float* invstd, const float* inp,
                                 const float* gamma, const float* beta, int64_t M, int64_t C, float eps) {
    cuda::batchnorm_forward_train(out, mean, var, invstd, inp, gamma, beta, M, C, eps, stream());
  };
  k.batchnorm_forward_infer = [](float* out, const float* inp, const float* gamma, const float* beta,
                                 const float* moving_mean, const float* moving_var, int64_t M, int64_t C,
                                 float eps) {
    cuda::batchnorm_forward_infer(out, inp, gamma, beta, moving_mean, moving_var, M, C, eps, stream());
  };
  k.batchnorm_backward = [](float* dinp, float* dgamma, float* dbeta, const float* dout, const float* inp,
                            const float* mean, const float* invstd, const float* gamma, int64_t M,
                            int64_t C) {
    cuda::batchnorm_backward(dinp, dgamma, dbeta, dout, inp, mean, invstd, gamma, M, C, stream());
  };
  k.batchnorm_update_moving = [](float* moving_mean, float* moving_var, const float* mean, const float* var,
                                 int64_t M, int64_t C, float momentum) {
    cuda::batchnorm_update_moving(moving_mean, moving_var, mean, var, M, C, momentum, stream());
  };
  // softmax.h
  k.softmax_forward = [](float* probs, const float* logits, int64_t N, int64_t K) {
    cuda::softmax_forward(probs, logits, N, K, stream());
  };
  k.softmax_backward = [](float* dlogits, const float* dprobs, const float* probs, int64_t N, int64_t K) {
    cuda::softmax_backward(dlogits, dprobs, probs, N, K, stream());
  };
  k.softmax_xent_forward = [](float* losses, float* probs, const float* logits, const float* targets,
                              int64_t N, int64_t K) {
    cuda::softmax_xent_forward(losses, probs, logits, targets, N, K, stream());
  };
  k.softmax_xent_backward = [](float* dlogits, const float* dlosses, const float* probs, const float* targets,
                               int64_t N, int64_t K) {
    cuda::softmax_xent_backward(dlogits, dlosses, probs, targets, N, K, stream());
  };
  k.accuracy_count = count_to_host<cuda::accuracy_count>;
  k.sigmoid_xent_forward = [](float* losses, float* probs, const float* logits, const float* targets,
                              int64_t N, int64_t K) {
    cuda::sigmoid_xent_forward(losses, probs, logits, targets, N, K, stream());
  };
  k.sigmoid_xent_backward = [](float* dlogits, const float* dlosses, const float* probs, const float* targets,
                               int64_t N, int64_t K) {
    cuda::sigmoid_xent_backward(dlogits, dlosses, probs, targets, N, K, stream());
  };
  k.binary_accuracy_count = count_to_host<cuda::binary_accuracy_count>;
  // reduce.h
  k.sum_all = [](float* out, const float* inp, int64_t n) { cuda::sum_all(out, inp, n, stream()); };
  k.copy_block = [](float* dst, int64_t dst_dim, int64_t dst_start, const float* src, int64_t src_dim,
                    int64_t src_start, int64_t outer, int64_t len, int64_t inner, bool accumulate) {
    cuda::copy_block(dst, dst_dim, dst_start, src, src_dim, src_start, outer, len, inner, accumulate,
                     stream());
  };
  // optim.h
  k.adam_update = [](float* w, float* m, float* v, const float* g, int64_t n, float alpha, float beta1,
                     float beta2,
                     float eps) { cuda::adam_update(w, m, v, g, n, alpha, beta1, beta2, eps, stream()); };
  k.rmsprop_update = [](float* w, float* v, const float* g, int64_t n, float lr, float rho, float eps,
                        RmspropEpsilon form) {
    cuda::rmsprop_update(w, v, g, n, lr, rho, eps, form, stream());
  };
  k.sgd_update = [](float* w, const float* g, int64_t n, float lr) {
    cuda::sgd_update(w, g, n, lr, stream());
  };
  return k;
}

}  // namespace

const KernelTable<float>& cuda_kernel_table() {
  static const KernelTable<float> table = make_cuda_table();
  return table;
}

}  // namespace hisvid
