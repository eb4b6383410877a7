#include "tools/console.h"

#include <fmt/format.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>

#include "io/atomic_file.h"

namespace hisvid::tools {

namespace {

std::atomic<bool> g_interrupted{false};

void on_interrupt(int signal) {
  g_interrupted.store(true);
  std::signal(signal, end_on_signal);  // the next one ends the process
}

// SIGINT, SIGTERM and SIGHUP go to `handler`, unless the caller ignores one (nohup ignores
// SIGHUP, a shell's background job SIGINT): that stays ignored.
void handle_ending_signals(void (*handler)(int)) {
  for (const int signal : {SIGINT, SIGTERM, SIGHUP}) {
    if (std::signal(signal, handler) == SIG_IGN) std::signal(signal, SIG_IGN);
  }
}

std::string bar(int done, int total) {
  constexpr int kWidth = 30;
  const int filled = total > 0 ? kWidth * done / total : kWidth;
  std::string b = "[" + std::string(static_cast<size_t>(filled), '=');
  if (filled < kWidth) b += ">" + std::string(static_cast<size_t>(kWidth - filled - 1), '.');
  return b + "]";
}

std::string duration(double seconds) {
  if (seconds >= 3600)
    return fmt::format("{}:{:02d}:{:02d}", int(seconds) / 3600, int(seconds) / 60 % 60, int(seconds) % 60);
  if (seconds >= 60) return fmt::format("{}:{:02d}", int(seconds) / 60, int(seconds) % 60);
  return fmt::format("{}s", static_cast<int>(seconds + 0.5));
}

std::atomic<bool> g_quiet{false};

}  // namespace

void Console::set_quiet(bool quiet) { g_quiet = quiet; }

Console::Console() : interactive_(isatty(STDOUT_FILENO) != 0) {}

void Console::progress(int done, int total, double seconds, const std::string& metrics) {
  if (!interactive_ || g_quiet) return;
  const double eta = done > 0 ? seconds / done * (total - done) : 0.0;
  const int digits = static_cast<int>(std::to_string(total).size());
  std::string text = fmt::format("{:>{}}/{} {} - ETA: {} - {}", done, digits, total, bar(done, total),
                                 duration(eta), metrics);
  const size_t width = text.size();
  if (width < last_width_) text += std::string(last_width_ - width, ' ');
  last_width_ = width;
  std::fprintf(stdout, "\r%s", text.c_str());
  std::fflush(stdout);
}

void Console::finish(int total, double seconds, double ms_per_step, const std::string& metrics) {
  if (g_quiet) return;
  const int digits = static_cast<int>(std::to_string(total).size());
  std::string text = fmt::format("{:>{}}/{} {} - {} {:.0f}ms/step - {}", total, digits, total,
                                 bar(total, total), duration(seconds), ms_per_step, metrics);
  if (interactive_) {
    if (text.size() < last_width_) text += std::string(last_width_ - text.size(), ' ');
    std::fprintf(stdout, "\r");
  }
  last_width_ = 0;
  std::fprintf(stdout, "%s\n", text.c_str());
  std::fflush(stdout);
}

void Console::line(const std::string& text) {
  if (g_quiet) return;
  std::fprintf(stdout, "%s\n", text.c_str());
  std::fflush(stdout);
}

void Console::note(const std::string& text) {
  if (g_quiet) return;
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
}

void end_on_signal(int signal) {
  io::remove_temporaries_now();
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}

void install_end_on_signal() { handle_ending_signals(end_on_signal); }

void install_interrupt_handler() { handle_ending_signals(on_interrupt); }

bool interrupted() { return g_interrupted.load(); }

}  // namespace hisvid::tools
