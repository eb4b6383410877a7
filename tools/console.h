// tools/console.h — what the CLI prints: Keras-style progress bars and epoch lines on a
// terminal, plain lines otherwise (logs, CI), and Ctrl-C turned into a polite stop.
#pragma once

#include <atomic>
#include <string>

namespace hisvid::tools {

class Console {
 public:
  Console();
  bool interactive() const { return interactive_; }
  // "  12/50 [=======>......................] - ETA: 3s - loss: 0.6931 - accuracy: 0.5000"
  // redrawn in place on a terminal; nothing otherwise.
  void progress(int done, int total, double seconds, const std::string& metrics);
  // The final line of a bar (always printed), e.g. "50/50 [=====] - 12s 240ms/step - loss: ...".
  void finish(int total, double seconds, double ms_per_step, const std::string& metrics);
  void line(const std::string& text);  // stdout
  void note(const std::string& text);  // stderr
  // Every Console of the process prints nothing (the ranks of a data-parallel run but rank 0;
  // errors still reach stderr through main).
  static void set_quiet(bool quiet);

 private:
  bool interactive_;
  size_t last_width_ = 0;
};

// Ctrl-C, SIGTERM or a closed terminal ends the command: the file being written goes with it
// (io::remove_temporaries_now), a line on stderr says so, then the signal takes its course, so
// the exit status still says which signal it was. main installs it; train replaces it with
// install_interrupt_handler's.
void end_on_signal(int signal);
void install_end_on_signal();

// Installs a handler of SIGINT (Ctrl-C), SIGTERM (kill, a batch system's time limit) and SIGHUP (a
// closed terminal) that raises the flag instead of ending the process; a second signal ends it as
// end_on_signal does, except the same one again from the same process within a second (GNU
// timeout signals the command, then its process group: one request). A signal the process inherited as
// ignored (nohup's SIGHUP) stays ignored.
void install_interrupt_handler();
bool interrupted();

}  // namespace hisvid::tools
