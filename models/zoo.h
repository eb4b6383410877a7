// models/zoo.h — the six seed models of MODELS.md as Keras-schema JSON specs (models/zoo/*.json),
// compiled into the binary so `--model lrcn` works from any directory.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/sequential.h"

namespace hisvid::models {

std::vector<std::string> zoo_names();
// The spec of a zoo model; the error lists the names when there is no such model.
nlohmann::json zoo_spec(const std::string& name);

// The largest JSON spec file read: a Keras config of a deep model is a few hundred KB.
constexpr uintmax_t kMaxSpecBytes = uintmax_t(16) << 20;

// Resolves a --model argument: a zoo name, or the path of a JSON spec file (a regular file of at
// most kMaxSpecBytes). classes > 0 sets the units of the final Dense layer. Errors name `option`,
// the argument the name came from. The model is not built. `version`: the Keras version whose
// semantics (defaults, hard_sigmoid) apply where the spec states none (the zoo's do not).
Sequential load_spec(const std::string& model, int classes = 0, const std::string& option = "--model",
                     const layers::KerasVersion& version = {});

}  // namespace hisvid::models
