#include "layers/initializers.h"

#include <cmath>
#include <utility>
#include <vector>

#include "kernels/philox.h"

namespace hisvid::layers {

namespace {

// Every initializer Keras 2.x and 3.x serialize: class name, snake_case name, and what it draws
// (variance scaling's scale, mode and distribution for the named special cases).
struct InitializerClass {
  const char* class_name;
  const char* snake;
  const char* kind;
  double scale;
  const char* mode;
  const char* distribution;
};
const std::vector<InitializerClass>& initializer_classes() {
  static const std::vector<InitializerClass> classes = {
      {"GlorotUniform", "glorot_uniform", "variance_scaling", 1.0, "fan_avg", "uniform"},
      {"GlorotNormal", "glorot_normal", "variance_scaling", 1.0, "fan_avg", "truncated_normal"},
      {"HeUniform", "he_uniform", "variance_scaling", 2.0, "fan_in", "uniform"},
      {"HeNormal", "he_normal", "variance_scaling", 2.0, "fan_in", "truncated_normal"},
      {"LecunUniform", "lecun_uniform", "variance_scaling", 1.0, "fan_in", "uniform"},
      {"LecunNormal", "lecun_normal", "variance_scaling", 1.0, "fan_in", "truncated_normal"},
      {"VarianceScaling", "variance_scaling", "variance_scaling", 1.0, "fan_in", "truncated_normal"},
      {"Orthogonal", "orthogonal", "orthogonal", 1.0, "", ""},
      {"OrthogonalInitializer", "orthogonal", "orthogonal", 1.0, "", ""},  // Keras 3.0-3.3's name
      {"Identity", "identity", "identity", 1.0, "", ""},
      {"IdentityInitializer", "identity", "identity", 1.0, "", ""},
      {"Zeros", "zeros", "zeros", 1.0, "", ""},
      {"Ones", "ones", "ones", 1.0, "", ""},
      {"Constant", "constant", "constant", 1.0, "", ""},
      {"RandomUniform", "random_uniform", "random_uniform", 1.0, "", ""},
      {"RandomNormal", "random_normal", "random_normal", 1.0, "", ""},
      {"TruncatedNormal", "truncated_normal", "truncated_normal", 1.0, "", ""}};
  return classes;
}

// Keras 2's short aliases of the string form.
const InitializerClass* find_by_name(const std::string& name) {
  const std::string canonical = name == "uniform"  ? "random_uniform"
                                : name == "normal" ? "random_normal"
                                : name == "zero"   ? "zeros"
                                : name == "one"    ? "ones"
                                                   : name;
  for (const InitializerClass& c : initializer_classes()) {
    if (canonical == c.snake) return &c;
  }
  return nullptr;
}

struct Fans {
  double in, out;
};

Fans compute_fans(const Shape& shape) {
  if (shape.rank() == 0) return {1, 1};
  if (shape.rank() == 1) return {static_cast<double>(shape[0]), static_cast<double>(shape[0])};
  const double receptive = static_cast<double>(shape.prod(0, shape.rank() - 2));
  return {receptive * static_cast<double>(shape[shape.rank() - 2]),
          receptive * static_cast<double>(shape.back())};
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
std::vector<double> orthonormal_columns(const std::vector<double>& a, int64_t rows, int64_t cols) {
  // On a transposed copy, each column contiguous: the same sums in the same order, but read along
  // cache lines (an LSTM of 1024 units took 52 s striding down the rows' columns).
  std::vector<double> t(a.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = a[r * cols + c];
  for (int64_t j = 0; j < cols; ++j) {
    double* cj = t.data() + j * rows;
    for (int64_t k = 0; k < j; ++k) {
      const double* ck = t.data() + k * rows;
      double dot = 0.0;
      for (int64_t r = 0; r < rows; ++r) dot += ck[r] * cj[r];
      for (int64_t r = 0; r < rows; ++r) cj[r] -= dot * ck[r];
    }
    double norm = 0.0;
    for (int64_t r = 0; r < rows; ++r) norm += cj[r] * cj[r];
    norm = std::sqrt(norm);
    for (int64_t r = 0; r < rows; ++r) cj[r] /= norm;
  }
  std::vector<double> q(a.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) q[r * cols + c] = t[c * rows + r];
  return q;
}

}  // namespace

nlohmann::json Initializer::to_json() const {
  nlohmann::json config = nlohmann::json::object();
  if (class_name == "VarianceScaling") {
    config["scale"] = scale;
    config["mode"] = mode;
    config["distribution"] = distribution;
  }
  if (kind == "orthogonal" || kind == "identity") config["gain"] = gain;
  if (kind == "constant") config["value"] = value;
  if (kind == "random_uniform") {
    config["minval"] = minval;
    config["maxval"] = maxval;
  }
  if (kind == "random_normal" || kind == "truncated_normal") {
    config["mean"] = mean;
    config["stddev"] = stddev;
  }
  if (kind != "zeros" && kind != "ones" && kind != "constant" && kind != "identity") config["seed"] = nullptr;
  return {{"class_name", class_name}, {"config", config}};
}

Tensor Initializer::sample(const Shape& shape, Generator& rng) const {
  const int64_t n_values = shape.numel();
  std::vector<double> values(static_cast<size_t>(n_values), 0.0);
  const Fans fans = compute_fans(shape);
  const RandomDraw draw = rng.next();
  auto uniform = [&](double limit) {
    for (int64_t i = 0; i < n_values; ++i) {
      values[i] = limit * (2.0 * philox_uniform(draw.seed, draw.offset, static_cast<uint64_t>(i)) - 1.0);
    }
  };
  // Keras divides by the standard deviation of a unit normal truncated at 2.
  constexpr double kTruncatedStd = 0.87962566103423978;
  auto truncated = [&](double sd) {
    for (int64_t i = 0; i < n_values; ++i) {
      values[i] = sd / kTruncatedStd * truncated_normal(draw, static_cast<uint64_t>(i));
    }
  };
  if (kind == "variance_scaling") {
    const double n = mode == "fan_in" ? fans.in : mode == "fan_out" ? fans.out : (fans.in + fans.out) / 2.0;
    const double s = scale / std::max(1.0, n);
    if (distribution == "uniform") {
      uniform(std::sqrt(3.0 * s));
    } else if (distribution == "untruncated_normal") {
      for (int64_t i = 0; i < n_values; ++i) {
        values[i] = std::sqrt(s) * philox_normal(draw.seed, draw.offset, static_cast<uint64_t>(i));
      }
    } else {  // truncated_normal, and Keras 2.0's "normal"
      truncated(std::sqrt(s));
    }
  } else if (kind == "ones") {
    values.assign(values.size(), 1.0);
  } else if (kind == "constant") {
    values.assign(values.size(), value);
  } else if (kind == "random_uniform") {
    for (int64_t i = 0; i < n_values; ++i) {
      values[i] =
          minval + (maxval - minval) * philox_uniform(draw.seed, draw.offset, static_cast<uint64_t>(i));
    }
  } else if (kind == "random_normal") {
    for (int64_t i = 0; i < n_values; ++i) {
      values[i] = mean + stddev * philox_normal(draw.seed, draw.offset, static_cast<uint64_t>(i));
    }
  } else if (kind == "truncated_normal") {
    for (int64_t i = 0; i < n_values; ++i)
      values[i] = mean + stddev * truncated_normal(draw, static_cast<uint64_t>(i));
  } else if (kind == "identity") {
    if (shape.rank() != 2) fail("Identity initializer: needs a matrix, got shape {}", shape.str());
    for (int64_t r = 0; r < std::min(shape[0], shape[1]); ++r) values[r * shape[1] + r] = gain;
  } else if (kind == "orthogonal") {
    const int64_t rows = shape.rank() > 0 ? shape.prod(0, shape.rank() - 1) : 1;
    const int64_t cols = shape.rank() > 0 ? shape.back() : 1;
    const int64_t tall = std::max(rows, cols), wide = std::min(rows, cols);
    std::vector<double> normal(static_cast<size_t>(tall * wide));
    for (int64_t i = 0; i < tall * wide; ++i)
      normal[i] = philox_normal(draw.seed, draw.offset, static_cast<uint64_t>(i));
    const std::vector<double> q = orthonormal_columns(normal, tall, wide);  // (tall, wide)
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        // rows >= cols: the kernel is Q itself; rows < cols: Q transposed.
        values[r * cols + c] = gain * (rows >= cols ? q[r * wide + c] : q[c * wide + r]);
      }
    }
  }
  return Tensor::from_vector(values, shape, DType::Float32);
}

Initializer read_initializer(ConfigReader& reader, const char* key, const std::string& fallback) {
  const nlohmann::json spec = reader.raw(key);
  const std::string where = reader.where() + " initializer '" + std::string(key) + "'";
  const InitializerClass* cls = nullptr;
  nlohmann::json config = nlohmann::json::object();
  if (spec.is_null() || spec.is_string()) {
    // An explicit null is add_weight(initializer=None): Keras's glorot_uniform for float weights,
    // not the layer's default.
    const std::string name = spec.is_string()  ? spec.get<std::string>()
                             : reader.has(key) ? "glorot_uniform"
                                               : fallback;
    cls = find_by_name(name);
    if (cls == nullptr) fail("{}: unknown initializer '{}'", where, name);
  } else if (spec.is_object()) {
    const KerasObject object = read_keras_object(spec, where);
    for (const InitializerClass& c : initializer_classes()) {
      if (object.class_name == c.class_name) cls = &c;
    }
    if (cls == nullptr) fail("{}: unknown initializer class '{}'", where, object.class_name);
    config = object.config;
  } else {
    fail("{}: must be a name or a {{class_name, config}} object, got {}", where, brief(spec));
  }

  Initializer init;
  init.class_name = cls->class_name;
  init.kind = cls->kind;
  init.scale = cls->scale;
  init.mode = cls->mode;
  init.distribution = cls->distribution;
  ConfigReader args(config, where, reader.version());
  args.ignore("seed");
  if (init.class_name == "VarianceScaling") {
    init.scale = args.number("scale", 1.0);
    init.mode = args.string("mode", "fan_in");
    init.distribution = args.string("distribution", "truncated_normal");
    if (!(init.scale > 0.0)) args.error("scale must be > 0, got {}", init.scale);
    if (init.mode != "fan_in" && init.mode != "fan_out" && init.mode != "fan_avg") {
      args.error("mode must be fan_in, fan_out or fan_avg, got '{}'", init.mode);
    }
    if (init.distribution != "uniform" && init.distribution != "truncated_normal" &&
        init.distribution != "untruncated_normal" && init.distribution != "normal") {
      args.error("distribution must be uniform, truncated_normal or untruncated_normal, got '{}'",
                 init.distribution);
    }
  }
  if (init.kind == "orthogonal" || init.kind == "identity") init.gain = args.number("gain", 1.0);
  if (init.kind == "constant") init.value = args.number("value", 0.0);
  if (init.kind == "random_uniform") {
    init.minval = args.number("minval", -0.05);
    init.maxval = args.number("maxval", 0.05);
  }
  if (init.kind == "random_normal" || init.kind == "truncated_normal") {
    init.mean = args.number("mean", 0.0);
    init.stddev = args.number("stddev", 0.05);
  }
  args.finish();
  return init;
}

}  // namespace hisvid::layers
