#include "layers/initializers.h"

#include <cmath>
#include <utility>
#include <vector>

#include "kernels/philox.h"

namespace hisvid::layers {

namespace {

// snake_case name <-> Keras class name.
const std::vector<std::pair<std::string, std::string>>& initializer_names() {
  static const std::vector<std::pair<std::string, std::string>> names = {
      {"glorot_uniform", "GlorotUniform"}, {"glorot_normal", "GlorotNormal"}, {"he_uniform", "HeUniform"},
      {"he_normal", "HeNormal"},           {"lecun_uniform", "LecunUniform"}, {"orthogonal", "Orthogonal"},
      {"zeros", "Zeros"},                  {"ones", "Ones"},                  {"constant", "Constant"},
      {"random_uniform", "RandomUniform"}, {"random_normal", "RandomNormal"}};
  return names;
}

struct Fans {
  double in, out;
};

Fans compute_fans(const Shape& shape) {
  if (shape.rank() == 0) return {1, 1};
  if (shape.rank() == 1) return {static_cast<double>(shape[0]), static_cast<double>(shape[0])};
  const double receptive = static_cast<double>(shape.prod(0, shape.rank() - 2));
  return {receptive * static_cast<double>(shape[shape.rank() - 2]), receptive * static_cast<double>(shape.back())};
}

// Standard normal truncated at +-2, by rejection on successive Philox draws of element i.
double truncated_normal(const RandomDraw& draw, uint64_t i) {
  constexpr int kTries = 64;  // each try is accepted with probability 0.954
  double z = 0.0;
  for (int j = 0; j < kTries; ++j) {
    z = philox_normal(draw.seed, draw.offset, i * kTries + j);
    if (std::fabs(z) <= 2.0) return z;
  }
  return z > 0 ? 2.0 : -2.0;
}

// Orthonormal columns of a (rows x cols) normal matrix, rows >= cols, by modified Gram-Schmidt
// (the QR factor with a positive diagonal in R, i.e. Keras's Q * sign(diag(R))).
std::vector<double> orthonormal_columns(std::vector<double> a, int64_t rows, int64_t cols) {
  for (int64_t j = 0; j < cols; ++j) {
    for (int64_t k = 0; k < j; ++k) {
      double dot = 0.0;
      for (int64_t r = 0; r < rows; ++r) dot += a[r * cols + k] * a[r * cols + j];
      for (int64_t r = 0; r < rows; ++r) a[r * cols + j] -= dot * a[r * cols + k];
    }
    double norm = 0.0;
    for (int64_t r = 0; r < rows; ++r) norm += a[r * cols + j] * a[r * cols + j];
    norm = std::sqrt(norm);
    for (int64_t r = 0; r < rows; ++r) a[r * cols + j] /= norm;
  }
  return a;
}

}  // namespace

nlohmann::json Initializer::to_json() const {
  std::string class_name;
  for (const auto& [snake, keras] : initializer_names()) {
    if (snake == name) class_name = keras;
  }
  nlohmann::json config = nlohmann::json::object();
  if (name == "orthogonal") config["gain"] = a;
  if (name == "constant") config["value"] = a;
  if (name == "random_uniform") {
    config["minval"] = a;
    config["maxval"] = b;
  }
  if (name == "random_normal") {
    config["mean"] = a;
    config["stddev"] = b;
  }
  if (name != "zeros" && name != "ones" && name != "constant") config["seed"] = nullptr;
  return {{"class_name", class_name}, {"config", config}};
}

Tensor Initializer::sample(const Shape& shape, Generator& rng) const {
  const int64_t n = shape.numel();
  std::vector<double> values(static_cast<size_t>(n), 0.0);
  const Fans fans = compute_fans(shape);
  const RandomDraw draw = rng.next();
  auto uniform = [&](double limit) {
    for (int64_t i = 0; i < n; ++i) {
      values[i] = limit * (2.0 * philox_uniform(draw.seed, draw.offset, static_cast<uint64_t>(i)) - 1.0);
    }
  };
  // Keras divides by the standard deviation of a unit normal truncated at 2.
  constexpr double kTruncatedStd = 0.87962566103423978;
  auto truncated = [&](double stddev) {
    for (int64_t i = 0; i < n; ++i) values[i] = stddev / kTruncatedStd * truncated_normal(draw, static_cast<uint64_t>(i));
  };
  if (name == "glorot_uniform") {
    uniform(std::sqrt(6.0 / (fans.in + fans.out)));
  } else if (name == "he_uniform") {
    uniform(std::sqrt(6.0 / fans.in));
  } else if (name == "lecun_uniform") {
    uniform(std::sqrt(3.0 / fans.in));
  } else if (name == "glorot_normal") {
    truncated(std::sqrt(2.0 / (fans.in + fans.out)));
  } else if (name == "he_normal") {
    truncated(std::sqrt(2.0 / fans.in));
  } else if (name == "ones") {
    values.assign(values.size(), 1.0);
  } else if (name == "constant") {
    values.assign(values.size(), a);
  } else if (name == "random_uniform") {
    for (int64_t i = 0; i < n; ++i) values[i] = a + (b - a) * philox_uniform(draw.seed, draw.offset, static_cast<uint64_t>(i));
  } else if (name == "random_normal") {
    for (int64_t i = 0; i < n; ++i) values[i] = a + b * philox_normal(draw.seed, draw.offset, static_cast<uint64_t>(i));
  } else if (name == "orthogonal") {
    const int64_t rows = shape.rank() > 0 ? shape.prod(0, shape.rank() - 1) : 1;
    const int64_t cols = shape.rank() > 0 ? shape.back() : 1;
    const int64_t tall = std::max(rows, cols), wide = std::min(rows, cols);
    std::vector<double> normal(static_cast<size_t>(tall * wide));
    for (int64_t i = 0; i < tall * wide; ++i) normal[i] = philox_normal(draw.seed, draw.offset, static_cast<uint64_t>(i));
    const std::vector<double> q = orthonormal_columns(std::move(normal), tall, wide);  // (tall, wide)
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        // rows >= cols: the kernel is Q itself; rows < cols: Q transposed.
        values[r * cols + c] = a * (rows >= cols ? q[r * wide + c] : q[c * wide + r]);
      }
    }
  }
  return Tensor::from_vector(values, shape, DType::Float32);
}

