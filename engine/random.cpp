#include "engine/random.h"

#include "engine/dispatch.h"
#include "engine/error.h"
#include "kernels/philox.h"

namespace hisvid {

namespace {
void require_absolute(const Generator& g, const char* what) {
  if (g.relative()) fail("Generator::{}: a host-side draw inside a relative (captured) step", what);
}
}  // namespace

void Generator::begin_relative(const int64_t* base) {
  if (base == nullptr) fail("Generator::begin_relative: no base");
  if (base_ != nullptr) fail("Generator::begin_relative: already relative");
  base_ = base;
  relative_from_ = offset_;
}

uint64_t Generator::end_relative() {
  if (base_ == nullptr) fail("Generator::end_relative: not relative");
  base_ = nullptr;
  return offset_ - relative_from_;
}

Tensor Generator::uniform(const Shape& shape, double low, double high, DType dtype) {
  require_absolute(*this, "uniform");
  const RandomDraw draw = next();
  Tensor t = Tensor::empty(shape, dtype);
  with_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    T* out = t.data<T>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double u = philox_uniform(draw.seed, draw.offset, static_cast<uint64_t>(i));
      out[i] = static_cast<T>(low + (high - low) * u);
    }
  });
  return t;
}

Tensor Generator::normal(const Shape& shape, double mean, double stddev, DType dtype) {
  require_absolute(*this, "normal");
  const RandomDraw draw = next();
  Tensor t = Tensor::empty(shape, dtype);
  with_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    T* out = t.data<T>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double z = philox_normal(draw.seed, draw.offset, static_cast<uint64_t>(i));
      out[i] = static_cast<T>(mean + stddev * z);
    }
  });
  return t;
}

uint64_t Generator::below(uint64_t bound) {
  if (bound == 0) fail("Generator::below(0): empty range");
  require_absolute(*this, "below");
  const RandomDraw draw = next();
  const Philox4x32 r = philox_block(draw.seed, draw.offset, 0);
  const uint64_t bits = (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
  // 64 random bits reduced modulo bound: the bias is below bound / 2^64, negligible here.
  return bits % bound;
}

}  // namespace hisvid
