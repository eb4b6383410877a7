#include "engine/autograd.h"

#include "engine/dispatch.h"
#include "engine/error.h"
#include "kernels/elementwise.h"

namespace hisvid {

namespace {
thread_local bool t_grad_enabled = true;
thread_local int t_label = -1;
}  // namespace

TapeLabel::TapeLabel(int label) : previous_(t_label) { t_label = label; }
TapeLabel::~TapeLabel() { t_label = previous_; }

Tape& Tape::current() {
  thread_local Tape tape;
  return tape;
}

bool grad_enabled() { return t_grad_enabled; }

NoGradGuard::NoGradGuard() : previous_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = previous_; }

bool should_record(const std::vector<Tensor>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs) {
    if (t.requires_grad()) return true;
  }
  return false;
}

bool should_record(std::initializer_list<Tensor> inputs) {
  return should_record(std::vector<Tensor>(inputs));
}

void Tape::record(const char* op, std::vector<Tensor> inputs, std::vector<Tensor> outputs,
                  BackwardFn fn) {
  for (Tensor& out : outputs) {
    out.impl()->requires_grad = true;
    out.impl()->has_grad_fn = true;
  }
  nodes_.push_back(Node{op, std::move(inputs), std::move(outputs), std::move(fn), t_label});
}

void record(const char* op, std::vector<Tensor> inputs, std::vector<Tensor> outputs, BackwardFn fn) {
  Tape::current().record(op, std::move(inputs), std::move(outputs), std::move(fn));
}

void accumulate_grad(const Tensor& t, Tensor g, const char* op) {
  if (g.shape() != t.shape() || g.dtype() != t.dtype() || g.device() != t.device()) {
    fail("{} backward: gradient {} does not match its tensor {}", op, g.describe(), t.describe());
  }
  TensorImpl* impl = t.impl();
  if (!impl->grad) {
    const bool exclusive = g.impl_ptr().use_count() == 1 && g.impl()->storage.use_count() == 1;
    Tensor owned = exclusive ? g : g.clone();
    owned.impl()->requires_grad = false;
    owned.impl()->has_grad_fn = false;
    impl->grad = owned.impl_ptr();
    return;
  }
  Tensor acc(impl->grad);
  with_dtype(acc, [&](auto tag) {
    using T = decltype(tag);
    Axpy<T> k;
    k.y = acc.data<T>(), k.x = g.data<T>(), k.alpha = T(1), k.n = acc.numel();
    run_kernel(k, acc.device());
  });
}

void Tape::backward(const Tensor& root, const Tensor& grad) {
  if (!root.requires_grad()) {
    clear();
    fail("backward: {} does not require grad (no tensor that requires grad reached it)",
         root.describe());
  }
  Tensor seed = grad;
  if (!seed.defined()) {
    if (root.numel() != 1) {
      clear();
      fail("backward: {} is not a scalar; pass its gradient explicitly", root.describe());
    }
    seed = Tensor::full(root.shape(), 1.0, root.dtype(), root.device());
  }
  accumulate_grad(root, seed, "backward");

  NoGradGuard no_grad;  // backward closures run ops that must not be recorded
  std::vector<Node> nodes = std::move(nodes_);
  nodes_.clear();
  for (auto node = nodes.rbegin(); node != nodes.rend(); ++node) {
    std::vector<Tensor> grad_outputs;
    grad_outputs.reserve(node->outputs.size());
    bool any = false;
    for (const Tensor& out : node->outputs) {
      grad_outputs.emplace_back(out.impl()->grad);
      any = any || out.impl()->grad != nullptr;
    }
    if (!any) continue;
    if (profiler_ != nullptr) profiler_->before(*node);
    std::vector<Tensor> grad_inputs = node->backward(grad_outputs);
    if (profiler_ != nullptr) profiler_->after(*node);
    if (grad_inputs.size() != node->inputs.size()) {
      fail("{} backward returned {} gradients for {} inputs", node->op, grad_inputs.size(),
           node->inputs.size());
    }
    grad_outputs.clear();
    for (const Tensor& out : node->outputs) out.impl()->grad.reset();
    for (size_t i = 0; i < grad_inputs.size(); ++i) {
      if (!grad_inputs[i].defined() || !node->inputs[i].requires_grad()) continue;
      Tensor g = std::move(grad_inputs[i]);
      accumulate_grad(node->inputs[i], std::move(g), node->op);
    }
    // Free this node's saved tensors now rather than at the end of the walk.
    node->backward = nullptr;
    node->outputs.clear();
  }
}

}  // namespace hisvid
