// io/keras_archive.cpp — the .keras zip archive through libzip, its model.weights.h5 through
// io/hdf5.h in memory.
#include "io/keras_archive.h"

#include <zip.h>

#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>

#include "engine/error.h"
#include "io/atomic_file.h"
#include "io/hdf5.h"

namespace hisvid::io {

namespace {

constexpr const char* kConfigEntry = "config.json";
constexpr const char* kMetadataEntry = "metadata.json";
constexpr const char* kWeightsEntry = "model.weights.h5";

// Upper bounds on what an entry may expand to, checked before anything is allocated (a hostile
// archive may declare any size). A Keras config of a large model is a few hundred KB; the
// seeds' largest model (lrcn_small, 2.1M parameters) has 8.4 MB of weights, so 4 GiB (a
// billion float32 parameters) is far beyond any model hisvid trains.
constexpr zip_uint64_t kMaxJsonBytes = zip_uint64_t(64) << 20;
constexpr zip_uint64_t kMaxWeightsBytes = zip_uint64_t(4) << 30;

struct ZipCloser {
  void operator()(zip_t* archive) const { zip_discard(archive); }
};
using ZipHandle = std::unique_ptr<zip_t, ZipCloser>;

std::string zip_error_text(int code) {
  zip_error_t error;
  zip_error_init_with_code(&error, code);
  std::string text = zip_error_strerror(&error);
  zip_error_fini(&error);
  return text;
}

std::vector<char> read_entry(zip_t* archive, const std::string& path, const char* entry, zip_uint64_t limit) {
  const zip_int64_t index = zip_name_locate(archive, entry, 0);
  if (index < 0) fail("{}: the .keras archive has no {}", path, entry);
  // Two entries of one name: Python's zipfile, and so Keras, reads the last, libzip's lookup the
  // first. (libzip's consistency check, which refused them, also refused data appended after the
  // archive, which zipfile reads.)
  const zip_int64_t entries = zip_get_num_entries(archive, 0);
  for (zip_int64_t i = index + 1; i < entries; ++i) {
    const char* name = zip_get_name(archive, static_cast<zip_uint64_t>(i), 0);
    if (name != nullptr && std::strcmp(name, entry) == 0) {
      fail("{}: the .keras archive holds two entries named {} (a damaged or hand-made archive)", path, entry);
    }
  }
  zip_stat_t stat;
  zip_stat_init(&stat);
  if (zip_stat_index(archive, static_cast<zip_uint64_t>(index), 0, &stat) != 0 ||
      !(stat.valid & ZIP_STAT_SIZE)) {
    fail("{}: cannot read the size of {} in the archive", path, entry);
  }
  if (stat.size > limit) {
    fail("{}: {} declares {} bytes, more than the {} a model file may hold", path, entry, stat.size, limit);
  }
  zip_file_t* file = zip_fopen_index(archive, static_cast<zip_uint64_t>(index), 0);
  if (file == nullptr) fail("{}: cannot open {} in the archive: {}", path, entry, zip_strerror(archive));
  std::vector<char> bytes(static_cast<size_t>(stat.size));
  zip_uint64_t done = 0;
  while (done < stat.size) {
    const zip_int64_t n = zip_fread(file, bytes.data() + done, stat.size - done);
    if (n <= 0) break;
    done += static_cast<zip_uint64_t>(n);
  }
  // libzip compares the entry's CRC-32 only on the read that finds its end, which a read of
  // exactly the declared size never makes: one more read must return 0 (end), not -1 (a bad CRC
  // or damaged compressed data) nor more bytes than declared. A short read is damage too.
  char past_end = 0;
  const zip_int64_t extra = done == stat.size ? zip_fread(file, &past_end, 1) : -1;
  const std::string error = done != stat.size ? std::string("shorter than the ") + std::to_string(stat.size) +
                                                    " bytes its header declares"
                            : extra > 0 ? "longer than its header declares"
                                        : zip_file_strerror(file);
  const int closed = zip_fclose(file);
  const bool failed = extra != 0 || closed != 0;
  if (failed) {
    fail("{}: {} in the archive is damaged ({}); the file was corrupted in a copy or download, get it again",
         path, entry, error);
  }
  return bytes;
}

}  // namespace

bool is_zip_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {0, 0, 0, 0};
  in.read(magic, 4);
  // A local file header, or the end-of-directory record that opens an archive with no entries.
  return in.gcount() == 4 &&
         (std::memcmp(magic, "PK\x03\x04", 4) == 0 || std::memcmp(magic, "PK\x05\x06", 4) == 0);
}

