// engine/autograd.h — reverse-mode autodiff on a tape.
//
// Every op whose inputs require gradients (while grad mode is on) appends a Node to the
// thread's tape: its inputs, its outputs and a backward closure that maps the gradients of
// the outputs to gradients of the inputs. backward(loss) seeds d loss = 1 and walks the tape
// in reverse; gradients reaching a tensor from several nodes are summed, which is how a
// weight shared over timesteps (LSTM) collects its gradient. Gradients of intermediate
// tensors are released as soon as their node has run; leaves (parameters, inputs) keep
// theirs in Tensor::grad() until zero_grad(). The tape is cleared by backward().
#pragma once

#include <functional>
#include <vector>

#include "engine/tensor.h"

namespace hisvid {

// grad_outputs[i] is the gradient of outputs[i], undefined where none reached it (at least
// one is defined). Returns one gradient per input, undefined where the input needs none.
using BackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs)>;

struct Node {
  const char* op = "";
  std::vector<Tensor> inputs;
  std::vector<Tensor> outputs;
  BackwardFn backward;
  int label = -1;  // the TapeLabel in force when the node was recorded (a layer index)
};

// Observes each node's backward, e.g. to time it per layer (hisvid bench --per-layer).
class BackwardProfiler {
 public:
  virtual ~BackwardProfiler() = default;
  virtual void before(const Node& node) = 0;
  virtual void after(const Node& node) = 0;
};

class Tape {
 public:
  // The tape of the calling thread.
  static Tape& current();

  void record(const char* op, std::vector<Tensor> inputs, std::vector<Tensor> outputs, BackwardFn fn);
  size_t size() const { return nodes_.size(); }
  void clear() { nodes_.clear(); }
  // Runs backward from root; grad is d(objective)/d(root), ones when undefined (root must then
  // hold one element). Clears the tape.
  void backward(const Tensor& root, const Tensor& grad = Tensor());
  // Observes every node's backward until reset with nullptr.
  void set_profiler(BackwardProfiler* profiler) { profiler_ = profiler; }

 private:
  std::vector<Node> nodes_;
  BackwardProfiler* profiler_ = nullptr;
};

// Within its scope, recorded nodes carry `label` (nested scopes: the innermost wins).
class TapeLabel {
 public:
  explicit TapeLabel(int label);
  ~TapeLabel();
  TapeLabel(const TapeLabel&) = delete;
  TapeLabel& operator=(const TapeLabel&) = delete;

 private:
  int previous_;
};

bool grad_enabled();

// Within its scope no op is recorded (evaluation, optimizer updates).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// True when an op over these inputs must be recorded.
bool should_record(std::initializer_list<Tensor> inputs);
bool should_record(const std::vector<Tensor>& inputs);

// Records on the current tape and marks the outputs as requiring grad.
void record(const char* op, std::vector<Tensor> inputs, std::vector<Tensor> outputs, BackwardFn fn);

inline void backward(const Tensor& loss) { Tape::current().backward(loss); }

// t.grad += g (adopting g when t has no gradient yet and nothing else shares g's storage).
void accumulate_grad(const Tensor& t, Tensor g, const char* op);

}  // namespace hisvid
