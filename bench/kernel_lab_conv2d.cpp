// bench/kernel_lab_conv2d.cpp — the CPU convolution lab: the two strategies of
// kernels/conv2d.cpp (im2col + GEMM, direct loops), validated against a naive loop nest and
// then timed on every convolution of the seeds' LRCN and ConvLSTM at training batch 4.
// The kernels linked here are the ones the engine runs (no copies that could drift); '*'
// marks what Auto picks for each pass.
//   build/bench/kernel_lab_conv2d [reps]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/conv2d.h"

namespace {

using hisvid::Conv2dGeometry;
using hisvid::Padding;
using hisvid::cpu::Conv2dAlgorithm;

struct Layer {
  const char* name;
  int N, H, W, C, F;
  Padding padding;
};

// Batch 4 x 20 frames, or 4 clips for one recurrent step of a ConvLSTM.
const Layer kLayers[] = {
    {"lrcn conv1 64x64 3->16", 80, 64, 64, 3, 16, Padding::Same},
    {"lrcn conv2 16x16 16->32", 80, 16, 16, 16, 32, Padding::Same},
    {"lrcn conv3 4x4 32->64", 80, 4, 4, 32, 64, Padding::Same},
    {"lrcn conv4 2x2 64->64", 80, 2, 2, 64, 64, Padding::Same},
    {"convlstm1 input 64x64 3->16", 80, 64, 64, 3, 16, Padding::Valid},
    {"convlstm1 recurrent 62x62 4->16", 4, 62, 62, 4, 16, Padding::Same},
    {"convlstm2 input 31x31 4->32", 80, 31, 31, 4, 32, Padding::Valid},
    {"convlstm2 recurrent 29x29 8->32", 4, 29, 29, 8, 32, Padding::Same},
    {"convlstm3 input 15x15 8->56", 80, 15, 15, 8, 56, Padding::Valid},
    {"convlstm3 recurrent 13x13 14->56", 4, 13, 13, 14, 56, Padding::Same},
    {"convlstm4 input 7x7 14->64", 80, 7, 7, 14, 64, Padding::Valid},
    {"convlstm4 recurrent 5x5 16->64", 4, 5, 5, 16, 64, Padding::Same},
};

// The definition, for validation.
void naive_forward(std::vector<double>& out, const std::vector<double>& x, const std::vector<double>& w,
                   const Conv2dGeometry& g) {
  for (int n = 0; n < g.N; ++n)
    for (int ho = 0; ho < g.HO; ++ho)
      for (int wo = 0; wo < g.WO; ++wo)
        for (int f = 0; f < g.F; ++f) {
          double acc = 0;
          for (int kh = 0; kh < g.KH; ++kh)
            for (int kw = 0; kw < g.KW; ++kw) {
              const int ih = ho * g.SH - g.pad_top + kh, iw = wo * g.SW - g.pad_left + kw;
              if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
              for (int c = 0; c < g.C; ++c) {
                acc += x[((size_t(n) * g.H + ih) * g.W + iw) * g.C + c] * w[((size_t(kh) * g.KW + kw) * g.C + c) * g.F + f];
              }
            }
          out[((size_t(n) * g.HO + ho) * g.WO + wo) * g.F + f] = acc;
        }
}

template <typename F>
double median_ms(int reps, F&& f) {
  std::vector<double> t;
  f();  // warm-up
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 9;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::printf("%-34s %-7s %28s %28s %28s\n", "layer (batch 4)", "", "forward ms (GFLOP/s)", "backward data ms",
              "backward filter ms");
  for (const Layer& l : kLayers) {
    const Conv2dGeometry g = hisvid::conv2d_geometry(l.N, l.H, l.W, l.C, l.F, 3, 3, 1, 1, l.padding);
    const size_t nx = size_t(g.N) * g.H * g.W * g.C, nw = size_t(9) * g.C * g.F, ny = size_t(g.N) * g.HO * g.WO * g.F;
    std::vector<float> x(nx), w(nw), b(size_t(g.F)), y(ny), dy(ny), dx(nx), dw(nw), db(size_t(g.F));
    for (float& v : x) v = u(rng);
    for (float& v : w) v = u(rng);
    for (float& v : dy) v = u(rng);

    // Validation on the first image against the definition, in double.
    const Conv2dGeometry g1 = hisvid::conv2d_geometry(1, l.H, l.W, l.C, l.F, 3, 3, 1, 1, l.padding);
    std::vector<double> xd(x.begin(), x.begin() + size_t(l.H) * l.W * l.C), wd(w.begin(), w.end()),
        ref(size_t(g1.HO) * g1.WO * g1.F);
    naive_forward(ref, xd, wd, g1);
    for (Conv2dAlgorithm a : {Conv2dAlgorithm::Gemm, Conv2dAlgorithm::Direct}) {
      std::vector<double> got(ref.size());
      hisvid::cpu::conv2d_forward_with(a, got.data(), xd.data(), wd.data(), static_cast<const double*>(nullptr), g1);
      double err = 0;
      for (size_t i = 0; i < ref.size(); ++i) err = std::max(err, std::fabs(got[i] - ref[i]));
      if (err > 1e-9) {
        std::printf("%s: %s disagrees with the definition (max error %g)\n", l.name,
                    a == Conv2dAlgorithm::Gemm ? "gemm" : "direct", err);
        return 1;
      }
    }

    const double gflop = 2.0 * double(ny) * 9 * g.C / 1e9;
    for (Conv2dAlgorithm a : {Conv2dAlgorithm::Gemm, Conv2dAlgorithm::Direct}) {
      const double f = median_ms(reps, [&] { hisvid::cpu::conv2d_forward_with(a, y.data(), x.data(), w.data(), b.data(), g); });
      const double d = median_ms(reps, [&] { hisvid::cpu::conv2d_backward_data_with(a, dx.data(), dy.data(), w.data(), g); });
      const double k = median_ms(reps, [&] {
        hisvid::cpu::conv2d_backward_filter_with(a, dw.data(), db.data(), dy.data(), x.data(), g);
      });
      using hisvid::cpu::Conv2dPass;
      auto mark = [&](Conv2dPass pass) { return hisvid::cpu::conv2d_cpu_algorithm(g, pass) == a ? '*' : ' '; };
      std::printf("%-34s %-7s %10.2f (%6.1f)%c %16.2f (%6.1f)%c %16.2f (%6.1f)%c\n", l.name,
                  a == Conv2dAlgorithm::Gemm ? "gemm" : "direct", f, gflop / f * 1e3, mark(Conv2dPass::Forward), d,
                  gflop / d * 1e3, mark(Conv2dPass::BackwardData), k, gflop / k * 1e3, mark(Conv2dPass::BackwardFilter));
    }
  }
  return 0;
}
