#include "models/zoo.h"

#include <fstream>
#include <map>
#include <sstream>

#include "engine/error.h"

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

Sequential load_spec(const std::string& model, int classes) {
  Sequential net = [&] {
    if (zoo_texts().count(model) > 0) return Sequential::from_json(zoo_spec(model), "zoo model " + model);
    std::ifstream file(model);
    if (!file) {
      std::string known;
      for (const std::string& n : zoo_names()) known += (known.empty() ? "" : ", ") + n;
      fail("--model '{}' is neither a zoo model ({}) nor a readable JSON spec file", model, known);
    }
    std::stringstream text;
    text << file.rdbuf();
    nlohmann::json spec;
    try {
      spec = nlohmann::json::parse(text.str());
    } catch (const nlohmann::json::parse_error& e) {
      fail("{}: not valid JSON: {}", model, e.what());
    }
    return Sequential::from_json(spec, model);
  }();
  if (classes > 0) net.set_num_classes(classes);
  return net;
}

}  // namespace hisvid::models
