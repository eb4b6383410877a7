// bench/kernel_lab.cpp — the kernel lab: every row of the kernel table checked against the
// float64 naive reference and, with --time, timed, on the cases each kernel registered
// (kernels/harness.h). The rows are the engine's own (nothing copied that could drift).
//
//   kernel_lab [--kernel conv2d_forward,...] [--case seed_] [--row cpu|cuda*] [--time] [--min-time 0.2]
//
// One line per (kernel, case, row): ok or FAIL, the largest error as a fraction of what the
// case's tolerance allows (the data to tighten a tolerance by), and with --time the time per call, GFLOP/s
// where the case states its flops, and GB/s of the buffers read and written once; "n/a" where
// the row hands the case to another row (Implementation::applies), neither checked nor timed.
// With --time, the roofline of each backend timed is measured first (bench/roofline.h: the
// host's FMA peak and triad bandwidth, the GPU's fmaf peak and copy bandwidth) and each timed
// row shows the share of its bound it reached: min(peak, intensity x bandwidth).
// CUDA rows time with CUDA events on the stream; host rows with the host clock. Rows this
// process cannot run (no GPU) are named on stderr. Exits 1 when a row fails its check, 2 when
// a --kernel or --row names nothing or nothing was checked.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <exception>
#include <initializer_list>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bench/roofline.h"
#include "kernels/harness.h"

