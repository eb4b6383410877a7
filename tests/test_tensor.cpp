// Tensor: creation, shapes, dtype conversion, views, copies, device handling.
#include <gtest/gtest.h>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/tensor.h"

namespace hisvid {
namespace {

TEST(Tensor, CreationAndProperties) {
  const Tensor t = Tensor::zeros({2, 20, 8, 8, 3});
  EXPECT_EQ(t.rank(), 5);
  EXPECT_EQ(t.numel(), 2 * 20 * 8 * 8 * 3);
  EXPECT_EQ(t.dim(-1), 3);
  EXPECT_EQ(t.dtype(), DType::Float32);
  EXPECT_TRUE(t.device().is_cpu());
  EXPECT_EQ(t.nbytes(), static_cast<size_t>(t.numel()) * 4);
  EXPECT_EQ(t.shape().str(), "(2, 20, 8, 8, 3)");
  EXPECT_EQ(Shape{7}.str(), "(7,)");
  EXPECT_EQ(t.describe(), "float32 (2, 20, 8, 8, 3) on cpu");
  for (double v : t.to_vector()) ASSERT_EQ(v, 0.0);
  EXPECT_EQ(Tensor::full({3}, 2.5, DType::Float64).to_vector(), (std::vector<double>{2.5, 2.5, 2.5}));
  EXPECT_EQ(Tensor::scalar(4.0).item(), 4.0);
}

TEST(Tensor, RankAndDimensionLimits) {
  EXPECT_THROW(Shape({1, 2, 3, 4, 5, 6}), Error);
  EXPECT_THROW(Shape({2, -1}), Error);
  EXPECT_THROW(Tensor::zeros({2, 3}).dim(2), Error);
  // An element count past int64 (a damaged file's dataset header) is an error, not a wrap.
  EXPECT_THROW(Shape({20, 922337203685477581}).numel(), Error);
  EXPECT_EQ(Shape({3, 1 << 20, 1 << 20}).numel(), int64_t(3) << 40);
}

TEST(Tensor, FromVectorChecksCount) {
  EXPECT_THROW(Tensor::from_vector(std::vector<double>{1, 2, 3}, {2, 2}), Error);
  const Tensor t = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2}, DType::Float64);
  EXPECT_EQ(t.dtype(), DType::Float64);
  EXPECT_EQ(t.to_vector(), (std::vector<double>{1, 2, 3, 4}));
}

TEST(Tensor, TypedAccessChecksDtype) {
  const Tensor t = Tensor::zeros({2});
  EXPECT_NO_THROW(t.data<float>());
  EXPECT_THROW(t.data<double>(), Error);
}

TEST(Tensor, DtypeConversionRoundsToFloat) {
  const Tensor d = Tensor::from_vector(std::vector<double>{0.1, 1.0 / 3.0}, {2}, DType::Float64);
  const Tensor f = d.to(DType::Float32);
  EXPECT_EQ(f.dtype(), DType::Float32);
  EXPECT_EQ(f.to_vector()[0], static_cast<double>(0.1f));
  EXPECT_EQ(f.to(DType::Float64).to_vector()[1], static_cast<double>(static_cast<float>(1.0 / 3.0)));
}

TEST(Tensor, ViewSharesCloneCopies) {
  Tensor t = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor v = t.view({3, 2});
  Tensor c = t.clone();
  t.fill_(9.0);
  EXPECT_EQ(v.to_vector()[5], 9.0);
  EXPECT_EQ(c.to_vector()[5], 6.0);
  EXPECT_THROW(t.view({4, 2}), Error);
  EXPECT_THROW(Tensor::zeros({2}).item(), Error);
}

TEST(Tensor, CopyFromChecksShape) {
  Tensor a = Tensor::zeros({2, 3});
  EXPECT_THROW(a.copy_from(Tensor::zeros({3, 2})), Error);
  EXPECT_THROW(a.copy_from(Tensor::zeros({2, 3}, DType::Float64)), Error);
  a.copy_from(Tensor::full({2, 3}, 1.5));
  EXPECT_EQ(a.to_vector()[4], 1.5);
}

TEST(Tensor, UndefinedTensorErrors) {
  const Tensor t;
  EXPECT_FALSE(t.defined());
  EXPECT_THROW(t.shape(), Error);
  EXPECT_EQ(t.describe(), "undefined tensor");
}

TEST(Tensor, CpuAllocatorCountsBytes) {
  Allocator& cpu = allocator_for(Device::cpu());
  const size_t before = cpu.bytes_in_use();
  {
    const Tensor t = Tensor::empty({1000});
    EXPECT_EQ(cpu.bytes_in_use(), before + 4000);
    EXPECT_GE(cpu.peak_bytes_in_use(), before + 4000);
  }
  EXPECT_EQ(cpu.bytes_in_use(), before);
}

TEST(Device, ParseNames) {
  EXPECT_TRUE(parse_device("cpu").is_cpu());
  EXPECT_EQ(parse_device("cuda:1"), Device::cuda(1));
  EXPECT_EQ(parse_device("cuda"), Device::cuda(0));
  EXPECT_THROW(parse_device("gpu"), Error);
  EXPECT_THROW(parse_device("cuda:x"), Error);
  EXPECT_EQ(parse_device("auto").is_cuda(), cuda_available());
}

TEST(Device, CudaTensorWithoutDeviceIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present; covered by the CUDA tests";
  try {
    Tensor::zeros({2}, DType::Float32, Device::cuda());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hisvid
