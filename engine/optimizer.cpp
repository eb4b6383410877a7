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
  const int64_t step_number = iterations_ + 1;
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor g = params[i].grad();
    if (!g.defined()) continue;
    update(params[i], g, slots_[i], step_number);
  }
  iterations_ = step_number;
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

void Adam::update(const Tensor& w, const Tensor& g, std::vector<Tensor>& slots, int64_t step) {
  with_dtype(w, [&](auto tag) {
    using T = decltype(tag);
    AdamUpdate<T> k;
    k.w = w.data<T>(), k.m = slots[0].data<T>(), k.v = slots[1].data<T>(), k.g = g.data<T>(), k.n = w.numel();
    k.alpha = static_cast<T>(step_scalar(step, w.dtype())), k.beta1 = static_cast<T>(beta_1_);
    k.beta2 = static_cast<T>(beta_2_), k.eps = static_cast<T>(epsilon_), k.halt = halt();
    k.scalar_at = scalar_at<T>();
    run_kernel(k, w.device());
  });
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

void RMSprop::update(const Tensor& w, const Tensor& g, std::vector<Tensor>& slots, int64_t) {
  with_dtype(w, [&](auto tag) {
    using T = decltype(tag);
    RmspropUpdate<T> k;
    k.w = w.data<T>(), k.v = slots[0].data<T>(), k.g = g.data<T>(), k.n = w.numel();
    k.lr = static_cast<T>(learning_rate()), k.rho = static_cast<T>(rho_), k.eps = static_cast<T>(epsilon_);
    k.form = form_, k.halt = halt(), k.scalar_at = scalar_at<T>();
    run_kernel(k, w.device());
  });
}

// --- SGD -----------------------------------------------------------------------------------

std::map<std::string, double> SGD::hyper_parameters() const { return {{"learning_rate", learning_rate()}}; }

void SGD::update(const Tensor& w, const Tensor& g, std::vector<Tensor>&, int64_t) {
  with_dtype(w, [&](auto tag) {
    using T = decltype(tag);
    SgdUpdate<T> k;
    k.w = w.data<T>(), k.g = g.data<T>(), k.n = w.numel(), k.lr = static_cast<T>(learning_rate());
    k.halt = halt(), k.scalar_at = scalar_at<T>();
    run_kernel(k, w.device());
  });
}

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
