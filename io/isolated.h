// io/isolated.h — running a read that a damaged file could crash inside a library in a child
// process, so that the crash becomes an error instead of the end of hisvid.
//
// libhdf5 trusts the structures it reads: one flipped bit in a Keras file's global heap makes
// H5HG_read fault on a variable-length string. Nothing validates those structures short of
// HDF5 itself, so a model file is first read whole in a forked child: when the child dies from
// a signal, or does not finish within its time limit, the file is reported damaged; when it
// finishes (whether the read succeeded or threw), the caller reads the file itself and gets the
// same result and the same error messages.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace hisvid::io {

// Reading a model file or a cache's metadata takes milliseconds (a 10 MB model: about 20 ms on
// the 2-core CI machine); libhdf5 can loop forever on a damaged B-tree. A read is given
// kIsolatedReadSeconds, plus one second per kIsolatedBytesPerSecond of file.
constexpr int kIsolatedReadSeconds = 5;
constexpr int64_t kIsolatedBytesPerSecond = int64_t(16) << 20;

// The time limit of an isolated read of a file of `bytes`.
int isolated_read_seconds(int64_t bytes);

// Runs `work` in a forked child. Throws Error "<what>: ..." when the child is killed by a
// signal or runs past `timeout_seconds`; returns otherwise (the child's exceptions are not
// reported: the caller's own run of the same work raises them). Where fork is impossible, runs
// nothing and returns.
void probe_in_child(const std::string& what, const std::function<void()>& work,
                    int timeout_seconds = kIsolatedReadSeconds);

}  // namespace hisvid::io
