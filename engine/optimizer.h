// engine/optimizer.h — Adam, RMSprop and SGD with Keras's defaults and update formulas
// (kernels/optim.h). An optimizer owns its slot variables (Adam: m, v; RMSprop: rms) for
// the parameter list it is stepped with; they, the iteration count and the hyper-parameters
// are what a checkpoint saves to resume training exactly.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "kernels/optim.h"

namespace hisvid {

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // Updates every parameter that holds a gradient, then counts one iteration. The parameter
  // list must be the same (same order) at every step. With step_sums (ops::step_sums, on the
  // parameters' device), the update kernels skip their work once a step's loss was not finite:
  // the device decides, the host never reads the loss (the iteration is counted all the same;
  // the trainer sets the count back when it finds the failed step).
  void step(const std::vector<Tensor>& params, const Tensor& step_sums = {});

  // Keras class name: "Adam", "RMSprop", "SGD".
  virtual std::string name() const = 0;
  // Keras slot names, e.g. {"m", "v"}.
  virtual std::vector<std::string> slot_names() const = 0;
  // Hyper-parameters by Keras name (learning_rate, beta_1, ...).
  virtual std::map<std::string, double> hyper_parameters() const = 0;

  double learning_rate() const { return learning_rate_; }
  void set_learning_rate(double lr) { learning_rate_ = lr; }
  int64_t iterations() const { return iterations_; }
  void set_iterations(int64_t iterations) { iterations_ = iterations; }

  // For a step captured into a CUDA graph: the update kernels read the step scalar (Adam's
  // alpha, the learning rate) from `at`, one value of the parameters' type on their device,
  // instead of taking it by value; stage_scalar() writes there the value of the coming step
  // (iterations() + 1), before each run of the step. An undefined tensor: by value again.
  void read_scalar_from(Tensor at) { scalar_at_ = std::move(at); }
  void stage_scalar();

  // Slot tensors of parameter i (created as zeros at the first step, or restored).
  const std::vector<std::vector<Tensor>>& slots() const { return slots_; }
  // Replaces all slots (restoring a checkpoint); shapes are checked at the next step.
  void set_slots(std::vector<std::vector<Tensor>> slots) { slots_ = std::move(slots); }

 protected:
  explicit Optimizer(double learning_rate) : learning_rate_(learning_rate) {}
  // How the update kernels (kernels/optim.h MultiTensorUpdate) update: the rule and its
  // step-independent hyper-parameters, as doubles (cast to the parameters' type).
  struct Rule {
    UpdateRule rule = UpdateRule::Sgd;
    double beta_1 = 0.0, beta_2 = 0.0, rho = 0.0, epsilon = 0.0;
    RmspropEpsilon form = RmspropEpsilon::OutsideSqrt;
  };
  virtual Rule update_rule() const = 0;
  // The step scalar of step `step` (Adam's alpha, the learning rate) computed in dtype's
  // precision, as the kernels take it.
  virtual double step_scalar(int64_t step, DType dtype) const {
    (void)step, (void)dtype;
    return learning_rate();
  }

 private:
  // Launches the update of parameters `which` (one dtype, one device, at most
  // MultiTensorUpdate::kMaxTensors of them) for step `step`.
  void update(const std::vector<Tensor>& params, const std::vector<size_t>& which, int64_t step);

  const double* halt_ = nullptr;
  Tensor scalar_at_;
  double learning_rate_;
  int64_t iterations_ = 0;
  std::vector<std::vector<Tensor>> slots_;
};

class Adam final : public Optimizer {
 public:
  explicit Adam(double learning_rate = 1e-3, double beta_1 = 0.9, double beta_2 = 0.999,
                double epsilon = 1e-7);
  std::string name() const override { return "Adam"; }
  std::vector<std::string> slot_names() const override { return {"m", "v"}; }
  std::map<std::string, double> hyper_parameters() const override;

 protected:
  Rule update_rule() const override;
  double step_scalar(int64_t step, DType dtype) const override;

 private:
  double beta_1_, beta_2_, epsilon_;
};

class RMSprop final : public Optimizer {
 public:
  explicit RMSprop(double learning_rate = 1e-3, double rho = 0.9, double epsilon = 1e-7,
                   RmspropEpsilon form = RmspropEpsilon::OutsideSqrt);
  std::string name() const override { return "RMSprop"; }
  std::vector<std::string> slot_names() const override { return {"rms"}; }
  std::map<std::string, double> hyper_parameters() const override;

 protected:
  Rule update_rule() const override;

 private:
  double rho_, epsilon_;
  RmspropEpsilon form_;
};

class SGD final : public Optimizer {
 public:
  explicit SGD(double learning_rate = 1e-2) : Optimizer(learning_rate) {}
  std::string name() const override { return "SGD"; }
  std::vector<std::string> slot_names() const override { return {}; }
  std::map<std::string, double> hyper_parameters() const override;

 protected:
  Rule update_rule() const override;
};

// Builds an optimizer from its Keras name ("adam", "rmsprop", "sgd", any case) and
// hyper-parameters; missing ones take Keras defaults, unknown ones are an error. RMSprop's
// "epsilon_inside_sqrt" (0 or 1) selects the Keras >= 2.11 form.
std::unique_ptr<Optimizer> make_optimizer(const std::string& name,
                                          const std::map<std::string, double>& hyper = {});

// Drops the gradients of all parameters.
void zero_grad(const std::vector<Tensor>& params);

}  // namespace hisvid
