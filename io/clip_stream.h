// io/clip_stream.h — the open cache file a streamed ClipSet reads its clips from: opened by
// load_clips (io/dataset.cpp), read by ClipSet::read_clips (io/clips.cpp).
#pragma once

#include <mutex>

#include "io/hdf5.h"

namespace hisvid::io {

struct ClipStream {
  explicit ClipStream(h5::File f) : file(std::move(f)), clips(file.root().open_dataset("clips")) {}
  std::mutex mutex;  // one reader at a time (libhdf5 serialises its calls anyway)
  h5::File file;
  h5::Dataset clips;
};

}  // namespace hisvid::io