KerasArchive read_keras_archive(const std::string& path) {
  int code = 0;
  ZipHandle archive(zip_open(path.c_str(), ZIP_RDONLY, &code));
  if (!archive) fail("{}: not a readable .keras archive ({})", path, zip_error_text(code));
  KerasArchive result;
  const std::vector<char> config = read_entry(archive.get(), path, kConfigEntry, kMaxJsonBytes);
  result.config.assign(config.begin(), config.end());
  // metadata.json (the Keras version, the date) is not needed to load, by Keras 3 either.
  if (zip_name_locate(archive.get(), kMetadataEntry, 0) >= 0) {
    const std::vector<char> metadata = read_entry(archive.get(), path, kMetadataEntry, kMaxJsonBytes);
    result.metadata.assign(metadata.begin(), metadata.end());
  } else {
    result.metadata = "{}";
  }
  if (zip_name_locate(archive.get(), kWeightsEntry, 0) < 0 &&
      zip_name_locate(archive.get(), "model.weights.npz", 0) >= 0) {
    fail(
        "{}: the weights are stored as model.weights.npz (Keras's npz option), which hisvid does not read; "
        "save with the default h5 weights",
        path);
  }
  const std::vector<char> weights = read_entry(archive.get(), path, kWeightsEntry, kMaxWeightsBytes);
  const std::string inner = path + ":" + kWeightsEntry;
  const h5::File file = h5::File::open_image(weights, inner);
  const h5::Group root = file.root();
  for (const std::string& dataset : root.dataset_paths()) {
    result.vars[dataset] = root.open_dataset(dataset).read_tensor_converted();
  }
  return result;
}

void write_keras_archive(const std::string& path, const KerasArchive& archive) {
  std::vector<char> weights;
  {
    h5::File file = h5::File::create_in_memory(path + ":" + kWeightsEntry);
    {
      h5::Group root = file.root();
      for (const std::string& group : archive.empty_groups) root.create_group(group);
      for (const auto& [name, tensor] : archive.vars) root.write_tensor(name, tensor);
      for (const auto& [name, value] : archive.int64_scalars) root.write_array<int64_t>(name, &value, {});
    }
    weights = file.image();
    file.close();
  }
  write_atomically(path, [&](const std::string& temp) {
    int code = 0;
    ZipHandle zip(zip_open(temp.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &code));
    if (!zip) fail("{}: cannot create the archive ({})", path, zip_error_text(code));
    const time_t now = std::time(nullptr);
    const std::pair<const char*, const std::vector<char>*> entries[] = {
        {kMetadataEntry, nullptr}, {kConfigEntry, nullptr}, {kWeightsEntry, &weights}};
    for (const auto& [name, bytes] : entries) {
      const std::string& text = std::strcmp(name, kMetadataEntry) == 0 ? archive.metadata : archive.config;
      const void* data =
          bytes ? static_cast<const void*>(bytes->data()) : static_cast<const void*>(text.data());
      const size_t size = bytes ? bytes->size() : text.size();
      // The buffers outlive zip_close, which is when libzip reads them.
      zip_source_t* source = zip_source_buffer(zip.get(), data, size, 0);
      if (source == nullptr) fail("{}: cannot add {}: {}", path, name, zip_strerror(zip.get()));
      const zip_int64_t index = zip_file_add(zip.get(), name, source, ZIP_FL_ENC_UTF_8);
      if (index < 0) {
        zip_source_free(source);
        fail("{}: cannot add {}: {}", path, name, zip_strerror(zip.get()));
      }
      // Stored, as Python's zipfile writes Keras's archives; the JSON entries carry zipfile's
      // default date (1980-01-01), the weights the time of saving, as Keras's do.
      const time_t mtime = bytes ? now : 315532800;
      if (zip_set_file_compression(zip.get(), static_cast<zip_uint64_t>(index), ZIP_CM_STORE, 0) != 0 ||
          zip_file_set_mtime(zip.get(), static_cast<zip_uint64_t>(index), mtime, 0) != 0) {
        fail("{}: cannot set up {}: {}", path, name, zip_strerror(zip.get()));
      }
    }
    zip_t* raw = zip.release();
    if (zip_close(raw) != 0) {
      const std::string error = zip_strerror(raw);
      zip_discard(raw);
      fail("{}: cannot write the archive: {} (disk full or not writable?)", path, error);
    }
  });
}

}  // namespace hisvid::io
