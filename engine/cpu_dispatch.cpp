// The CPU rows of the dispatch table: every entry is the hisvid::cpu reference kernel.
#include "engine/dispatch.h"
#include "kernels/batchnorm.h"
#include "kernels/conv2d.h"
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

template <typename T>
KernelTable<T> make_cpu_table() {
  KernelTable<T> k;
  k.fill = cpu::fill<T>;
  k.add = cpu::add<T>;
  k.sub = cpu::sub<T>;
  k.mul = cpu::mul<T>;
  k.scale = cpu::scale<T>;
  k.axpy = cpu::axpy<T>;
  k.bias_add_forward = cpu::bias_add_forward<T>;
  k.bias_add_backward = cpu::bias_add_backward<T>;
  k.activation_forward = cpu::activation_forward<T>;
  k.activation_backward = cpu::activation_backward<T>;
  k.matmul = cpu::matmul<T>;
  k.conv2d_forward = cpu::conv2d_forward<T>;
  k.conv2d_backward_data = cpu::conv2d_backward_data<T>;
  k.conv2d_backward_filter = cpu::conv2d_backward_filter<T>;
  k.maxpool2d_forward = cpu::maxpool2d_forward<T>;
  k.maxpool2d_backward = cpu::maxpool2d_backward<T>;
  k.global_avgpool_forward = cpu::global_avgpool_forward<T>;
  k.global_avgpool_backward = cpu::global_avgpool_backward<T>;
  k.dropout_forward = cpu::dropout_forward<T>;
  k.dropout_backward = cpu::dropout_backward<T>;
  k.dropout_mask = cpu::dropout_mask<T>;
  k.spatial_dropout_forward = cpu::spatial_dropout_forward<T>;
  k.spatial_dropout_backward = cpu::spatial_dropout_backward<T>;
  k.lstm_cell_forward = cpu::lstm_cell_forward<T>;
  k.lstm_cell_backward = cpu::lstm_cell_backward<T>;
  k.batchnorm_forward_train = cpu::batchnorm_forward_train<T>;
  k.batchnorm_forward_infer = cpu::batchnorm_forward_infer<T>;
  k.batchnorm_backward = cpu::batchnorm_backward<T>;
  k.batchnorm_update_moving = cpu::batchnorm_update_moving<T>;
  k.softmax_forward = cpu::softmax_forward<T>;
  k.softmax_backward = cpu::softmax_backward<T>;
  k.softmax_xent_forward = cpu::softmax_xent_forward<T>;
  k.softmax_xent_backward = cpu::softmax_xent_backward<T>;
  k.accuracy_count = cpu::accuracy_count<T>;
  k.sigmoid_xent_forward = cpu::sigmoid_xent_forward<T>;
  k.sigmoid_xent_backward = cpu::sigmoid_xent_backward<T>;
  k.binary_accuracy_count = cpu::binary_accuracy_count<T>;
  k.sum_all = cpu::sum_all<T>;
  k.copy_block = cpu::copy_block<T>;
  k.adam_update = cpu::adam_update<T>;
  k.rmsprop_update = cpu::rmsprop_update<T>;
  k.sgd_update = cpu::sgd_update<T>;
  return k;
}

}  // namespace

template <>
const KernelTable<float>& kernel_table<float>(DeviceType device) {
  static const KernelTable<float> cpu_table = make_cpu_table<float>();
  return device == DeviceType::CPU ? cpu_table : cuda_kernel_table();
}

template <>
const KernelTable<double>& kernel_table<double>(DeviceType device) {
  static const KernelTable<double> cpu_table = make_cpu_table<double>();
  static const KernelTable<double> none;  // no backend but the CPU runs float64
  return device == DeviceType::CPU ? cpu_table : none;
}

}  // namespace hisvid
