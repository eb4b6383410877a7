// io/hdf5.cpp — the RAII HDF5 wrapper: every identifier owned, every call checked, every failure
// an Error naming the file and object.
#include "io/hdf5.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <system_error>
#include <utility>

#include "engine/error.h"
#include "io/atomic_file.h"

namespace hisvid::io::h5 {

namespace {

// HDF5 prints its error stack to stderr by default; switched off (per thread, as HDF5 keeps
// one error stack per thread in thread-safe builds) before any call.
//
// Also, once per process and before HDF5 initialises: no exit-time cleanup. When a file's
// final flush fails (a full disk), HDF5 1.10 keeps the half-closed file in its tables and its
// atexit handler crashes closing it again; every file hisvid opens is closed by its RAII
// owner, so that handler has nothing else to do.
void silence_hdf5_errors() {
  static std::once_flag no_atexit;
  std::call_once(no_atexit, [] { H5dont_atexit(); });
  thread_local bool silenced = false;
  if (!silenced) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    silenced = true;
  }
}

herr_t keep_innermost(unsigned n, const H5E_error2_t* error, void* data) noexcept {
  if (n == 0 && error->desc != nullptr) {
    try {
      *static_cast<std::string*>(data) = error->desc;
    } catch (...) {
      return -1;
    }
  }
  return 0;
}

// The innermost description on HDF5's error stack (where the error was detected), then clears
// the stack; "" when nothing is pending.
std::string take_hdf5_reason() {
  std::string reason;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_innermost, &reason);
  H5Eclear2(H5E_DEFAULT);
  return reason;
}

[[noreturn]] void fail_at(const std::string& filename, const std::string& path, const std::string& problem) {
  const std::string reason = take_hdf5_reason();
  const std::string where = path.empty() ? filename : filename + ": " + path;
  if (reason.empty()) fail("{}: {}", where, problem);
  fail("{}: {} (HDF5: {})", where, problem, reason);
}

hid_t memory_type(ElementType type) {
  switch (type) {
    case ElementType::UInt8:
      return H5T_NATIVE_UINT8;
    case ElementType::Int64:
      return H5T_NATIVE_INT64;
    case ElementType::Float32:
      return H5T_NATIVE_FLOAT;
    case ElementType::Float64:
      return H5T_NATIVE_DOUBLE;
  }
  return H5I_INVALID_HID;
}

// Little-endian on disk, as h5py writes on x86 and ARM.
hid_t file_type(ElementType type) {
  switch (type) {
    case ElementType::UInt8:
      return H5T_STD_U8LE;
    case ElementType::Int64:
      return H5T_STD_I64LE;
    case ElementType::Float32:
      return H5T_IEEE_F32LE;
    case ElementType::Float64:
      return H5T_IEEE_F64LE;
  }
  return H5I_INVALID_HID;
}

// The ElementType of a stored datatype, if it is one of them.
bool classify(hid_t type, ElementType* out) {
  const H5T_class_t type_class = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  if (type_class == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    if (size != (is_signed ? 8 : 1)) return false;
    *out = is_signed ? ElementType::Int64 : ElementType::UInt8;
    return true;
  }
  if (type_class == H5T_FLOAT) {
    if (size != 4 && size != 8) return false;
    *out = size == 4 ? ElementType::Float32 : ElementType::Float64;
    return true;
  }
  return false;
}

std::string describe_type(hid_t type) {
  const size_t bits = H5Tget_size(type) * 8;
  switch (H5Tget_class(type)) {
    case H5T_INTEGER:
      return (H5Tget_sign(type) == H5T_SGN_2 ? "int" : "uint") + std::to_string(bits);
    case H5T_FLOAT:
      return "float" + std::to_string(bits);
    case H5T_STRING:
      return H5Tis_variable_str(type) > 0 ? "variable-length string" : "fixed-length string";
    case H5T_COMPOUND:
      return "compound";
    case H5T_ENUM:
      return "enum";
    case H5T_ARRAY:
      return "array";
    case H5T_VLEN:
      return "variable-length sequence";
    case H5T_REFERENCE:
      return "reference";
    case H5T_OPAQUE:
      return "opaque";
    case H5T_BITFIELD:
      return "bitfield";
    default:
      return "unknown type";
  }
}

// The element count of dims; -1 when it does not fit in int64 (a damaged or hostile header).
int64_t product(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
  }
  return n;
}

// Dimensions of a dataspace: {} for a scalar; false for a null dataspace or on failure.
bool extent(hid_t space, std::vector<int64_t>* dims) {
  const H5S_class_t space_class = H5Sget_simple_extent_type(space);
  dims->clear();
  if (space_class == H5S_SCALAR) return true;
  if (space_class != H5S_SIMPLE) return false;
  const int rank = H5Sget_simple_extent_ndims(space);
  if (rank < 0) return false;
  std::vector<hsize_t> raw(static_cast<size_t>(rank));
  if (H5Sget_simple_extent_dims(space, raw.data(), nullptr) < 0) return false;
  for (hsize_t d : raw) {
    if (d > static_cast<hsize_t>(INT64_MAX)) return false;
    dims->push_back(static_cast<int64_t>(d));
  }
  return product(*dims) >= 0;  // an element count that overflows is no usable extent
}

