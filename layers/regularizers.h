// layers/regularizers.h — Keras's weight and activity regularizers.
//
//   L1(l1)        penalty(x) = l1 * sum |x|
//   L2(l2)        penalty(x) = l2 * sum x^2
//   L1L2(l1, l2)  penalty(x) = l1 * sum |x| + l2 * sum x^2
// A weight regularizer adds penalty(weight) to the training loss (and to the loss evaluate
// reports), as Keras's model.losses do. An activity regularizer adds penalty(layer output):
// Keras 2 divides it by the output's batch size (the rows the layer saw: N*T inside
// TimeDistributed), Keras 3 does not, and Keras 3's TimeDistributed calls its inner layer
// without applying the inner layer's activity regularizer at all (Layer::apply follows both).
// The gradient of |x| at 0 is 0, as TensorFlow's.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "engine/tensor.h"
#include "layers/config.h"

namespace hisvid::layers {

struct Regularizer {
  std::string class_name;  // "L1", "L2" or "L1L2"; empty: none
  double l1 = 0.0, l2 = 0.0;

  bool active() const { return !class_name.empty(); }
  // Keras's serialized form ({"class_name": "L2", "config": {"l2": 0.0001}}), null when none.
  nlohmann::json to_json() const;
  // The penalty of x as a () tensor of x's dtype and device, recorded on the tape.
  Tensor penalty(const Tensor& x) const;
};

// Reads a regularizer argument: null/absent (none), a Keras object (L1, L2, L1L2, with or
// without Keras 3's metadata) or Keras 2's string shortcuts "l1", "l2", "l1_l2" (factor 0.01).
// Anything else — a custom or an orthogonal regularizer — is an error naming the key.
Regularizer read_regularizer(ConfigReader& reader, const char* key);

}  // namespace hisvid::layers
