// layers/initializers.h — Keras weight initializers, drawn from the engine's Philox generator.
//
// fan_in / fan_out as Keras computes them: for a kernel (..., in, out) the receptive field
// prod(shape[:-2]) times in / out; a matrix (in, out) uses in / out directly.
//   glorot_uniform  U(-l, l), l = sqrt(6 / (fan_in + fan_out))       (Keras's kernel default)
//   he_uniform      U(-l, l), l = sqrt(6 / fan_in)
//   lecun_uniform   U(-l, l), l = sqrt(3 / fan_in)
//   glorot_normal   truncated N(0, s) at 2 s, s = sqrt(2 / (fan_in + fan_out)) / 0.8796...
//   he_normal       truncated N(0, s) at 2 s, s = sqrt(2 / fan_in) / 0.8796...
//   orthogonal      gain * Q of the QR of a normal (max(r,c), min(r,c)) matrix with sign(diag R)
//                   folded in, transposed when r < c; r = prod(shape[:-1]), c = shape[-1]
//                   (Keras's recurrent-kernel default)
//   zeros, ones, constant(value), random_uniform(minval, maxval), random_normal(mean, stddev)
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "engine/random.h"
#include "engine/tensor.h"
#include "layers/config.h"

namespace hisvid::layers {

struct Initializer {
  std::string name = "zeros";  // Keras snake_case name
  double a = 0.0;               // gain (orthogonal), value (constant), minval / mean
  double b = 0.0;               // maxval / stddev

  // Keras's serialized form, e.g. {"class_name": "GlorotUniform", "config": {"seed": null}}.
  nlohmann::json to_json() const;
  // A float32 CPU tensor of `shape` drawn from rng.
  Tensor sample(const Shape& shape, Generator& rng) const;
};

// Reads an initializer argument: a name ("glorot_uniform") or a Keras object
// ({"class_name": "Orthogonal", "config": {"gain": 1.0, "seed": null}}); absent means `fallback`.
Initializer read_initializer(ConfigReader& reader, const char* key, const std::string& fallback);

}  // namespace hisvid::layers