std::string shape_text(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i > 0 ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

std::vector<hsize_t> to_hsize(const std::vector<int64_t>& dims) { return {dims.begin(), dims.end()}; }

Handle make_dataspace(const std::vector<int64_t>& dims, const std::vector<int64_t>& max_dims = {}) {
  if (dims.empty()) return Handle(H5Screate(H5S_SCALAR), H5Sclose);
  const std::vector<hsize_t> current = to_hsize(dims);
  std::vector<hsize_t> maximum = to_hsize(max_dims);
  return Handle(H5Screate_simple(static_cast<int>(current.size()), current.data(),
                                 max_dims.empty() ? nullptr : maximum.data()),
                H5Sclose);
}

// A fixed-length, NUL-padded ASCII string type of `size` bytes (h5py's numpy bytes).
Handle fixed_string_type(size_t size) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  if (!type.valid() || H5Tset_size(type.get(), std::max<size_t>(size, 1)) < 0 ||
      H5Tset_strpad(type.get(), H5T_STR_NULLPAD) < 0 || H5Tset_cset(type.get(), H5T_CSET_ASCII) < 0) {
    return Handle();
  }
  return type;
}

// Frees the strings HDF5 allocated when reading variable-length strings.
class VlenStrings {
 public:
  VlenStrings(hid_t type, hid_t space, size_t count)
      : type_(type), space_(space), pointers_(count, nullptr) {}
  ~VlenStrings() {
#if H5_VERSION_GE(1, 12, 0)
    H5Treclaim(type_, space_, H5P_DEFAULT, pointers_.data());
#else
    H5Dvlen_reclaim(type_, space_, H5P_DEFAULT, pointers_.data());
#endif
  }
  VlenStrings(const VlenStrings&) = delete;
  VlenStrings& operator=(const VlenStrings&) = delete;
  char** data() { return pointers_.data(); }
  std::string at(size_t i) const { return pointers_[i] != nullptr ? pointers_[i] : ""; }

 private:
  hid_t type_;
  hid_t space_;
  std::vector<char*> pointers_;
};

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t slash = std::min(path.find('/', start), path.size());
    if (slash > start) parts.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return parts;
}

herr_t collect_name(hid_t, const char* name, const H5L_info_t*, void* data) noexcept {
  try {
    static_cast<std::vector<std::string>*>(data)->push_back(name);
  } catch (...) {
    return -1;
  }
  return 0;
}

herr_t collect_attribute_name(hid_t, const char* name, const H5A_info_t*, void* data) noexcept {
  try {
    static_cast<std::vector<std::string>*>(data)->push_back(name);
  } catch (...) {
    return -1;
  }
  return 0;
}

// What a path names: a group, a dataset, something else, or nothing (missing link or missing
// intermediate group).
enum class Kind { None, Group, Dataset, Other };

Kind kind_of(hid_t location, const std::string& path) {
  const bool absolute = !path.empty() && path[0] == '/';
  const std::vector<std::string> parts = split_path(path);
  if (parts.empty()) return absolute ? Kind::Group : Kind::None;
  std::string prefix = absolute ? "/" : "";
  for (size_t i = 0; i < parts.size(); ++i) {
    prefix += (i > 0 ? "/" : "") + parts[i];
    if (H5Lexists(location, prefix.c_str(), H5P_DEFAULT) <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return Kind::None;
    }
    Handle object(H5Oopen(location, prefix.c_str(), H5P_DEFAULT), H5Oclose);
    if (!object.valid()) {  // a dangling soft link or an unreachable external one
      H5Eclear2(H5E_DEFAULT);
      return Kind::None;
    }
    const H5I_type_t type = H5Iget_type(object.get());
    const bool last = i + 1 == parts.size();
    if (!last && type != H5I_GROUP) return Kind::None;
    if (last) {
      if (type == H5I_GROUP) return Kind::Group;
      if (type == H5I_DATASET) return Kind::Dataset;
      return Kind::Other;
    }
  }
  return Kind::None;
}

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::Group:
      return "a group";
    case Kind::Dataset:
      return "a dataset";
    case Kind::Other:
      return "a named datatype";
    case Kind::None:
      break;
  }
  return "missing";
}

// A link creation property list that creates missing intermediate groups.
Handle intermediate_groups_lcpl() {
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  if (!lcpl.valid() || H5Pset_create_intermediate_group(lcpl.get(), 1) < 0) return Handle();
  return lcpl;
}

}  // namespace

const char* element_type_name(ElementType type) {
  switch (type) {
    case ElementType::UInt8:
      return "uint8";
    case ElementType::Int64:
      return "int64";
    case ElementType::Float32:
      return "float32";
    case ElementType::Float64:
      return "float64";
  }
  return "?";
}

