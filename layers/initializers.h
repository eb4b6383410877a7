// layers/initializers.h — Keras weight initializers, drawn from the engine's Philox generator.
//
// fan_in / fan_out as Keras computes them: for a kernel (..., in, out) the receptive field
// prod(shape[:-2]) times in / out; a matrix (in, out) uses in / out directly.
//   VarianceScaling(scale, mode, distribution): n = fan_in, fan_out or their mean (mode),
//     s = scale / max(1, n); uniform U(-l, l) with l = sqrt(3 s); truncated_normal N(0, sqrt(s)
//     / 0.8796...) cut at 2 standard deviations (Keras divides by the standard deviation of a
//     unit normal truncated at 2; Keras 2.0's "normal" means the same); untruncated_normal
//     N(0, sqrt(s)).
//   glorot_uniform / glorot_normal = VarianceScaling(1, fan_avg, uniform / truncated_normal)
//     (Keras's kernel default), he_* = (2, fan_in, ...), lecun_* = (1, fan_in, ...)
//   orthogonal(gain)  gain * Q of the QR of a normal (max(r,c), min(r,c)) matrix with
//                     sign(diag R) folded in, transposed when r < c; r = prod(shape[:-1]),
//                     c = shape[-1] (Keras's recurrent-kernel default)
//   identity(gain)    gain * I of a matrix
//   zeros, ones, constant(value), random_uniform(minval, maxval), random_normal(mean, stddev),
//   truncated_normal(mean, stddev) (cut at 2 standard deviations)
// Every class name Keras 2.x and 3.x write is read (GlorotUniform, Orthogonal and Keras 3.0's
// OrthogonalInitializer, VarianceScaling, ...), and the string forms ("glorot_uniform",
// Keras 2's "uniform", "normal", "zero", "one"). The class name is kept and written back.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "engine/random.h"
#include "engine/tensor.h"
#include "layers/config.h"

namespace hisvid::layers {

struct Initializer {
  std::string class_name = "Zeros";  // Keras's class name, written back as read
  // What it draws: "variance_scaling", "orthogonal", "identity", "zeros", "ones", "constant",
  // "random_uniform", "random_normal" or "truncated_normal".
  std::string kind = "zeros";
  double scale = 1.0;                             // variance_scaling
  std::string mode = "fan_in";                    // variance_scaling: fan_in, fan_out, fan_avg
  std::string distribution = "truncated_normal";  // variance_scaling
  double gain = 1.0;                              // orthogonal, identity
  double value = 0.0;                             // constant
  double minval = -0.05, maxval = 0.05;           // random_uniform
  double mean = 0.0, stddev = 0.05;               // random_normal, truncated_normal

  // Keras's serialized form, e.g. {"class_name": "GlorotUniform", "config": {"seed": null}}.
  nlohmann::json to_json() const;
  // A float32 CPU tensor of `shape` drawn from rng.
  Tensor sample(const Shape& shape, Generator& rng) const;
};

// Reads an initializer argument: a name ("glorot_uniform") or a Keras object
// ({"class_name": "Orthogonal", "config": {"gain": 1.0, "seed": null}}, with or without Keras
// 3's metadata); absent means `fallback` (a name).
Initializer read_initializer(ConfigReader& reader, const char* key, const std::string& fallback);

}  // namespace hisvid::layers
