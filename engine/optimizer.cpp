#include "engine/optimizer.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/error.h"
#include "kernels/optim.h"
#include "kernels/softmax.h"

namespace hisvid {

void Optimizer::step(const std::vector<Tensor>& params, const Tensor& step_sums) {
  NoGradGuard no_grad;
  halt_ = nullptr;
  if (step_sums.defined()) {
    if (step_sums.dtype() != DType::Float64 || step_sums.numel() != kStepSums) {
      fail("{}: step sums {} are not those of ops::step_sums", name(), step_sums.describe());
    }
    for (const Tensor& p : params) {
      if (p.device() != step_sums.device()) {
        fail("{}: step sums on {}, a parameter on {}", name(), step_sums.device().str(), p.device().str());
      }
    }
    halt_ = step_sums.data<double>() + kStepFailed;
  }
  const size_t n_slots = slot_names().size();
  if (slots_.empty()) {
    slots_.resize(params.size());
    for (size_t i = 0; i < params.size(); ++i) {
      for (size_t s = 0; s < n_slots; ++s) {
        slots_[i].push_back(Tensor::zeros(params[i].shape(), params[i].dtype(), params[i].device()));
      }
    }
  }
  if (slots_.size() != params.size()) {
    fail("{}: stepped with {} parameters but holds slots for {}", name(), params.size(), slots_.size());
  }
  for (size_t i = 0; i < params.size(); ++i) {
    if (slots_[i].size() != n_slots)
      fail("{}: parameter {} has {} slots, expected {}", name(), i, slots_[i].size(), n_slots);
    for (size_t s = 0; s < n_slots; ++s) {
      Tensor& slot = slots_[i][s];
      if (slot.shape() != params[i].shape() || slot.dtype() != params[i].dtype()) {
        fail("{}: slot '{}' of parameter {} is {}, the parameter is {}", name(), slot_names()[s], i,
             slot.describe(), params[i].describe());
      }
      if (slot.device() != params[i].device()) slot = slot.to(params[i].device());
    }
  }
  // The parameters with a gradient, in groups of one dtype and device: one call each (one
  // launch on CUDA for up to MultiTensorUpdate::kMaxTensors parameters).
  const int64_t step_number = iterations_ + 1;
  std::vector<size_t> group;
  const auto flush = [&] {
    if (!group.empty()) update(params, group, step_number);
    group.clear();
  };
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i].grad().defined()) continue;
    if (!group.empty()) {
      const Tensor& first = params[group.front()];
      if (first.dtype() != params[i].dtype() || first.device() != params[i].device() ||
          group.size() == static_cast<size_t>(MultiTensorUpdate<float>::kMaxTensors)) {
        flush();
      }
    }
    group.push_back(i);
  }
  flush();
  iterations_ = step_number;
}

void Optimizer::update(const std::vector<Tensor>& params, const std::vector<size_t>& which, int64_t step) {
  const Rule r = update_rule();
  const Tensor& first = params[which.front()];
  with_dtype(first, [&](auto tag) {
    using T = decltype(tag);
    MultiTensorUpdate<T> k;
    k.rule = r.rule, k.count = static_cast<int>(which.size());
    for (size_t j = 0; j < which.size(); ++j) {
      const size_t i = which[j];
      k.w[j] = params[i].data<T>(), k.g[j] = params[i].grad().template data<T>(), k.n[j] = params[i].numel();
      if (r.rule == UpdateRule::Adam) k.m[j] = slots_[i][0].data<T>(), k.v[j] = slots_[i][1].data<T>();
      if (r.rule == UpdateRule::Rmsprop) k.v[j] = slots_[i][0].data<T>();
    }
    // Computed in the parameters' precision, as TensorFlow does for float32 variables.
    k.scalar = static_cast<T>(step_scalar(step, first.dtype()));
    k.beta1 = static_cast<T>(r.beta_1), k.beta2 = static_cast<T>(r.beta_2), k.rho = static_cast<T>(r.rho);
    k.eps = static_cast<T>(r.epsilon), k.form = r.form;
    k.halt = halt_, k.scalar_at = scalar_at_.defined() ? scalar_at_.data<T>() : nullptr;
    run_kernel(k, first.device());
  });
}

void Optimizer::stage_scalar() {
  if (!scalar_at_.defined()) fail("{}: stage_scalar without a scalar buffer (read_scalar_from)", name());
  if (scalar_at_.numel() != 1)
    fail("{}: the scalar buffer {} must hold one value", name(), scalar_at_.describe());
  const double value = step_scalar(iterations_ + 1, scalar_at_.dtype());
  Tensor host = Tensor::full(Shape{1}, value, scalar_at_.dtype(), Device::cpu());
  scalar_at_.copy_from(host);
}

// --- Adam ----------------------------------------------------------------------------------