// --- Handle ---------------------------------------------------------------------------------

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = other.id_;
    closer_ = other.closer_;
    other.id_ = H5I_INVALID_HID;
  }
  return *this;
}

herr_t Handle::reset() {
  if (id_ < 0) return 0;
  const herr_t status = closer_(id_);
  id_ = H5I_INVALID_HID;
  return status;
}

// --- Object: attributes ---------------------------------------------------------------------

Object::Object(Handle handle, std::string filename, std::string path)
    : handle_(std::move(handle)), filename_(std::move(filename)), path_(std::move(path)) {}

hid_t Object::id() const {
  silence_hdf5_errors();
  return handle_.get();
}

void Object::fail_here(const std::string& problem) const { fail_at(filename_, path_, problem); }

std::string Object::child_path(const std::string& relative) const {
  if (!relative.empty() && relative[0] == '/') return relative;
  return path_ == "/" ? "/" + relative : path_ + "/" + relative;
}

bool Object::has_attribute(const std::string& name) const {
  const htri_t exists = H5Aexists(id(), name.c_str());
  if (exists < 0) fail_here("cannot look up attribute '" + name + "'");
  return exists > 0;
}

std::vector<std::string> Object::attribute_names() const {
  std::vector<std::string> names;
  hsize_t index = 0;
  if (H5Aiterate2(id(), H5_INDEX_NAME, H5_ITER_INC, &index, collect_attribute_name, &names) < 0) {
    fail_here("cannot list attributes");
  }
  return names;
}

Handle Object::open_attribute(const std::string& name) const {
  if (!has_attribute(name)) fail_here("no attribute '" + name + "'");
  Handle attribute(H5Aopen(id(), name.c_str(), H5P_DEFAULT), H5Aclose);
  if (!attribute.valid()) fail_here("cannot open attribute '" + name + "'");
  return attribute;
}

std::vector<std::string> Object::read_string_list_attribute(const std::string& name) const {
  const Handle attribute = open_attribute(name);
  const std::string what = "attribute '" + name + "'";
  Handle space(H5Aget_space(attribute.get()), H5Sclose);
  Handle type(H5Aget_type(attribute.get()), H5Tclose);
  std::vector<int64_t> dims;
  if (!space.valid() || !type.valid() || !extent(space.get(), &dims)) {
    fail_here("cannot read the type and shape of " + what);
  }
  const size_t count = static_cast<size_t>(product(dims));
  const H5T_class_t type_class = H5Tget_class(type.get());
  if (type_class != H5T_STRING) {
    if ((type_class == H5T_FLOAT || type_class == H5T_INTEGER) && count == 0) return {};
    fail_here(what + " is " + describe_type(type.get()) + ", expected a string");
  }
  std::vector<std::string> values;
  values.reserve(count);
  if (H5Tis_variable_str(type.get()) > 0) {
    Handle memory(H5Tcopy(H5T_C_S1), H5Tclose);
    if (!memory.valid() || H5Tset_size(memory.get(), H5T_VARIABLE) < 0 ||
        H5Tset_cset(memory.get(), H5Tget_cset(type.get())) < 0) {
      fail_here("cannot make a string type to read " + what);
    }
    VlenStrings strings(memory.get(), space.get(), count);
    if (H5Aread(attribute.get(), memory.get(), strings.data()) < 0) fail_here("cannot read " + what);
    for (size_t i = 0; i < count; ++i) values.push_back(strings.at(i));
    return values;
  }
  const size_t size = H5Tget_size(type.get());
  const H5T_str_t pad = H5Tget_strpad(type.get());
  Handle memory(H5Tcopy(H5T_C_S1), H5Tclose);
  if (size == 0 || !memory.valid() || H5Tset_size(memory.get(), size) < 0 ||
      H5Tset_strpad(memory.get(), pad) < 0 || H5Tset_cset(memory.get(), H5Tget_cset(type.get())) < 0) {
    fail_here("cannot make a string type to read " + what);
  }
  std::string buffer(count * size, '\0');
  if (count > 0 && H5Aread(attribute.get(), memory.get(), buffer.data()) < 0)
    fail_here("cannot read " + what);
  for (size_t i = 0; i < count; ++i) {
    std::string value = buffer.substr(i * size, size);
    if (pad == H5T_STR_SPACEPAD) {
      value.erase(value.find_last_not_of(' ') + 1);
    } else {
      value.erase(std::min(value.find('\0'), value.size()));
    }
    values.push_back(std::move(value));
  }
  return values;
}

std::string Object::read_string_attribute(const std::string& name) const {
  std::vector<std::string> values = read_string_list_attribute(name);
  if (values.size() != 1) {
    fail_here("attribute '" + name + "' holds " + std::to_string(values.size()) + " strings, expected one");
  }
  return std::move(values[0]);
}

