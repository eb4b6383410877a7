#include "models/zoo.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "engine/error.h"
#include "layers/config.h"
#include "models/keras_format.h"

namespace hisvid::models {

// Defined in the build's generated zoo_data.cpp: name -> JSON text of models/zoo/<name>.json.
const std::map<std::string, const char*>& zoo_texts();

std::vector<std::string> zoo_names() {
  std::vector<std::string> names;
  for (const auto& [name, text] : zoo_texts()) names.push_back(name);
  return names;
}

nlohmann::json zoo_spec(const std::string& name) {
  const auto it = zoo_texts().find(name);
  if (it == zoo_texts().end()) {
    std::string known;
    for (const std::string& n : zoo_names()) known += (known.empty() ? "" : ", ") + n;
    fail("no zoo model named '{}' (the zoo has {})", name, known);
  }
  return nlohmann::json::parse(it->second);
}

Sequential load_spec(const std::string& model, int classes, const std::string& option,
                     const layers::KerasVersion& version) {
  Sequential net = [&] {
    if (zoo_texts().count(model) > 0)
      return Sequential::from_json(zoo_spec(model), "zoo model " + model, version);
    std::error_code error;
    const std::filesystem::file_status status = std::filesystem::status(model, error);
    if (!std::filesystem::exists(status)) {
      std::string known;
      for (const std::string& n : zoo_names()) known += (known.empty() ? "" : ", ") + n;
      fail("{} '{}' is neither a zoo model ({}) nor a JSON spec file", option, model, known);
    }
    // Only a regular file of a reasonable size: /dev/zero or a FIFO would be read forever.
    if (!std::filesystem::is_regular_file(status))
      fail("{} {}: not a regular file (a JSON spec is expected)", option, model);
    {  // A model file (HDF5's signature, a .keras zip's) where a spec was expected: name its option.
      std::ifstream probe(model, std::ios::binary);
      char head[8] = {};
      probe.read(head, sizeof head);
      const std::string start(head, static_cast<size_t>(probe.gcount()));
      if (start == std::string("\x89HDF\r\n\x1a\n", 8) || start.rfind("PK\x03\x04", 0) == 0)
        fail("{} {}: a model file, not a JSON spec; give model files with --weights", option, model);
    }
    const uintmax_t size = std::filesystem::file_size(model, error);
    if (error || size > kMaxSpecBytes) {
      fail("{} {}: {} bytes, more than a model spec may hold ({} bytes)", option, model, size, kMaxSpecBytes);
    }
    std::ifstream file(model, std::ios::binary);
    if (!file) fail("{} {}: cannot be read", option, model);
    std::stringstream text;
    text << file.rdbuf();
    nlohmann::json spec;
    try {
      spec = layers::parse_json_limited(text.str());
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not a valid JSON spec: {}", model, e.what());
    }
    // Keras 3's model.to_json() states no keras_version, but its objects carry a "module": where
    // the caller knows no version either, such a spec computes as Keras 3 (its hard_sigmoid, its
    // ConvLSTM2D gates), not with Keras 2.8's defaults.
    const layers::KerasVersion unstated{};
    const bool keras3_form = spec.is_object() && spec.contains("module") && !spec.contains("keras_version");
    const bool caller_unstated =
        version.major == unstated.major && version.minor == unstated.minor && version.patch == unstated.patch;
    return Sequential::from_json(
        spec, model,
        keras3_form && caller_unstated ? layers::KerasVersion::parse(kKeras3WriteVersion, model) : version);
  }();
  if (classes > 0) net.set_num_classes(classes);
  return net;
}

}  // namespace hisvid::models
