// io/hdf5.h — a small RAII wrapper over the HDF5 C API: files, groups, datasets, attributes.
//
// Every HDF5 identifier is owned by an object here and closed when it goes. Every HDF5 call is
// checked; a failure throws hisvid::Error whose message names the file, the object path and the
// problem, followed by HDF5's own innermost reason in parentheses. HDF5's printing of its error
// stack is switched off, so the exception is the only message.
//
// Element types are the four the project stores: uint8 (clip caches), int64 (Keras's
// optimizer step), float32 (weights, tensors), float64 (h5py's empty arrays, metrics).
// Reads are exact: read<T>() of a dataset whose type is not T is an error, except
// read_tensor_converted(), which lets HDF5 convert any integer or float type to float32.
// A dataset is read whole only after its declared size is checked against what the file stores
// for it (kMaxReadBytes, and the deflate ratio for compressed data): a damaged or hostile file
// declaring billions of values is an error, not an allocation.
//
// Strings are written as fixed-length, NUL-padded ASCII like h5py writes numpy bytes; both
// fixed- and variable-length strings are read. Files are created in the HDF5 1.8 format
// (readable by every HDF5 since 2008, h5py included), which allows attributes over 64 KB.
//
// Threads: the wrapper keeps no shared state, and Debian's libhdf5 is built thread-safe (it
// serialises calls); one object must still not be used by two threads at once.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace hisvid::io::h5 {

enum class ElementType { UInt8, Int64, Float32, Float64 };

// The most bytes one dataset may expand to when read whole: 4 GiB, far above any model weight
// (the seeds' largest is 8 MB) and a clip cache is read in rows.
constexpr int64_t kMaxReadBytes = int64_t(4) << 30;
// Deflate cannot compress by more than about 1032:1: data declared beyond that ratio of what the
// file stores for it is not there.
constexpr int64_t kMaxDeflateRatio = 1032;

const char* element_type_name(ElementType type);  // "uint8", "int64", "float32", "float64"

template <typename T>
constexpr ElementType element_type_of();
template <>
constexpr ElementType element_type_of<uint8_t>() {
  return ElementType::UInt8;
}
template <>
constexpr ElementType element_type_of<int64_t>() {
  return ElementType::Int64;
}
template <>
constexpr ElementType element_type_of<float>() {
  return ElementType::Float32;
}
template <>
constexpr ElementType element_type_of<double>() {
  return ElementType::Float64;
}

// Owns one HDF5 identifier; closes it with the matching H5?close. Move-only.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Handle() { reset(); }
  Handle(Handle&& other) noexcept : id_(other.id_), closer_(other.closer_) { other.id_ = H5I_INVALID_HID; }
  Handle& operator=(Handle&& other) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now and returns HDF5's status (negative on failure); a no-op on an empty handle.
  herr_t reset();

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// How a new dataset is laid out on disk.
struct DatasetOptions {
  // Chunk shape (same rank as the dataset); empty: contiguous. A chunked dataset's first axis
  // is unlimited (see Dataset::resize_rows), so chunk[0] may exceed the initial row count.
  std::vector<int64_t> chunk;
  int gzip_level = 0;  // 1..9 compresses with deflate (needs chunk); 0: uncompressed
};

// A group or a dataset: something with a path in a file, and attributes.
class Object {
 public:
  const std::string& filename() const { return filename_; }
  const std::string& path() const { return path_; }  // absolute, e.g. "/model_weights/lstm"

  bool has_attribute(const std::string& name) const;
  std::vector<std::string> attribute_names() const;  // in name order

  // A scalar (or one-element) string attribute, fixed- or variable-length.
  std::string read_string_attribute(const std::string& name) const;
  // A string array attribute; an empty numeric array (h5py's empty list) reads as {}.
  std::vector<std::string> read_string_list_attribute(const std::string& name) const;
  int64_t read_int64_attribute(const std::string& name) const;  // any integer type
  double read_double_attribute(const std::string& name) const;  // any integer or float type

  // Writing replaces an attribute of the same name.
  void write_string_attribute(const std::string& name, const std::string& value);
  // An empty list is written as an empty float64 array, as h5py writes `[]`.
  void write_string_list_attribute(const std::string& name, const std::vector<std::string>& values);
  void write_int64_attribute(const std::string& name, int64_t value);
  void write_double_attribute(const std::string& name, double value);

 protected:
  Object(Handle handle, std::string filename, std::string path);
  hid_t id() const;
  // Throws Error "<file>: <path>: <problem>" (plus HDF5's reason when one is pending).
  [[noreturn]] void fail_here(const std::string& problem) const;
  std::string child_path(const std::string& relative) const;

 private:
  Handle open_attribute(const std::string& name) const;

  Handle handle_;
  std::string filename_;
  std::string path_;
};

class Dataset : public Object {
 public:
  std::vector<int64_t> shape() const;  // {} for a scalar dataset
  int64_t numel() const;
  // True when the stored type is one of ElementType (of native byte order or not).
  bool has_element_type() const;
  ElementType element_type() const;  // throws when !has_element_type()
  std::string type_name() const;     // "float32", "int16", "string", "compound", ... for messages
  bool holds_floats() const;         // a floating-point type of any width (float16, float32, float64, ...)

