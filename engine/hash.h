// engine/hash.h — FNV-1a 64 (Fowler, Noll, Vo): the hash of the clip cache's key and of the
// weights the ranks of a data-parallel run compare. Not cryptographic; stable across builds.
#pragma once

#include <cstddef>
#include <cstdint>

namespace hisvid {

constexpr uint64_t kFnv1a64Basis = 14695981039346656037ull;

// Continues `hash` over `bytes` bytes at data (start from kFnv1a64Basis).
inline uint64_t fnv1a64(const void* data, size_t bytes, uint64_t hash = kFnv1a64Basis) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 1099511628211ull;
  return hash;
}

}  // namespace hisvid
