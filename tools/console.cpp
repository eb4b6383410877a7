#include "tools/console.h"

#include <fmt/format.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "io/atomic_file.h"

namespace hisvid::tools {

namespace {

std::atomic<bool> g_interrupted{false};
// Whether progress bars may be drawn on a terminal (stdout), read by end_on_signal, which may not
// call isatty: its line then starts on a line of its own.
std::atomic<bool> g_progress_on_terminal{false};
// The first signal: which, the process that sent it (0: the terminal's Ctrl-C or the kernel) and
// when; published by g_first_state (0 none yet, 1 being recorded, 2 recorded), since handlers of
// several threads may run at once.
std::atomic<int> g_first_state{0}, g_first_signal{0};
std::atomic<pid_t> g_first_sender{0};
std::atomic<int64_t> g_first_at_ns{0};
static_assert(std::atomic<int>::is_always_lock_free && std::atomic<pid_t>::is_always_lock_free &&
                  std::atomic<int64_t>::is_always_lock_free,
              "read and written in a signal handler");

int64_t monotonic_ns() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);  // async-signal-safe
  return int64_t(now.tv_sec) * 1000000000 + now.tv_nsec;
}

// A second signal ends the process, except the copy that a sender delivers to the whole process
// group right after the process itself (GNU timeout does): the same signal from the same process
// within a second is the first one again, and so is one that arrives while another thread is
// still recording the first.
constexpr int64_t kSameSignalNs = 1000000000;

void on_interrupt(int signal, siginfo_t* info, void*) {
  const pid_t sender = info != nullptr && info->si_code == SI_USER ? info->si_pid : 0;
  const int64_t now = monotonic_ns();
  int state = 0;
  if (g_first_state.compare_exchange_strong(state, 1)) {
    g_first_signal.store(signal), g_first_sender.store(sender), g_first_at_ns.store(now);
    g_first_state.store(2);
    g_interrupted.store(true);
    return;
  }
  if (state == 1) return;
  if (signal == g_first_signal.load() && sender != 0 && sender == g_first_sender.load() &&
      now - g_first_at_ns.load() < kSameSignalNs) {
    return;
  }
  end_on_signal(signal);
}

// SIGINT, SIGTERM and SIGHUP go to `handler`, unless the caller ignores one (nohup ignores
// SIGHUP, a shell's background job SIGINT): that stays ignored.
void handle_ending_signals(void (*handler)(int, siginfo_t*, void*)) {
  g_progress_on_terminal.store(isatty(STDOUT_FILENO) != 0);
  struct sigaction action {};
  action.sa_sigaction = handler;
  action.sa_flags = SA_SIGINFO | SA_RESTART;  // as signal() had it: a blocked write or read goes on
  sigemptyset(&action.sa_mask);
  for (const int signal : {SIGINT, SIGTERM, SIGHUP}) {
    struct sigaction before {};
    if (sigaction(signal, nullptr, &before) == 0 && before.sa_handler == SIG_IGN) continue;
    sigaction(signal, &action, nullptr);
  }
}

void end_on(int signal, siginfo_t*, void*) { end_on_signal(signal); }

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
  // Said with write(2), which a signal handler may call (a closed pipe on stderr, tee ended by the
  // same Ctrl-C, must not turn the exit into SIGPIPE's).
  std::signal(SIGPIPE, SIG_IGN);
  const char* name = signal == SIGINT    ? "SIGINT"
                     : signal == SIGTERM ? "SIGTERM"
                     : signal == SIGHUP  ? "SIGHUP"
                                         : "a signal";
  const char* parts[] = {g_progress_on_terminal.load() ? "\n" : "", "hisvid: ended by ", name,
                         "; files saved before it stay as they were, a file being written is removed\n"};
  for (const char* part : parts) {
    if (::write(STDERR_FILENO, part, std::strlen(part)) < 0) break;
  }
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}

void install_end_on_signal() { handle_ending_signals(end_on); }

void install_interrupt_handler() { handle_ending_signals(on_interrupt); }

bool interrupted() { return g_interrupted.load(); }

}  // namespace hisvid::tools
