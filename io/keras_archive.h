// io/keras_archive.h — the native Keras format (`.keras`, Keras 2.13+ and 3.x): a zip archive of
//   metadata.json     {"keras_version": "3.3.3", "date_saved": "..."}
//   config.json       the model's serialized config (Keras 3 schema)
//   model.weights.h5  every variable, addressed by the position of its layer, not its name:
//                       layers/<snake_case class>[_N]/vars/<i>          (a layer's own weights)
//                       layers/time_distributed[_N]/layer/vars/<i>      (what a wrapper wraps)
//                       layers/lstm[_N]/cell/vars/<i>                   (a recurrent layer's cell)
//                       optimizer/vars/<i>                              (iteration, learning rate, slots)
//                       vars                                            (the model's own: empty)
//                     with an empty vars group for every layer without weights. Keras 2.13-2.15
//                     name the top group _layer_checkpoint_dependencies instead of layers.
// io/ reads and writes the archive as plain data; models/ maps it to a Sequential model.
//
// The inner HDF5 file is read from memory and built in memory (HDF5's core driver): nothing is
// extracted to disk. Entries are stored uncompressed, as Keras writes them. Writing goes to a
// temporary file renamed over the target (io/atomic_file.h).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace hisvid::io {

struct KerasArchive {
  std::string config;    // config.json text
  std::string metadata;  // metadata.json text
  // Every dataset of model.weights.h5 by path, converted to float32 ("layers/dense/vars/0",
  // "optimizer/vars/0"); iteration counts are exact in float32 up to 2^24.
  std::map<std::string, Tensor> vars;
  // Writing only: groups created even when they hold nothing (each weightless layer's vars),
  // and the int64 scalars Keras stores as such (the optimizer's iteration count).
  std::vector<std::string> empty_groups;
  std::vector<std::pair<std::string, int64_t>> int64_scalars;
};

// Reads a .keras archive. Errors name the file and the entry: not a zip, an entry missing or
// too large, a weights file that is not HDF5 (Keras's npz weights are not read), damage.
KerasArchive read_keras_archive(const std::string& path);

// Writes the archive atomically: entries metadata.json, config.json, model.weights.h5 in that
// order, stored. On any failure the target is untouched.
void write_keras_archive(const std::string& path, const KerasArchive& archive);

// True when the file starts as a zip archive does ("PK\3\4"); false for HDF5 or anything else.
bool is_zip_file(const std::string& path);

}  // namespace hisvid::io
