#include "layers/regularizers.h"

#include "engine/ops.h"

namespace hisvid::layers {

nlohmann::json Regularizer::to_json() const {
  if (!active()) return nullptr;
  nlohmann::json config = nlohmann::json::object();
  if (class_name != "L2") config["l1"] = l1;
  if (class_name != "L1") config["l2"] = l2;
  return {{"class_name", class_name}, {"config", config}};
}

Tensor Regularizer::penalty(const Tensor& x) const {
  Tensor total = Tensor::zeros(Shape{}, x.dtype(), x.device());
  if (l2 != 0.0) total = ops::add(total, ops::scale(ops::sum(ops::mul(x, x)), l2));
  if (l1 != 0.0) {
    // |x| = relu(x) + relu(-x): its gradient is sign(x), 0 at 0.
    const Tensor abs_sum = ops::add(ops::sum(ops::relu(x)), ops::sum(ops::relu(ops::scale(x, -1.0))));
    total = ops::add(total, ops::scale(abs_sum, l1));
  }
  return total;
}

Regularizer read_regularizer(ConfigReader& reader, const char* key) {
  const nlohmann::json spec = reader.raw(key);
  Regularizer r;
  if (spec.is_null()) return r;
  const std::string where = reader.where() + " " + key;
  if (spec.is_string()) {
    // Keras 2's string shortcuts and their default factor.
    const std::string name = spec.get<std::string>();
    constexpr double kDefaultFactor = 0.01;
    if (name == "l1") return {"L1", kDefaultFactor, 0.0};
    if (name == "l2") return {"L2", 0.0, kDefaultFactor};
    if (name == "l1_l2") return {"L1L2", kDefaultFactor, kDefaultFactor};
    fail("{}: unknown regularizer '{}' (hisvid implements l1, l2 and l1_l2)", where, name);
  }
  const KerasObject object = read_keras_object(spec, where);
  const std::string& cls = object.class_name;
  if (cls != "L1" && cls != "L2" && cls != "L1L2") {
    fail("{}: regularizer '{}' is not implemented (hisvid implements L1, L2 and L1L2)", where, cls);
  }
  ConfigReader args(object.config, where + " (" + cls + ")", reader.version());
  r.class_name = cls;
  if (cls != "L2") r.l1 = args.number("l1", cls == "L1" ? 0.01 : 0.0);
  if (cls != "L1") r.l2 = args.number("l2", cls == "L2" ? 0.01 : 0.0);
  if (!(r.l1 >= 0.0) || !(r.l2 >= 0.0))
    fail("{}: regularization factors must be >= 0, got l1 {} l2 {}", where, r.l1, r.l2);
  args.finish();
  return r;
}

}  // namespace hisvid::layers