namespace {

// Reads a one-element numeric attribute as `memory` (a native type); `accept_float` allows
// float attributes.
void read_number_attribute(const Object& object, hid_t attribute, const std::string& name, hid_t memory,
                           bool accept_float, void* out) {
  Handle space(H5Aget_space(attribute), H5Sclose);
  Handle type(H5Aget_type(attribute), H5Tclose);
  std::vector<int64_t> dims;
  if (!space.valid() || !type.valid() || !extent(space.get(), &dims)) {
    fail_at(object.filename(), object.path(), "cannot read the type and shape of attribute '" + name + "'");
  }
  const H5T_class_t type_class = H5Tget_class(type.get());
  if (type_class != H5T_INTEGER && !(accept_float && type_class == H5T_FLOAT)) {
    fail_at(object.filename(), object.path(),
            "attribute '" + name + "' is " + describe_type(type.get()) + ", expected " +
                (accept_float ? "a number" : "an integer"));
  }
  if (product(dims) != 1) {
    fail_at(object.filename(), object.path(),
            "attribute '" + name + "' has shape " + shape_text(dims) + ", expected a single value");
  }
  if (H5Aread(attribute, memory, out) < 0) {
    fail_at(object.filename(), object.path(), "cannot read attribute '" + name + "'");
  }
}

}  // namespace

int64_t Object::read_int64_attribute(const std::string& name) const {
  const Handle attribute = open_attribute(name);
  int64_t value = 0;
  read_number_attribute(*this, attribute.get(), name, H5T_NATIVE_INT64, false, &value);
  return value;
}

double Object::read_double_attribute(const std::string& name) const {
  const Handle attribute = open_attribute(name);
  double value = 0;
  read_number_attribute(*this, attribute.get(), name, H5T_NATIVE_DOUBLE, true, &value);
  return value;
}

