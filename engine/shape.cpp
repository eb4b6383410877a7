#include "engine/shape.h"

#include "engine/error.h"

namespace hisvid {

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::vector<int64_t>(dims)) {}

Shape::Shape(const std::vector<int64_t>& dims) {
  if (dims.size() > static_cast<size_t>(kMaxRank)) {
    fail("shape of rank {} exceeds the maximum rank {}", dims.size(), kMaxRank);
  }
  rank_ = static_cast<int>(dims.size());
  for (int i = 0; i < rank_; ++i) {
    if (dims[i] < 0) fail("negative dimension {} at axis {} of a shape", dims[i], i);
    dims_[i] = dims[i];
  }
}

int64_t Shape::numel() const { return prod(0, rank_); }

int64_t Shape::prod(int begin, int end) const {
  int64_t n = 1;
  for (int i = begin; i < end; ++i) {
    if (__builtin_mul_overflow(n, dims_[i], &n))
      fail("shape {} has more elements than can be counted", str());
  }
  return n;
}

std::string Shape::str() const {
  std::string s = "(";
  for (int i = 0; i < rank_; ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(dims_[i]);
  }
  if (rank_ == 1) s += ",";
  return s + ")";
}

bool Shape::operator==(const Shape& other) const {
  if (rank_ != other.rank_) return false;
  for (int i = 0; i < rank_; ++i) {
    if (dims_[i] != other.dims_[i]) return false;
  }
  return true;
}

}  // namespace hisvid