  // The whole float32 dataset (rank <= 5) as a float32 CPU tensor; other types are an error.
  Tensor read_tensor() const;
  // Any integer or float dataset (rank <= 5) converted to float32 by HDF5 (integers above 2^24
  // lose precision).
  Tensor read_tensor_converted() const;
  // Writes a float32 tensor of this dataset's shape (copied to the CPU first when needed).
  void write_tensor(const Tensor& tensor);

  template <typename T>
  std::vector<T> read() const {
    std::vector<T> values(static_cast<size_t>(readable_numel()));
    read_raw(element_type_of<T>(), values.data(), values.size());
    return values;
  }
  // The value of a one-element dataset (scalar or of shape (1,)).
  template <typename T>
  T read_scalar() const {
    T value{};
    read_raw(element_type_of<T>(), &value, 1);
    return value;
  }
  // Rows [begin, begin + count) of the first axis (e.g. clips i..i+k of (N,T,H,W,C)) into `out`,
  // which holds count * (elements per row) values. Reads only those rows from disk.
  template <typename T>
  void read_rows(int64_t begin, int64_t count, T* out) const {
    rows_raw(begin, count, element_type_of<T>(), out, nullptr);
  }
  template <typename T>
  std::vector<T> read_rows(int64_t begin, int64_t count) const {
    std::vector<T> values(static_cast<size_t>(rows_numel(begin, count)));
    read_rows(begin, count, values.data());
    return values;
  }
  template <typename T>
  void write(const T* data, size_t count) {
    write_raw(element_type_of<T>(), data, count);
  }
  template <typename T>
  void write(const std::vector<T>& values) {
    write(values.data(), values.size());
  }
  template <typename T>
  void write_rows(int64_t begin, int64_t count, const T* data) {
    rows_raw(begin, count, element_type_of<T>(), nullptr, data);
  }
  int64_t row_numel() const;  // elements per index of the first axis
  // numel(), after checking that the file really stores that many values (a damaged or hostile
  // file may declare any shape): nothing is allocated for a dataset that cannot be read whole.
  int64_t readable_numel() const;
  // Chunked datasets can grow (or shrink) along the first axis, e.g. a cache appending clips.
  void resize_rows(int64_t rows);

 private:
  friend class Group;
  using Object::Object;
  void read_raw(ElementType type, void* out, size_t count) const;
  void write_raw(ElementType type, const void* data, size_t count);
  // count * row_numel(), after checking that [begin, begin + count) lies within the first axis.
  int64_t rows_numel(int64_t begin, int64_t count) const;
  void rows_raw(int64_t begin, int64_t count, ElementType type, void* out, const void* in) const;
};

class Group : public Object {
 public:
  // Paths are relative to this group ("a/b") or absolute ("/a/b").
  bool exists(const std::string& path) const;  // false also when an intermediate group is missing
  bool is_group(const std::string& path) const;
  bool is_dataset(const std::string& path) const;
  std::vector<std::string> children() const;  // names of the direct members, in name order
  // Paths (relative to this group) of every dataset below it, recursively, sorted.
  std::vector<std::string> dataset_paths() const;

  Group open_group(const std::string& path) const;
  Group create_group(const std::string& path);  // creates missing intermediate groups
  Dataset open_dataset(const std::string& path) const;
  Dataset create_dataset(const std::string& path, ElementType type, const std::vector<int64_t>& shape,
                         const DatasetOptions& options = {});

  // Create-and-write conveniences (intermediate groups created).
  Dataset write_tensor(const std::string& path, const Tensor& tensor, const DatasetOptions& options = {});
  template <typename T>
  Dataset write_array(const std::string& path, const T* data, const std::vector<int64_t>& shape,
                      const DatasetOptions& options = {}) {
    Dataset dataset = create_dataset(path, element_type_of<T>(), shape, options);
    dataset.write(data, static_cast<size_t>(dataset.numel()));
    return dataset;
  }

 private:
  friend class File;
  using Object::Object;
};

class File {
 public:
  // Read-only. Distinct errors for a missing file, a file that is not HDF5, and a damaged or
  // truncated one.
  static File open(const std::string& path);
  // Creates, or truncates an existing file; read-write. userblock_bytes > 0 (512, 1024, ... a
  // power of two) reserves that many bytes at the start of the file for the caller's own
  // content (HDF5's user block), which HDF5 itself skips when opening.
  static File create(const std::string& path, int64_t userblock_bytes = 0);
  // An HDF5 file held in memory (a .keras archive's model.weights.h5): opened read-only from a
  // copy of `image`; `name` stands for it in errors.
  static File open_image(const std::vector<char>& image, const std::string& name);
  // A new, empty file that lives in memory only; image() gives its bytes.
  static File create_in_memory(const std::string& name);
  // The bytes of the file as it would be on disk (flushes first).
  std::vector<char> image();

  const std::string& path() const { return path_; }
  Group root() const;
  void flush();
  // Closes and reports failures (the destructor closes too but cannot report). Objects opened
  // from this file must be gone first, or the data is only written when the last one closes.
  void close();

 private:
  File(Handle handle, std::string path) : handle_(std::move(handle)), path_(std::move(path)) {}
  Handle handle_;
  std::string path_;
};

}  // namespace hisvid::io::h5