namespace {

// Replaces attribute `name` of `object` by one of the given type and shape, written from `data`
// (nothing written when the shape has no elements).
void replace_attribute(const Object& object, hid_t location, const std::string& name, hid_t type,
                       const std::vector<int64_t>& dims, bool scalar, const void* data) {
  const auto failed = [&](const std::string& problem) {
    fail_at(object.filename(), object.path(), problem + " attribute '" + name + "'");
  };
  const htri_t exists = H5Aexists(location, name.c_str());
  if (exists < 0) failed("cannot look up");
  if (exists > 0 && H5Adelete(location, name.c_str()) < 0) failed("cannot replace");
  Handle space = scalar ? make_dataspace({}) : make_dataspace(dims);
  if (!space.valid()) failed("cannot make the dataspace of");
  Handle attribute(H5Acreate2(location, name.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attribute.valid()) failed("cannot create");
  if ((scalar || product(dims) > 0) && H5Awrite(attribute.get(), type, data) < 0) failed("cannot write");
  if (attribute.reset() < 0) failed("cannot close");
}

}  // namespace

void Object::write_string_attribute(const std::string& name, const std::string& value) {
  Handle type = fixed_string_type(value.size());
  if (!type.valid()) fail_here("cannot make a string type for attribute '" + name + "'");
  std::string buffer = value;
  buffer.resize(std::max<size_t>(value.size(), 1), '\0');
  replace_attribute(*this, id(), name, type.get(), {}, true, buffer.data());
}

void Object::write_string_list_attribute(const std::string& name, const std::vector<std::string>& values) {
  if (values.empty()) {
    replace_attribute(*this, id(), name, H5T_IEEE_F64LE, {0}, false, nullptr);
    return;
  }
  size_t size = 1;
  for (const std::string& value : values) size = std::max(size, value.size());
  Handle type = fixed_string_type(size);
  if (!type.valid()) fail_here("cannot make a string type for attribute '" + name + "'");
  std::string buffer(values.size() * size, '\0');
  for (size_t i = 0; i < values.size(); ++i) buffer.replace(i * size, values[i].size(), values[i]);
  replace_attribute(*this, id(), name, type.get(), {static_cast<int64_t>(values.size())}, false,
                    buffer.data());
}

void Object::write_int64_attribute(const std::string& name, int64_t value) {
  replace_attribute(*this, id(), name, H5T_STD_I64LE, {}, true, &value);
}

void Object::write_double_attribute(const std::string& name, double value) {
  replace_attribute(*this, id(), name, H5T_IEEE_F64LE, {}, true, &value);
}

// --- Dataset --------------------------------------------------------------------------------

std::vector<int64_t> Dataset::shape() const {
  Handle space(H5Dget_space(id()), H5Sclose);
  std::vector<int64_t> dims;
  if (!space.valid()) fail_here("cannot read the dataspace");
  if (!extent(space.get(), &dims)) fail_here("has a null or unreadable dataspace");
  return dims;
}

int64_t Dataset::numel() const { return product(shape()); }

int64_t Dataset::readable_numel() const {
  const int64_t n = numel();
  Handle type(H5Dget_type(id()), H5Tclose);
  if (!type.valid()) fail_here("cannot read the datatype");
  const int64_t element_bytes = static_cast<int64_t>(H5Tget_size(type.get()));
  int64_t bytes = 0;
  if (element_bytes <= 0 || __builtin_mul_overflow(n, element_bytes, &bytes) || bytes > kMaxReadBytes) {
    fail_here("declares shape " + shape_text(shape()) + ", more than the " +
              std::to_string(kMaxReadBytes >> 30) + " GiB one dataset may hold here (damaged file?)");
  }
  if (bytes == 0) return n;
  Handle dcpl(H5Dget_create_plist(id()), H5Pclose);
  if (!dcpl.valid()) fail_here("cannot read the dataset's layout");
  const H5D_layout_t layout = H5Pget_layout(dcpl.get());
  if (layout == H5D_COMPACT) return n;  // the data lives in the object header, already read
  const int filters = H5Pget_nfilters(dcpl.get());
  const int64_t stored = static_cast<int64_t>(H5Dget_storage_size(id()));
  const bool fits = filters > 0 ? bytes / kMaxDeflateRatio <= stored : bytes <= stored;
  if (!fits) {
    fail_here("declares shape " + shape_text(shape()) + " (" + std::to_string(bytes) +
              " bytes) but the file stores " + std::to_string(stored) +
              " bytes for it: truncated or damaged");
  }
  return n;
}

int64_t Dataset::row_numel() const {
  const std::vector<int64_t> dims = shape();
  if (dims.empty()) fail_here("is a scalar dataset, which has no rows");
  return product({dims.begin() + 1, dims.end()});
}

bool Dataset::has_element_type() const {
  Handle type(H5Dget_type(id()), H5Tclose);
  if (!type.valid()) fail_here("cannot read the datatype");
  ElementType element = ElementType::Float32;
  return classify(type.get(), &element);
}

ElementType Dataset::element_type() const {
  Handle type(H5Dget_type(id()), H5Tclose);
  if (!type.valid()) fail_here("cannot read the datatype");
  ElementType element = ElementType::Float32;
  if (!classify(type.get(), &element)) {
    fail_here("has type " + describe_type(type.get()) + ", not one of uint8, int64, float32, float64");
  }
  return element;
}

std::string Dataset::type_name() const {
  Handle type(H5Dget_type(id()), H5Tclose);
  if (!type.valid()) fail_here("cannot read the datatype");
  ElementType element = ElementType::Float32;
  return classify(type.get(), &element) ? element_type_name(element) : describe_type(type.get());
}

bool Dataset::holds_floats() const {
  Handle type(H5Dget_type(id()), H5Tclose);
  if (!type.valid()) fail_here("cannot read the datatype");
  return H5Tget_class(type.get()) == H5T_FLOAT;
}

void Dataset::read_raw(ElementType type, void* out, size_t count) const {
  if (!has_element_type() || element_type() != type) {
    fail_here("is " + type_name() + ", expected " + element_type_name(type));
  }
  const int64_t n = readable_numel();
  if (static_cast<int64_t>(count) != n) {
    fail_here("has " + std::to_string(n) + " elements, " + std::to_string(count) + " requested");
  }
  if (n > 0 && H5Dread(id(), memory_type(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
    fail_here("cannot read the data (damaged or truncated file?)");
  }
}

void Dataset::write_raw(ElementType type, const void* data, size_t count) {
  if (!has_element_type() || element_type() != type) {
    fail_here("is " + type_name() + ", cannot write " + element_type_name(type) + " values");
  }
  const int64_t n = numel();
  if (static_cast<int64_t>(count) != n) {
    fail_here("has " + std::to_string(n) + " elements, " + std::to_string(count) + " given");
  }
  if (n > 0 && H5Dwrite(id(), memory_type(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
    fail_here("cannot write the data");
  }
}

Tensor Dataset::read_tensor() const {
  if (!has_element_type() || element_type() != ElementType::Float32) {
    fail_here("is " + type_name() + ", expected float32");
  }
  return read_tensor_converted();
}

Tensor Dataset::read_tensor_converted() const {
  Handle type(H5Dget_type(id()), H5Tclose);
  if (!type.valid()) fail_here("cannot read the datatype");
  const H5T_class_t type_class = H5Tget_class(type.get());
  if (type_class != H5T_INTEGER && type_class != H5T_FLOAT) {
    fail_here("is " + describe_type(type.get()) + ", expected numbers");
  }
  const std::vector<int64_t> dims = shape();
  if (dims.size() > static_cast<size_t>(Shape::kMaxRank)) {
    fail_here("has shape " + shape_text(dims) + " of rank " + std::to_string(dims.size()) +
              ", above the maximum tensor rank " + std::to_string(Shape::kMaxRank));
  }
  readable_numel();
  Tensor tensor = Tensor::empty(Shape(dims), DType::Float32, Device::cpu());
  if (tensor.numel() > 0 &&
      H5Dread(id(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, tensor.data<float>()) < 0) {
    fail_here("cannot read the data (damaged or truncated file?)");
  }
  return tensor;
}

void Dataset::write_tensor(const Tensor& tensor) {
  if (!tensor.defined()) fail_here("cannot write an undefined tensor");
  if (tensor.dtype() != DType::Float32) fail_here("cannot write " + tensor.describe() + ", expected float32");
  if (tensor.shape().vec() != shape()) {
    fail_here("has shape " + shape_text(shape()) + ", cannot write " + tensor.describe());
  }
  const Tensor host = tensor.device().is_cpu() ? tensor : tensor.to(Device::cpu());
  write_raw(ElementType::Float32, host.data<float>(), static_cast<size_t>(host.numel()));
}

int64_t Dataset::rows_numel(int64_t begin, int64_t count) const {
  const std::vector<int64_t> dims = shape();
  if (dims.empty()) fail_here("is a scalar dataset, which has no rows");
  if (begin < 0 || count < 0 || begin + count > dims[0]) {
    fail_here("rows [" + std::to_string(begin) + ", " + std::to_string(begin + count) +
              ") are outside the first axis of shape " + shape_text(dims));
  }
  return count * product({dims.begin() + 1, dims.end()});
}

void Dataset::rows_raw(int64_t begin, int64_t count, ElementType type, void* out, const void* in) const {
  const bool reading = out != nullptr;
  if (!has_element_type() || element_type() != type) {
    fail_here("is " + type_name() + (reading ? ", expected " : ", cannot write ") + element_type_name(type));
  }
  rows_numel(begin, count);
  if (count == 0) return;
  std::vector<int64_t> dims = shape();
  std::vector<hsize_t> start(dims.size(), 0);
  start[0] = static_cast<hsize_t>(begin);
  dims[0] = count;
  const std::vector<hsize_t> block = to_hsize(dims);
  Handle file_space(H5Dget_space(id()), H5Sclose);
  Handle memory_space = make_dataspace(dims);
  if (!file_space.valid() || !memory_space.valid() ||
      H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, block.data(), nullptr) <
          0) {
    fail_here("cannot select rows [" + std::to_string(begin) + ", " + std::to_string(begin + count) + ")");
  }
  const herr_t status =
      reading ? H5Dread(id(), memory_type(type), memory_space.get(), file_space.get(), H5P_DEFAULT, out)
              : H5Dwrite(id(), memory_type(type), memory_space.get(), file_space.get(), H5P_DEFAULT, in);
  if (status < 0) {
    fail_here(std::string("cannot ") + (reading ? "read" : "write") + " rows [" + std::to_string(begin) +
              ", " + std::to_string(begin + count) + ")");
  }
}

void Dataset::resize_rows(int64_t rows) {
  std::vector<int64_t> dims = shape();
  if (dims.empty()) fail_here("is a scalar dataset, which has no rows");
  if (rows < 0) fail_here("cannot resize to " + std::to_string(rows) + " rows");
  dims[0] = rows;
  const std::vector<hsize_t> size = to_hsize(dims);
  if (H5Dset_extent(id(), size.data()) < 0) {
    fail_here("cannot resize to " + std::to_string(rows) + " rows (only chunked datasets can)");
  }
}

// --- Group ----------------------------------------------------------------------------------

bool Group::exists(const std::string& path) const { return kind_of(id(), path) != Kind::None; }

bool Group::is_group(const std::string& path) const { return kind_of(id(), path) == Kind::Group; }

bool Group::is_dataset(const std::string& path) const { return kind_of(id(), path) == Kind::Dataset; }

std::vector<std::string> Group::children() const {
  std::vector<std::string> names;
  hsize_t index = 0;
  if (H5Literate(id(), H5_INDEX_NAME, H5_ITER_INC, &index, collect_name, &names) < 0) {
    fail_here("cannot list the members of the group");
  }
  return names;
}

std::vector<std::string> Group::dataset_paths() const {
  std::vector<std::string> paths;
  for (const std::string& name : children()) {
    const Kind kind = kind_of(id(), name);
    if (kind == Kind::Dataset) {
      paths.push_back(name);
    } else if (kind == Kind::Group) {
      for (const std::string& below : open_group(name).dataset_paths()) paths.push_back(name + "/" + below);
    }
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

Group Group::open_group(const std::string& path) const {
  const Kind kind = kind_of(id(), path);
  if (kind != Kind::Group) {
    fail_at(filename(), child_path(path),
            kind == Kind::None ? "no such group" : std::string("is ") + kind_name(kind) + ", not a group");
  }
  Handle group(H5Gopen2(id(), path.c_str(), H5P_DEFAULT), H5Gclose);
  if (!group.valid()) fail_at(filename(), child_path(path), "cannot open the group");
  return Group(std::move(group), filename(), child_path(path));
}

Group Group::create_group(const std::string& path) {
  const std::string full = child_path(path);
  if (exists(path)) fail_at(filename(), full, "cannot create a group: the path exists");
  Handle lcpl = intermediate_groups_lcpl();
  if (!lcpl.valid()) fail_at(filename(), full, "cannot make a link creation property list");
  Handle group(H5Gcreate2(id(), path.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  if (!group.valid()) fail_at(filename(), full, "cannot create the group");
  return Group(std::move(group), filename(), full);
}

Dataset Group::open_dataset(const std::string& path) const {
  const Kind kind = kind_of(id(), path);
  if (kind != Kind::Dataset) {
    fail_at(
        filename(), child_path(path),
        kind == Kind::None ? "no such dataset" : std::string("is ") + kind_name(kind) + ", not a dataset");
  }
  Handle dataset(H5Dopen2(id(), path.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dataset.valid()) fail_at(filename(), child_path(path), "cannot open the dataset");
  return Dataset(std::move(dataset), filename(), child_path(path));
}

Dataset Group::create_dataset(const std::string& path, ElementType type, const std::vector<int64_t>& shape,
                              const DatasetOptions& options) {
  const std::string full = child_path(path);
  const auto failed = [&](const std::string& problem) { fail_at(filename(), full, problem); };
  for (int64_t d : shape) {
    if (d < 0) failed("cannot create a dataset of shape " + shape_text(shape));
  }
  const bool chunked = !options.chunk.empty();
  if (chunked) {
    if (options.chunk.size() != shape.size()) {
      failed("chunk shape " + shape_text(options.chunk) + " does not match the rank of shape " +
             shape_text(shape));
    }
    for (size_t i = 0; i < shape.size(); ++i) {
      if (options.chunk[i] < 1 || (i > 0 && options.chunk[i] > shape[i])) {
        failed("chunk shape " + shape_text(options.chunk) + " does not fit shape " + shape_text(shape));
      }
    }
  }
  if (options.gzip_level < 0 || options.gzip_level > 9) {
    failed("gzip level " + std::to_string(options.gzip_level) + " is outside 0..9");
  }
  if (options.gzip_level > 0 && !chunked) failed("gzip compression needs a chunk shape");
  if (options.gzip_level > 0 && H5Zfilter_avail(H5Z_FILTER_DEFLATE) <= 0) {
    failed("gzip compression is not available in this HDF5 library");
  }
  if (exists(path)) failed("cannot create a dataset: the path exists");

  std::vector<int64_t> max_dims;
  if (chunked) {
    max_dims = shape;
    max_dims[0] = static_cast<int64_t>(H5S_UNLIMITED);
  }
  Handle space = make_dataspace(shape, max_dims);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  Handle lcpl = intermediate_groups_lcpl();
  if (!space.valid() || !dcpl.valid() || !lcpl.valid()) failed("cannot make the dataspace or property lists");
  if (chunked) {
    const std::vector<hsize_t> chunk = to_hsize(options.chunk);
    if (H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()) < 0)
      failed("cannot set the chunk shape");
  }
  if (options.gzip_level > 0 && H5Pset_deflate(dcpl.get(), static_cast<unsigned>(options.gzip_level)) < 0) {
    failed("cannot set gzip compression");
  }
  Handle dataset(
      H5Dcreate2(id(), path.c_str(), file_type(type), space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT),
      H5Dclose);
  if (!dataset.valid()) failed("cannot create the dataset");
  return Dataset(std::move(dataset), filename(), full);
}

Dataset Group::write_tensor(const std::string& path, const Tensor& tensor, const DatasetOptions& options) {
  if (!tensor.defined()) fail_at(filename(), child_path(path), "cannot write an undefined tensor");
  if (tensor.dtype() != DType::Float32) {
    fail_at(filename(), child_path(path), "cannot write " + tensor.describe() + ", expected float32");
  }
  Dataset dataset = create_dataset(path, ElementType::Float32, tensor.shape().vec(), options);
  dataset.write_tensor(tensor);
  return dataset;
}

// --- File -----------------------------------------------------------------------------------

File File::open(const std::string& path) {
  silence_hdf5_errors();
  std::error_code error;
  const std::filesystem::file_status status = std::filesystem::status(path, error);
  if (!std::filesystem::exists(status)) fail("{}: {}", path, missing_reason(path));
  if (std::filesystem::is_directory(status)) fail("{}: is a directory, not an HDF5 file", path);
  if (std::filesystem::file_size(path, error) == 0 && !error) fail("{}: is empty, not an HDF5 file", path);
#if H5_VERSION_GE(1, 12, 0)
  const htri_t is_hdf5 = H5Fis_accessible(path.c_str(), H5P_DEFAULT);
#else
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
#endif
  if (is_hdf5 < 0) fail_at(path, "", "cannot read the file");
  if (is_hdf5 == 0) fail("{}: not an HDF5 file (no HDF5 signature)", path);
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.valid()) {
    const std::string reason = take_hdf5_reason();
    // HDF5 locks a file it writes (h5py in a notebook, a Keras ModelCheckpoint saving): the file
    // may be whole, and reading it while it changes is what the lock prevents.
    if (reason.find("unable to lock file") != std::string::npos) {
      // EAGAIN / EWOULDBLOCK: the lock is held; any other errno: the file system has no locks.
      if (reason.find("errno = 11,") != std::string::npos ||
          reason.find("temporarily unavailable") != std::string::npos) {
        fail(
            "{}: cannot open the HDF5 file: another process has it open for writing (HDF5: {}); wait for it "
            "to finish or close the file there",
            path, reason);
      }
      fail(
          "{}: cannot open the HDF5 file: its file system refuses HDF5's file lock (HDF5: {}); where files "
          "are "
          "not written while they are read, set HDF5_USE_FILE_LOCKING=FALSE",
          path, reason);
    }
    fail("{}: cannot open the HDF5 file: damaged or truncated{}", path,
         reason.empty() ? "" : " (HDF5: " + reason + ")");
  }
  return File(std::move(file), path);
}

File File::create(const std::string& path, int64_t userblock_bytes) {
  silence_hdf5_errors();
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code error;
  if (!parent.empty() && !std::filesystem::is_directory(parent, error)) {
    fail("{}: cannot create the file: directory '{}' does not exist", path, parent.string());
  }
  // The 1.8 format (both bounds) stores attributes over 64 KB (a long model_config) and stays
  // readable by every HDF5 from 1.8 on.
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fapl.valid() || H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_V18) < 0) {
    fail_at(path, "", "cannot make a file access property list");
  }
  Handle fcpl(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
  if (!fcpl.valid() ||
      (userblock_bytes > 0 && H5Pset_userblock(fcpl.get(), static_cast<hsize_t>(userblock_bytes)) < 0)) {
    fail_at(path, "",
            "cannot make a file creation property list (user block " + std::to_string(userblock_bytes) + ")");
  }
  Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get()), H5Fclose);
  if (!file.valid()) fail_at(path, "", "cannot create the HDF5 file");
  return File(std::move(file), path);
}

File File::open_image(const std::vector<char>& image, const std::string& name) {
  silence_hdf5_errors();
  constexpr char kSignature[] = "\x89HDF\r\n\x1a\n";
  if (image.size() < 8 || std::memcmp(image.data(), kSignature, 8) != 0) {
    fail("{}: not an HDF5 file (no HDF5 signature)", name);
  }
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  // The core driver with no backing store: the file lives in memory, HDF5 copies the image.
  if (!fapl.valid() || H5Pset_fapl_core(fapl.get(), 1 << 20, 0) < 0 ||
      H5Pset_file_image(fapl.get(), const_cast<char*>(image.data()), image.size()) < 0) {
    fail_at(name, "", "cannot set up an in-memory file");
  }
  Handle file(H5Fopen(name.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose);
  if (!file.valid()) fail_at(name, "", "cannot open the HDF5 file: damaged or truncated");
  return File(std::move(file), name);
}

File File::create_in_memory(const std::string& name) {
  silence_hdf5_errors();
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  // HDF5's default (earliest) format, as h5py writes Keras's weights: its superblock carries no
  // checksum, which H5Fget_file_image would leave stale in a 1.8-format image.
  if (!fapl.valid() || H5Pset_fapl_core(fapl.get(), 1 << 20, 0) < 0) {
    fail_at(name, "", "cannot set up an in-memory file");
  }
  Handle file(H5Fcreate(name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose);
  if (!file.valid()) fail_at(name, "", "cannot create the in-memory HDF5 file");
  return File(std::move(file), name);
}

std::vector<char> File::image() {
  flush();
  const ssize_t size = H5Fget_file_image(handle_.get(), nullptr, 0);
  if (size < 0) fail_at(path_, "", "cannot get the file's image");
  std::vector<char> bytes(static_cast<size_t>(size));
  if (H5Fget_file_image(handle_.get(), bytes.data(), bytes.size()) != size) {
    fail_at(path_, "", "cannot copy the file's image");
  }
  return bytes;
}

Group File::root() const {
  silence_hdf5_errors();
  if (!handle_.valid()) fail("{}: the file is closed", path_);
  Handle group(H5Gopen2(handle_.get(), "/", H5P_DEFAULT), H5Gclose);
  if (!group.valid()) fail_at(path_, "/", "cannot open the root group");
  return Group(std::move(group), path_, "/");
}

void File::flush() {
  silence_hdf5_errors();
  if (!handle_.valid()) fail("{}: the file is closed", path_);
  if (H5Fflush(handle_.get(), H5F_SCOPE_GLOBAL) < 0) fail_at(path_, "", "cannot flush the file");
}

void File::close() {
  silence_hdf5_errors();
  if (!handle_.valid()) return;
  const ssize_t open_objects =
      H5Fget_obj_count(handle_.get(), H5F_OBJ_DATASET | H5F_OBJ_GROUP | H5F_OBJ_DATATYPE | H5F_OBJ_ATTR);
  if (open_objects < 0) fail_at(path_, "", "cannot count the open objects");
  if (open_objects > 0) {
    fail("{}: cannot close the file while {} groups, datasets or attributes of it are open", path_,
         open_objects);
  }
  if (handle_.reset() < 0) fail_at(path_, "", "cannot close the file");
}

}  // namespace hisvid::io::h5