Initializer read_initializer(ConfigReader& reader, const char* key, const std::string& fallback) {
  const nlohmann::json spec = reader.raw(key);
  std::string name = fallback;
  nlohmann::json config = nlohmann::json::object();
  if (spec.is_string()) {
    name = spec.get<std::string>();
  } else if (spec.is_object()) {
    if (!spec.contains("class_name") || !spec["class_name"].is_string()) {
      reader.error("initializer '{}' must have a string class_name, got {}", key, spec.dump());
    }
    const std::string class_name = spec["class_name"].get<std::string>();
    name.clear();
    for (const auto& [snake, keras] : initializer_names()) {
      if (keras == class_name) name = snake;
    }
    if (name.empty()) reader.error("unknown initializer class '{}' for '{}'", class_name, key);
    if (spec.contains("config")) config = spec["config"];
  } else if (!spec.is_null()) {
    reader.error("initializer '{}' must be a name or a {{class_name, config}} object, got {}", key, spec.dump());
  }
  bool known = false;
  for (const auto& [snake, keras] : initializer_names()) known = known || snake == name;
  if (!known) reader.error("unknown initializer '{}' for '{}'", name, key);

  Initializer init;
  init.name = name;
  ConfigReader args(config, reader.where() + " initializer '" + std::string(key) + "'");
  args.ignore("seed");
  if (name == "orthogonal") init.a = args.number("gain", 1.0);
  if (name == "constant") init.a = args.number("value", 0.0);
  if (name == "random_uniform") {
    init.a = args.number("minval", -0.05);
    init.b = args.number("maxval", 0.05);
  }
  if (name == "random_normal") {
    init.a = args.number("mean", 0.0);
    init.b = args.number("stddev", 0.05);
  }
  args.finish();
  return init;
}

}  // namespace hisvid::layers