namespace {

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// A name is selected by a wanted entry equal to it (or containing it, with `substring`), or by
// one ending in '*' that it starts with ("cuda*": every CUDA row).
bool selected(const std::vector<std::string>& wanted, const std::string& name, bool substring) {
  if (wanted.empty()) return true;
  for (const std::string& w : wanted) {
    if (!w.empty() && w.back() == '*' && name.rfind(w.substr(0, w.size() - 1), 0) == 0) return true;
    if (substring ? name.find(w) != std::string::npos : name == w) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "hisvid kernel lab: check every row of the kernel table against the naive reference, and time it"};
  std::string kernels, cases, rows;
  bool time = false;
  double min_time = 0.2;
  app.add_option("--kernel", kernels, "kernels to run, comma-separated (default: all)");
  app.add_option("--case", cases, "only cases whose name contains one of these, comma-separated");
  app.add_option("--row", rows,
                 "rows to run, comma-separated: naive, cpu, cpu.gemm, cuda, ... (default: all)");
  app.add_flag("--time", time, "time every checked row");
  app.add_option("--min-time", min_time, "seconds of calls per timing")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  const std::vector<std::string> want_kernels = split(kernels), want_cases = split(cases),
                                 want_rows = split(rows);
  // Every --kernel and --row entry must name something: a misspelt one would check nothing.
  std::set<std::string> kernel_names, row_names;
  for (const hisvid::harness::KernelSpec* spec : hisvid::harness::kernel_specs()) {
    kernel_names.insert(spec->name());
    if (!selected(want_kernels, spec->name(), false)) continue;
    for (const hisvid::harness::RowInfo& row : spec->rows()) row_names.insert(row.name);
  }
  const auto require_known = [](const std::vector<std::string>& wanted, const std::set<std::string>& known,
                                const char* option) {
    for (const std::string& w : wanted) {
      if (!std::any_of(known.begin(), known.end(),
                       [&](const std::string& name) { return selected({w}, name, false); })) {
        std::string list;
        for (const std::string& name : known) list += (list.empty() ? "" : ", ") + name;
        std::fprintf(stderr, "kernel_lab: %s %s names nothing; there are: %s\n", option, w.c_str(),
                     list.c_str());
        return false;
      }
    }
    return true;
  };
  if (!require_known(want_kernels, kernel_names, "--kernel") || !require_known(want_rows, row_names, "--row"))
    return 2;
  int failures = 0, checked = 0, elsewhere = 0;
  std::map<std::string, std::string> unavailable_rows;  // row -> why this process cannot run it
  // The rooflines of the backends timed: the host's for the naive and cpu rows.
  std::map<hisvid::Backend, hisvid::bench::Roofline> rooflines;
  if (time) {
    bool host = false, cuda = false;
    for (const hisvid::harness::KernelSpec* spec : hisvid::harness::kernel_specs()) {
      if (!selected(want_kernels, spec->name(), false)) continue;
      for (const hisvid::harness::RowInfo& row : spec->rows()) {
        if (!selected(want_rows, row.name, false) ||
            !hisvid::harness::unavailable_reason(row.backend).empty())
          continue;
        (row.backend == hisvid::Backend::Cuda ? cuda : host) = true;
      }
    }
    // A roofline that cannot be measured leaves its column empty; the lab goes on.
    const auto measure = [&](const char* what, auto how, std::initializer_list<hisvid::Backend> backends) {
      try {
        const hisvid::bench::Roofline r = how();
        for (hisvid::Backend b : backends) rooflines[b] = r;
        std::printf(
            "Roofline of the %s, measured here: %.1f GFLOP/s float32 FMA (no tensor cores), %.1f GB/s "
            "(%s)\n\n",
            what, r.gflops, r.gbs, r.basis.c_str());
      } catch (const std::exception& e) {
        std::fprintf(stderr, "kernel_lab: the %s's roofline was not measured: %s\n", what, e.what());
      }
    };
    if (host) {
      measure("host", [] { return hisvid::bench::measure_host_roofline(omp_get_max_threads()); },
              {hisvid::Backend::Naive, hisvid::Backend::Cpu});
    }
#ifdef HISVID_WITH_CUDA
    if (cuda) measure("GPU", hisvid::bench::measure_cuda_roofline, {hisvid::Backend::Cuda});
#endif
  }
  std::printf(
      "| kernel | case | row | check | error used | ms/call | GFLOP/s | GB/s | of roofline |\n"
      "|---|---|---|---|---:|---:|---:|---:|---:|\n");
  for (const hisvid::harness::KernelSpec* spec : hisvid::harness::kernel_specs()) {
    if (!selected(want_kernels, spec->name(), false)) continue;
    for (size_t i = 0; i < spec->case_count(); ++i) {
      if (!selected(want_cases, spec->case_name(i), true)) continue;
      for (const hisvid::harness::RowInfo& row : spec->rows()) {
        if (!selected(want_rows, row.name, false)) continue;
        const std::string unavailable = hisvid::harness::unavailable_reason(row.backend);
        if (!unavailable.empty()) {
          unavailable_rows[row.name] = unavailable;
          continue;
        }
        if (!spec->applies(i, row.name)) {
          ++elsewhere;
          std::printf("| %s | %s | %s%s | n/a | | | | | |\n", spec->name(), spec->case_name(i).c_str(),
                      row.name.c_str(), row.is_default ? " *" : "");
          continue;
        }
        double error_used = 0.0;
        const std::string failure = spec->check(i, row.name, &error_used);
        ++checked;
        std::printf("| %s | %s | %s%s | %s | %.3g |", spec->name(), spec->case_name(i).c_str(),
                    row.name.c_str(), row.is_default ? " *" : "", failure.empty() ? "ok" : "FAIL",
                    error_used);
        if (!failure.empty()) {
          ++failures;
          std::fprintf(stderr, "%s %s %s:\n%s", spec->name(), spec->case_name(i).c_str(), row.name.c_str(),
                       failure.c_str());
        }
        if (time) {
          const hisvid::harness::Timing t = spec->time(i, row.name, min_time);
          std::printf(" %.4f |", t.seconds * 1e3);
          if (t.flops > 0) {
            std::printf(" %.2f |", t.flops / t.seconds * 1e-9);
          } else {
            std::printf(" |");
          }
          std::printf(" %.2f |", t.bytes / t.seconds * 1e-9);
          std::printf(
              " %s |\n",
              hisvid::bench::roofline_share(rooflines[row.backend], t.flops, t.bytes, t.seconds).c_str());
        } else {
          std::printf(" | | | |\n");
        }
        std::fflush(stdout);
      }
    }
  }
  std::printf(
      "\n%d checks, %d failed ('*': the row the engine runs on its backend; n/a: %d where the row hands the "
      "case to another)\n",
      checked, failures, elsewhere);
  for (const auto& [row, why] : unavailable_rows)
    std::fprintf(stderr, "kernel_lab: row %s not run: %s\n", row.c_str(), why.c_str());
  if (checked == 0) {
    std::fprintf(stderr, "kernel_lab: nothing was checked\n");
    return 2;
  }
  return failures == 0 ? 0 : 1;
}