Adam::Adam(double learning_rate, double beta_1, double beta_2, double epsilon)
    : Optimizer(learning_rate), beta_1_(beta_1), beta_2_(beta_2), epsilon_(epsilon) {}

std::map<std::string, double> Adam::hyper_parameters() const {
  return {
      {"learning_rate", learning_rate()}, {"beta_1", beta_1_}, {"beta_2", beta_2_}, {"epsilon", epsilon_}};
}

double Adam::step_scalar(int64_t step, DType dtype) const {
  // Computed in the parameter's precision, as TensorFlow does for float32 variables.
  const auto alpha = [&](auto tag) {
    using T = decltype(tag);
    const T b1 = static_cast<T>(beta_1_), b2 = static_cast<T>(beta_2_);
    const T b1_power = std::pow(b1, static_cast<T>(step)), b2_power = std::pow(b2, static_cast<T>(step));
    return static_cast<double>(static_cast<T>(learning_rate()) * std::sqrt(T(1) - b2_power) /
                               (T(1) - b1_power));
  };
  return dtype == DType::Float64 ? alpha(double{}) : alpha(float{});
}

Optimizer::Rule Adam::update_rule() const {
  Rule r;
  r.rule = UpdateRule::Adam, r.beta_1 = beta_1_, r.beta_2 = beta_2_, r.epsilon = epsilon_;
  return r;
}

// --- RMSprop -------------------------------------------------------------------------------

RMSprop::RMSprop(double learning_rate, double rho, double epsilon, RmspropEpsilon form)
    : Optimizer(learning_rate), rho_(rho), epsilon_(epsilon), form_(form) {}

std::map<std::string, double> RMSprop::hyper_parameters() const {
  return {{"learning_rate", learning_rate()},
          {"rho", rho_},
          {"epsilon", epsilon_},
          {"epsilon_inside_sqrt", form_ == RmspropEpsilon::InsideSqrt ? 1.0 : 0.0}};
}

Optimizer::Rule RMSprop::update_rule() const {
  Rule r;
  r.rule = UpdateRule::Rmsprop, r.rho = rho_, r.epsilon = epsilon_, r.form = form_;
  return r;
}

// --- SGD -----------------------------------------------------------------------------------

std::map<std::string, double> SGD::hyper_parameters() const { return {{"learning_rate", learning_rate()}}; }

Optimizer::Rule SGD::update_rule() const { return Rule{}; }

// --- factory -------------------------------------------------------------------------------

std::unique_ptr<Optimizer> make_optimizer(const std::string& name,
                                          const std::map<std::string, double>& hyper) {
  std::string key = name;
  std::transform(key.begin(), key.end(), key.begin(), [](unsigned char ch) { return std::tolower(ch); });
  std::map<std::string, double> defaults;
  if (key == "adam") {
    defaults = Adam().hyper_parameters();
  } else if (key == "rmsprop") {
    defaults = RMSprop().hyper_parameters();
  } else if (key == "sgd") {
    defaults = SGD().hyper_parameters();
  } else {
    fail("unknown optimizer '{}' (expected adam, rmsprop or sgd)", name);
  }
  for (const auto& [param, value] : hyper) {
    if (defaults.count(param) == 0) fail("optimizer {}: unknown hyper-parameter '{}'", name, param);
    defaults[param] = value;
  }
  const auto& h = defaults;
  // A learning rate of 0 trains nothing, a negative one ascends, NaN or infinity destroys the
  // weights at the first step: all are mistakes, never silently replaced by the default.
  const double lr = h.at("learning_rate");
  if (!std::isfinite(lr) || lr <= 0.0)
    fail("optimizer {}: learning_rate must be a finite number > 0, got {}", name, lr);
  for (const char* decay : {"beta_1", "beta_2", "rho"}) {
    if (h.count(decay) && !(h.at(decay) >= 0.0 && h.at(decay) < 1.0)) {
      fail("optimizer {}: {} must be in [0, 1), got {}", name, decay, h.at(decay));
    }
  }
  if (h.count("epsilon") && !(std::isfinite(h.at("epsilon")) && h.at("epsilon") >= 0.0)) {
    fail("optimizer {}: epsilon must be a finite number >= 0, got {}", name, h.at("epsilon"));
  }
  if (key == "adam")
    return std::make_unique<Adam>(h.at("learning_rate"), h.at("beta_1"), h.at("beta_2"), h.at("epsilon"));
  if (key == "rmsprop") {
    return std::make_unique<RMSprop>(
        h.at("learning_rate"), h.at("rho"), h.at("epsilon"),
        h.at("epsilon_inside_sqrt") != 0.0 ? RmspropEpsilon::InsideSqrt : RmspropEpsilon::OutsideSqrt);
  }
  return std::make_unique<SGD>(h.at("learning_rate"));
}

void zero_grad(const std::vector<Tensor>& params) {
  for (const Tensor& p : params) p.impl()->grad.reset();
}

}  // namespace hisvid
