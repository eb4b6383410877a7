// io/dataset: scanning ROOT/<Class>/<video>, parallel decoding, the HDF5 clip cache, splits,
// batches, augmentation and epoch batches — on small MJPG videos written here.
//
// Generated clip videos are flat frames: blue = kBlueStep * (clip id), green = kGreenStep *
// (frame index), red = kRed, so every decoded clip says which file it came from.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <opencv2/core.hpp>
#include <opencv2/videoio.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "io/atomic_file.h"
#include "io/dataset.h"
#include "kernels/philox.h"
#include "tests/test_support.h"

namespace hisvid::io {
namespace {

using hisvid::testing::error_of;

namespace fs = std::filesystem;

constexpr int kBlueStep = 20;   // clip id -> blue
constexpr int kGreenStep = 10;  // frame index -> green
constexpr int kRed = 200;
constexpr int kJpegTolerance = 6;  // MJPG's error on a flat frame, well below the steps above
constexpr int kFrameSize = 32;     // written frames, 32x32
constexpr int kFramesPerVideo = 12;

::testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' does not contain '" << part << "'";
}

void write_clip_video(const std::string& path, int clip_id, int frames = kFramesPerVideo) {
  cv::VideoWriter writer(path, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 25.0,
                         cv::Size(kFrameSize, kFrameSize));
  ASSERT_TRUE(writer.isOpened()) << path;
  for (int k = 0; k < frames; ++k) {
    writer.write(
        cv::Mat(kFrameSize, kFrameSize, CV_8UC3, cv::Scalar(kBlueStep * clip_id, kGreenStep * k, kRed)));
  }
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// The clip id a decoded clip carries in its blue channel.
int clip_id_of(const ClipSet& clips, size_t i) {
  const uint8_t blue = clips.clip(i)[0];
  const int id = (blue + kBlueStep / 2) / kBlueStep;
  EXPECT_NEAR(blue, id * kBlueStep, kJpegTolerance);
  return id;
}

ExtractionSettings small_settings(int frames = 4) { return ExtractionSettings{frames, 8, 8}; }

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = testing::fresh_directory("hisvid_dataset_tests");
    root_ = directory_ / "data";
    fs::create_directories(root_);
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(directory_, ignored);
  }

  // root/<name>/<file> for each (name, file, clip id); creates the class folder.
  void add_video(const std::string& class_name, const std::string& file, int clip_id,
                 int frames = kFramesPerVideo) {
    fs::create_directories(root_ / class_name);
    write_clip_video((root_ / class_name / file).string(), clip_id, frames);
  }
  // Alpha: a.avi (1), b.avi (2), c.avi (3); Beta: d.avi (4), e.avi (5); Gamma: f.avi (6), g.avi (7).
  void make_dataset() {
    add_video("Alpha", "a.avi", 1);
    add_video("Alpha", "b.avi", 2);
    add_video("Alpha", "c.avi", 3);
    add_video("Beta", "d.avi", 4);
    add_video("Beta", "e.avi", 5);
    add_video("Gamma", "f.avi", 6);
    add_video("Gamma", "g.avi", 7);
  }
  DatasetSpec spec(const std::string& cache = "none") const {
    DatasetSpec s;
    s.root = root_.string();
    s.extraction = small_settings();
    s.cache_path = cache == "none" ? "none" : (directory_ / cache).string();
    s.workers = 2;
    return s;
  }
  std::string cache_file(const std::string& name) const { return (directory_ / name).string(); }

  fs::path directory_, root_;
};

// --- scanning and errors -----------------------------------------------------------------------

TEST_F(DatasetTest, MissingRoot) {
  DatasetSpec s = spec();
  s.root = (directory_ / "nowhere").string();
  const std::string message = error_of([&] { load_clips(s); });
  EXPECT_TRUE(contains(message, s.root));
  EXPECT_TRUE(contains(message, "does not exist"));
}

TEST_F(DatasetTest, RootIsAFile) {
  write_text(cache_file("file"), "x");
  DatasetSpec s = spec();
  s.root = cache_file("file");
  EXPECT_TRUE(contains(error_of([&] { load_clips(s); }), "is not a directory"));
}

TEST_F(DatasetTest, EmptyRoot) {
  write_text((root_ / "README.txt").string(), "no class folders here");
  fs::create_directories(root_ / ".hidden");
  const std::string message = error_of([&] { load_clips(spec()); });
  EXPECT_TRUE(contains(message, root_.string()));
  EXPECT_TRUE(contains(message, "no class folders"));
}

TEST_F(DatasetTest, FewerThanTwoClasses) {
  add_video("Alpha", "a.avi", 1);
  EXPECT_TRUE(contains(error_of([&] { load_clips(spec()); }), "at least 2"));
  make_dataset();
  DatasetSpec s = spec();
  s.classes = {"Beta"};
  EXPECT_TRUE(contains(error_of([&] { load_clips(s); }), "at least 2"));
}

TEST_F(DatasetTest, UnknownClassListsTheAvailableOnes) {
  make_dataset();
  DatasetSpec s = spec();
  s.classes = {"Alpha", "Delta"};
  const std::string message = error_of([&] { load_clips(s); });
  EXPECT_TRUE(contains(message, "unknown class 'Delta'"));
  EXPECT_TRUE(contains(message, "Alpha, Beta, Gamma"));
}

TEST_F(DatasetTest, ClassNamedTwice) {
  make_dataset();
  DatasetSpec s = spec();
  s.classes = {"Alpha", "Beta", "Alpha"};
  EXPECT_TRUE(contains(error_of([&] { load_clips(s); }), "named twice"));
}

TEST_F(DatasetTest, NumClasses) {
  make_dataset();
  DatasetSpec s = spec();
  s.num_classes = 4;
  EXPECT_TRUE(contains(error_of([&] { load_clips(s); }), "only 3 class folders"));
  s.num_classes = 2;
  const ClipSet first = load_clips(s);
  ASSERT_EQ(first.class_names.size(), 2u);
  EXPECT_TRUE(std::is_sorted(first.class_names.begin(), first.class_names.end()));
  EXPECT_EQ(load_clips(s).class_names, first.class_names) << "the choice is deterministic by seed";
  // Over a few seeds, more than one subset is chosen (the seed is used).
  std::set<std::vector<std::string>> chosen;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    s.seed = seed;
    chosen.insert(load_clips(s).class_names);
  }
  EXPECT_GT(chosen.size(), 1u);
  s.classes = {"Alpha", "Beta", "Gamma"};
  s.num_classes = 2;
  EXPECT_TRUE(contains(error_of([&] { load_clips(s); }), "2 classes asked for, but 3 named"));
}

TEST_F(DatasetTest, ClassWithNoVideoFiles) {
  make_dataset();
  fs::create_directories(root_ / "Empty");
  write_text((root_ / "Empty" / "notes.txt").string(), "not a video");
  const std::string message = error_of([&] { load_clips(spec()); });
  EXPECT_TRUE(contains(message, "class 'Empty' has no video files"));
}

TEST_F(DatasetTest, ClassWithNoUsableVideoSaysWhy) {
  make_dataset();
  fs::create_directories(root_ / "Broken");
  write_text((root_ / "Broken" / "x.avi").string(), "text, not a video");
  add_video("Broken", "short.avi", 9, 2);
  const std::string message = error_of([&] { load_clips(spec()); });
  EXPECT_TRUE(contains(message, "class 'Broken' has no usable video"));
  EXPECT_TRUE(contains(message, "short.avi: has 2 decodable frames, fewer than the 4 needed"));
  EXPECT_TRUE(contains(message, "x.avi: cannot be opened as a video"));
}

// --- loading -------------------------------------------------------------------------------------

TEST_F(DatasetTest, LoadsEveryClassInSortedOrder) {
  make_dataset();
  const ClipSet clips = load_clips(spec());
  EXPECT_EQ(clips.class_names, (std::vector<std::string>{"Alpha", "Beta", "Gamma"}));
  ASSERT_EQ(clips.size(), 7u);
  EXPECT_EQ(clips.labels, (std::vector<int>{0, 0, 0, 1, 1, 2, 2}));
  EXPECT_EQ(clips.clip_elements(), 4u * 8 * 8 * 3);
  EXPECT_EQ(clips.pixels.size(), 7 * clips.clip_elements());
  for (size_t i = 0; i < clips.size(); ++i) EXPECT_EQ(clip_id_of(clips, i), static_cast<int>(i) + 1);
  EXPECT_EQ(clips.paths[3], (root_ / "Beta" / "d.avi").string());
  EXPECT_TRUE(clips.skipped.empty());
  EXPECT_FALSE(clips.from_cache);
  EXPECT_EQ(clips.cache_file, "");
  // Pixels are exactly extract_clip's.
  const Clip direct = extract_clip(clips.paths[4], small_settings());
  EXPECT_TRUE(std::equal(direct.pixels.begin(), direct.pixels.end(), clips.clip(4)));
}

TEST_F(DatasetTest, ClassesGivenSetTheLabelOrder) {
  make_dataset();
  DatasetSpec s = spec();
  s.classes = {"Gamma", "Alpha"};
  const ClipSet clips = load_clips(s);
  EXPECT_EQ(clips.class_names, s.classes);
  EXPECT_EQ(clips.labels, (std::vector<int>{0, 0, 1, 1, 1}));
  EXPECT_EQ(clip_id_of(clips, 0), 6);
  EXPECT_EQ(clip_id_of(clips, 2), 1);
}

TEST_F(DatasetTest, SkipsBadFilesAndListsThemWhileOthersLoad) {
  make_dataset();
  write_text((root_ / "Alpha" / "broken.avi").string(), "text, not a video");
  add_video("Alpha", "short.avi", 8, 2);
  add_video("Beta", "UPPER.AVI", 9);                               // extensions are case-insensitive
  write_text((root_ / "Beta" / "notes.txt").string(), "ignored");  // not a video extension
  add_video("Beta", ".hidden.avi", 10);                            // hidden: ignored
  fs::create_directories(root_ / "Beta" / "sub.avi");              // a folder: ignored
  const ClipSet clips = load_clips(spec());
  ASSERT_EQ(clips.size(), 8u);
  ASSERT_EQ(clips.skipped.size(), 2u);
  EXPECT_EQ(clips.skipped[0].path, (root_ / "Alpha" / "broken.avi").string());
  EXPECT_EQ(clips.skipped[0].reason.rfind("cannot be opened as a video (", 0), 0u) << clips.skipped[0].reason;
  EXPECT_EQ(clips.skipped[1].path, (root_ / "Alpha" / "short.avi").string());
  EXPECT_EQ(clips.skipped[1].reason, "has 2 decodable frames, fewer than the 4 needed");
  std::vector<int> ids;
  for (size_t i = 0; i < clips.size(); ++i) ids.push_back(clip_id_of(clips, i));
  EXPECT_EQ(ids, (std::vector<int>{1, 2, 3, 9, 4, 5, 6, 7}));  // "UPPER.AVI" sorts before "d.avi"
  EXPECT_EQ(clips.labels, (std::vector<int>{0, 0, 0, 1, 1, 1, 2, 2}));
}

TEST_F(DatasetTest, ResultDoesNotDependOnTheNumberOfWorkers) {
  make_dataset();
  for (int i = 0; i < 6; ++i) add_video("Beta", "extra" + std::to_string(i) + ".avi", 10 + i);
  DatasetSpec s = spec();
  s.workers = 1;
  const ClipSet one = load_clips(s);
  for (const int workers : {3, 0}) {
    s.workers = workers;
    const ClipSet many = load_clips(s);
    EXPECT_EQ(many.paths, one.paths) << workers << " workers";
    EXPECT_EQ(many.labels, one.labels);
    EXPECT_TRUE(many.pixels == one.pixels);
  }
  s.workers = -1;
  EXPECT_TRUE(contains(error_of([&] { load_clips(s); }), "workers"));
}

TEST_F(DatasetTest, ProgressFromTheCallingThread) {
  make_dataset();
  std::vector<size_t> done;
  std::set<std::string> files;
  const std::thread::id caller = std::this_thread::get_id();
  bool other_thread = false;
  DatasetSpec s = spec();
  s.workers = 3;
  load_clips(s, [&](const Progress& p) {
    other_thread |= std::this_thread::get_id() != caller;
    EXPECT_EQ(p.total, 7u);
    done.push_back(p.done);
    files.insert(p.current);
  });
  EXPECT_FALSE(other_thread);
  std::vector<size_t> expected(7);
  std::iota(expected.begin(), expected.end(), 1);
  EXPECT_EQ(done, expected);
  EXPECT_EQ(files.size(), 7u);
}

TEST_F(DatasetTest, AProgressCallbackThatThrowsStopsTheLoad) {
  make_dataset();
  DatasetSpec s = spec();
  s.workers = 2;
  EXPECT_THROW(load_clips(s, [](const Progress&) { throw Error("cancelled"); }), Error);
}

// --- the clip cache ----------------------------------------------------------------------------

TEST_F(DatasetTest, SecondLoadComesFromTheCacheWithoutDecoding) {
  make_dataset();
  write_text((root_ / "Alpha" / "broken.avi").string(), "text, not a video");
  const DatasetSpec s = spec("clips.h5");
  int calls = 0;
  const ClipSet first = load_clips(s, [&](const Progress&) { ++calls; });
  EXPECT_EQ(calls, 8);
  EXPECT_FALSE(first.from_cache);
  EXPECT_EQ(first.cache_file, cache_file("clips.h5"));
  EXPECT_TRUE(contains(first.cache_note, "no clip cache"));
  ASSERT_TRUE(fs::exists(cache_file("clips.h5")));
  for (const auto& entry : fs::directory_iterator(directory_)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos)
        << "temporary file left behind";
  }

  // Garble a video but keep its size and mtime: the key is unchanged, so only a load that
  // does not decode can still return its old clip.
  const fs::path garbled = root_ / "Beta" / "d.avi";
  const auto size = fs::file_size(garbled);
  const auto mtime = fs::last_write_time(garbled);
  write_text(garbled.string(), std::string(size, 'x'));
  fs::last_write_time(garbled, mtime);

  calls = 0;
  const auto start = std::chrono::steady_clock::now();
  const ClipSet second = load_clips(s, [&](const Progress&) { ++calls; });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(calls, 0);
  EXPECT_TRUE(second.from_cache);
  EXPECT_EQ(second.cache_note, "");
  EXPECT_EQ(second.class_names, first.class_names);
  EXPECT_EQ(second.paths, first.paths);
  EXPECT_EQ(second.labels, first.labels);
  EXPECT_TRUE(second.pixels == first.pixels);
  ASSERT_EQ(second.skipped.size(), 1u);
  EXPECT_EQ(second.skipped[0].path, first.skipped[0].path);
  EXPECT_EQ(second.skipped[0].reason, first.skipped[0].reason);
  EXPECT_EQ(second.extraction.sequence_length, 4);
  RecordProperty("cache_load_seconds", std::to_string(seconds));
}

// A streamed set holds no pixels and reads the same clips from the cache, whether it built the
// cache (block by block, skipped files listed) or found it; BatchReader hands out each batch's
// clips in order, read ahead or copied, and says when there are no more.
TEST_F(DatasetTest, StreamedClipsAreTheCachedClips) {
  make_dataset();
  write_text((root_ / "Alpha" / "broken.avi").string(), "text, not a video");
  DatasetSpec s = spec("clips.h5");
  s.stream = true;
  const ClipSet built = load_clips(s);
  ASSERT_TRUE(built.streamed());
  EXPECT_TRUE(built.pixels.empty());
  ASSERT_EQ(built.size(), 7u);
  ASSERT_EQ(built.skipped.size(), 1u);
  s.stream = false;
  const ClipSet in_memory = load_clips(s);
  ASSERT_FALSE(in_memory.streamed());
  EXPECT_TRUE(in_memory.from_cache);
  EXPECT_EQ(in_memory.paths, built.paths);
  s.stream = true;
  const ClipSet found = load_clips(s);
  ASSERT_TRUE(found.streamed());
  EXPECT_TRUE(found.from_cache);

  const std::vector<std::vector<size_t>> batches = {{6, 0}, {3}, {1, 2, 5, 4}};
  for (const ClipSet* set : {&built, &found, &in_memory}) {
    BatchReader reader(*set, batches, 1);
    for (const std::vector<size_t>& batch : batches) {
      const std::vector<uint8_t> pixels = reader.next();
      ASSERT_EQ(pixels.size(), batch.size() * set->clip_elements());
      for (size_t k = 0; k < batch.size(); ++k) {
        EXPECT_TRUE(std::equal(pixels.begin() + static_cast<std::ptrdiff_t>(k * set->clip_elements()),
                               pixels.begin() + static_cast<std::ptrdiff_t>((k + 1) * set->clip_elements()),
                               in_memory.clip(batch[k])))
            << "clip " << batch[k];
      }
    }
    EXPECT_TRUE(contains(error_of([&] { reader.next(); }), "all 3 batches were read"));
  }
  // A reader dropped with batches unread stops its thread.
  { BatchReader abandoned(found, batches, 2); }
  std::vector<uint8_t> out(found.clip_elements());
  EXPECT_TRUE(contains(error_of([&] { found.read_clips({7}, out.data()); }), "out of range"));
  s.cache_path = "none";
  EXPECT_TRUE(contains(error_of([&] { load_clips(s); }), "--cache none"));
}

TEST_F(DatasetTest, CacheOfOtherSettingsIsRebuilt) {
  make_dataset();
  DatasetSpec s = spec("clips.h5");
  load_clips(s);
  s.extraction = small_settings(5);
  const ClipSet rebuilt = load_clips(s);
  EXPECT_FALSE(rebuilt.from_cache);
  EXPECT_NE(rebuilt.cache_note.find("was built from other files or settings"), std::string::npos)
      << rebuilt.cache_note;
  EXPECT_EQ(rebuilt.clip_elements(), 5u * 8 * 8 * 3);
  EXPECT_TRUE(load_clips(s).from_cache);
}

TEST_F(DatasetTest, CacheOfOtherFilesIsRebuilt) {
  make_dataset();
  DatasetSpec s = spec("clips.h5");
  load_clips(s);
  add_video("Gamma", "h.avi", 8);
  const ClipSet with_new_file = load_clips(s);
  EXPECT_FALSE(with_new_file.from_cache);
  EXPECT_NE(with_new_file.cache_note.find("was built from other files or settings"), std::string::npos)
      << with_new_file.cache_note;
  EXPECT_EQ(with_new_file.size(), 8u);
  s.classes = {"Alpha", "Gamma"};
  EXPECT_FALSE(load_clips(s).from_cache) << "another class selection";
}

// Videos in a subfolder of a class folder that has videos of its own are not read (a class's
// videos lie directly in its folder): the load says so, naming the subfolder, rather than leave
// part of the class out in silence. Hidden subfolders and subfolders without videos are quiet.
TEST_F(DatasetTest, SubfoldersWithVideosAreNamed) {
  make_dataset();
  add_video("Alpha/more", "x.avi", 8);
  add_video("Beta/.thumbnails", "y.avi", 9);
  fs::create_directories(root_ / "Gamma" / "notes");
  const ClipSet clips = load_clips(spec());
  EXPECT_EQ(clips.size(), 7u);
  ASSERT_EQ(clips.notes.size(), 1u);
  EXPECT_NE(clips.notes[0].find((root_ / "Alpha" / "more").string()), std::string::npos) << clips.notes[0];
  EXPECT_NE(clips.notes[0].find("not read"), std::string::npos) << clips.notes[0];
}

// A video skipped because this process could not read it is decoded once it can (chmod changes
// neither its size nor its mtime): the cache, which keeps the skip and its reason, is rebuilt.
TEST_F(DatasetTest, AVideoMadeReadableIsNoLongerSkipped) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads a file whatever its permissions";
  make_dataset();
  const std::string locked = (root_ / "Gamma" / "f.avi").string();
  ASSERT_EQ(::chmod(locked.c_str(), 0), 0);
  DatasetSpec s = spec("clips.h5");
  const ClipSet without = load_clips(s);
  ASSERT_EQ(without.skipped.size(), 1u);
  EXPECT_NE(without.skipped[0].reason.find("permission"), std::string::npos) << without.skipped[0].reason;
  ASSERT_EQ(::chmod(locked.c_str(), 0644), 0);
  const ClipSet with = load_clips(s);
  EXPECT_FALSE(with.from_cache);
  EXPECT_TRUE(with.skipped.empty());
  EXPECT_EQ(with.size(), without.size() + 1);
}

// A file at the cache's path that hisvid did not write (a text file, a model) is never replaced.
TEST_F(DatasetTest, AFileThatIsNotACacheIsNotReplaced) {
  make_dataset();
  write_text(cache_file("clips.h5"), "notes, not a cache");
  const DatasetSpec s = spec("clips.h5");
  try {
    load_clips(s);
    ADD_FAILURE() << "the text file was taken for a cache";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "clips.h5")) << e.what();
    EXPECT_TRUE(contains(e.what(), "not a hisvid clip cache")) << e.what();
  }
  std::ifstream in(cache_file("clips.h5"));
  std::string text;
  std::getline(in, text);
  EXPECT_EQ(text, "notes, not a cache");
}

// Garbage under a name hisvid gave in its own cache folder is a damaged cache of its own: rebuilt.
TEST_F(DatasetTest, GarbageInTheDefaultCacheFolderIsRebuilt) {
  make_dataset();
  const char* previous = std::getenv("XDG_CACHE_HOME");
  const std::string saved = previous ? previous : "";
  ::setenv("XDG_CACHE_HOME", (directory_ / "xdg").c_str(), 1);
  DatasetSpec s = spec();
  s.cache_path = "";  // the default location
  const ClipSet first = load_clips(s);
  ASSERT_FALSE(first.cache_file.empty());
  write_text(first.cache_file, "garbage, not HDF5 at all");
  const ClipSet clips = load_clips(s);
  EXPECT_FALSE(clips.from_cache);
  EXPECT_TRUE(contains(clips.cache_note, "could not be read"));
  EXPECT_TRUE(contains(clips.cache_note, "rebuilt"));
  EXPECT_TRUE(load_clips(s).from_cache) << "the rebuilt cache replaced the garbage";
  if (previous) {
    ::setenv("XDG_CACHE_HOME", saved.c_str(), 1);
  } else {
    ::unsetenv("XDG_CACHE_HOME");
  }
}

TEST_F(DatasetTest, TruncatedCacheIsRebuilt) {
  make_dataset();
  const DatasetSpec s = spec("clips.h5");
  const ClipSet first = load_clips(s);
  fs::resize_file(cache_file("clips.h5"), fs::file_size(cache_file("clips.h5")) / 2);
  const ClipSet clips = load_clips(s);
  EXPECT_FALSE(clips.from_cache);
  EXPECT_TRUE(contains(clips.cache_note, "could not be read"));
  EXPECT_TRUE(clips.pixels == first.pixels);
}

TEST_F(DatasetTest, CacheWithDamagedClipsIsRebuilt) {
  make_dataset();
  const DatasetSpec s = spec("clips.h5");
  const ClipSet first = load_clips(s);
  // Overwrite the middle of the file (inside the compressed chunks) with garbage.
  {
    std::fstream file(cache_file("clips.h5"), std::ios::in | std::ios::out | std::ios::binary);
    const auto size = fs::file_size(cache_file("clips.h5"));
    file.seekp(static_cast<std::streamoff>(size / 2));
    const std::string garbage(512, '\x5a');
    file.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  const ClipSet clips = load_clips(s);
  RecordProperty("outcome", clips.from_cache ? "read from cache" : clips.cache_note);
  if (clips.from_cache) {
    // The garbage fell on bytes no read looks at; then the clips must still be intact.
    EXPECT_TRUE(clips.pixels == first.pixels);
  } else {
    EXPECT_TRUE(contains(clips.cache_note, "could not be read"));
    EXPECT_TRUE(clips.pixels == first.pixels);
  }
}

TEST_F(DatasetTest, UnwritableCacheStillLoads) {
  make_dataset();
  write_text(cache_file("a-file"), "x");
  DatasetSpec s = spec();
  s.cache_path = (directory_ / "a-file" / "clips.h5").string();
  const ClipSet clips = load_clips(s);
  EXPECT_EQ(clips.size(), 7u);
  EXPECT_EQ(clips.cache_file, "");
  EXPECT_TRUE(contains(clips.cache_note, "could not be written"));
}

TEST_F(DatasetTest, DefaultCacheHonoursXdgCacheHome) {
  make_dataset();
  const char* previous = std::getenv("XDG_CACHE_HOME");
  const std::string saved = previous ? previous : "";
  const fs::path xdg = directory_ / "xdg";
  ::setenv("XDG_CACHE_HOME", xdg.c_str(), 1);
  DatasetSpec s = spec();
  s.cache_path = "";
  const ClipSet first = load_clips(s);
  const ClipSet second = load_clips(s);
  if (previous) {
    ::setenv("XDG_CACHE_HOME", saved.c_str(), 1);
  } else {
    ::unsetenv("XDG_CACHE_HOME");
  }
  EXPECT_EQ(fs::path(first.cache_file).parent_path(), xdg / "hisvid");
  EXPECT_EQ(fs::path(first.cache_file).extension(), ".h5");
  EXPECT_TRUE(fs::exists(first.cache_file));
  EXPECT_TRUE(second.from_cache);
}

TEST_F(DatasetTest, CacheNoneWritesNothing) {
  make_dataset();
  const ClipSet clips = load_clips(spec("none"));
  EXPECT_EQ(clips.cache_file, "");
  EXPECT_FALSE(clips.from_cache);
  std::vector<std::string> entries;
  for (const auto& entry : fs::directory_iterator(directory_))
    entries.push_back(entry.path().filename().string());
  EXPECT_EQ(entries, std::vector<std::string>{"data"});
}

// opencv-doc's videos as a two-class dataset: tree.avi goes through the sequential fallback,
// Megamind.avi through seeking; both load, and load again from the cache.
TEST_F(DatasetTest, SampleVideosAsADataset) {
  const char* samples = std::getenv("HISVID_SAMPLE_VIDEOS");
  if (samples == nullptr || !fs::is_regular_file(fs::path(samples) / "tree.avi") ||
      !fs::is_regular_file(fs::path(samples) / "Megamind.avi")) {
    GTEST_SKIP() << "HISVID_SAMPLE_VIDEOS does not hold tree.avi and Megamind.avi "
                    "(export HISVID_SAMPLE_VIDEOS=$(scripts/fetch-sample-videos))";
  }
  fs::create_directories(root_ / "Trees");
  fs::create_directories(root_ / "Films");
  fs::create_symlink(fs::path(samples) / "tree.avi", root_ / "Trees" / "tree.avi");
  fs::create_symlink(fs::path(samples) / "Megamind.avi", root_ / "Films" / "Megamind.avi");
  DatasetSpec s = spec("clips.h5");
  s.extraction = ExtractionSettings{20, 64, 64};
  const ClipSet clips = load_clips(s);
  EXPECT_EQ(clips.class_names, (std::vector<std::string>{"Films", "Trees"}));
  ASSERT_EQ(clips.size(), 2u);
  EXPECT_TRUE(clips.skipped.empty());
  const Clip tree = extract_clip(clips.paths[1], s.extraction);
  EXPECT_EQ(tree.method, "sequential");
  EXPECT_TRUE(std::equal(tree.pixels.begin(), tree.pixels.end(), clips.clip(1)));
  const ClipSet again = load_clips(s);
  EXPECT_TRUE(again.from_cache);
  EXPECT_TRUE(again.pixels == clips.pixels);
}

// --- split_clips -------------------------------------------------------------------------------

std::vector<size_t> sorted_union(const Split& split) {
  std::vector<size_t> all = split.train;
  all.insert(all.end(), split.validation.begin(), split.validation.end());
  all.insert(all.end(), split.test.begin(), split.test.end());
  std::sort(all.begin(), all.end());
  return all;
}

std::vector<size_t> iota_vector(size_t n) {
  std::vector<size_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

TEST(SplitClips, SizesAndEveryClipOnce) {
  const Split split = split_clips(100, 0.25, 0.2, 27);
  EXPECT_EQ(split.test.size(), 25u);   // ceil(0.25 * 100), as train_test_split
  EXPECT_EQ(split.train.size(), 60u);  // int(75 * 0.8), as Keras's validation_split
  EXPECT_EQ(split.validation.size(), 15u);
  EXPECT_EQ(sorted_union(split), iota_vector(100));
  const Split odd = split_clips(7, 0.25, 0.2, 1);
  EXPECT_EQ(odd.test.size(), 2u);   // ceil(1.75)
  EXPECT_EQ(odd.train.size(), 4u);  // int(5 * 0.8)
  EXPECT_EQ(odd.validation.size(), 1u);
  EXPECT_EQ(sorted_union(odd), iota_vector(7));
  // Two clips: one held out for testing, the other trained on, none for validation.
  const Split two = split_clips(2, 0.95, 0.2, 1);
  EXPECT_EQ(two.test.size(), 1u);
  EXPECT_EQ(two.train.size(), 1u);
  EXPECT_TRUE(two.validation.empty());
  // The products rounded as Python rounds them (from a helper's audit against Keras's source):
  // Keras's int(90 * (1 - 0.3)) = int(62.99999999999999) = 62, sklearn's ceil(0.55 * 100) =
  // ceil(55.00000000000001) = 56.
  const Split keras = split_clips(90, 0.0, 0.3, 1);
  EXPECT_EQ(keras.train.size(), 62u);
  EXPECT_EQ(keras.validation.size(), 28u);
  EXPECT_EQ(split_clips(100, 0.55, 0.0, 1).test.size(), 56u);
}

TEST(SplitClips, DeterministicBySeed) {
  const Split a = split_clips(50, 0.2, 0.1, 27);
  const Split b = split_clips(50, 0.2, 0.1, 27);
  const Split c = split_clips(50, 0.2, 0.1, 28);
  EXPECT_EQ(a.train, b.train);
  EXPECT_EQ(a.validation, b.validation);
  EXPECT_EQ(a.test, b.test);
  EXPECT_NE(a.test, c.test);
  EXPECT_NE(a.train, iota_vector(a.train.size())) << "shuffled";
}

TEST(SplitClips, ValidationIsTheEndOfTheTrainingPart) {
  const Split without = split_clips(40, 0.25, 0.0, 5);
  const Split with = split_clips(40, 0.25, 0.2, 5);
  EXPECT_EQ(with.test, without.test);
  EXPECT_TRUE(without.validation.empty());
  std::vector<size_t> joined = with.train;
  joined.insert(joined.end(), with.validation.begin(), with.validation.end());
  EXPECT_EQ(joined, without.train);
  EXPECT_EQ(with.validation.size(), 6u);  // 30 - int(30 * 0.8)
}

TEST(SplitClips, ShuffledValidation) {
  const Split tail = split_clips(40, 0.25, 0.2, 5);
  const Split shuffled = split_clips(40, 0.25, 0.2, 5, /*shuffle_validation=*/true);
  EXPECT_EQ(shuffled.test, tail.test);
  EXPECT_EQ(shuffled.validation.size(), tail.validation.size());
  EXPECT_EQ(shuffled.train.size(), tail.train.size());
  EXPECT_NE(shuffled.validation, tail.validation);
  EXPECT_EQ(sorted_union(shuffled), iota_vector(40));
  const Split again = split_clips(40, 0.25, 0.2, 5, true);
  EXPECT_EQ(again.validation, shuffled.validation);
}

TEST(SplitClips, SmallCountsAndRounding) {
  const Split two = split_clips(2, 0.25, 0.0, 1);
  EXPECT_EQ(two.test.size(), 1u);
  EXPECT_EQ(two.train.size(), 1u);
  const Split one = split_clips(1, 0.25, 0.2, 1);
  EXPECT_EQ(one.test.size(), 0u);
  EXPECT_EQ(one.train.size() + one.validation.size(), 1u);
  // 0.7 * 10 = 7.000000000000001 in floating point: still 7 test clips, not 8.
  EXPECT_EQ(split_clips(10, 0.7, 0.0, 1).test.size(), 7u);
  EXPECT_EQ(split_clips(10, 0.0, 0.0, 1).train.size(), 10u);
}

TEST(SplitClips, BadFractions) {
  EXPECT_TRUE(contains(error_of([] { split_clips(10, -0.1, 0.2, 1); }), "test_fraction"));
  EXPECT_TRUE(contains(error_of([] { split_clips(10, 1.0, 0.2, 1); }), "test_fraction"));
  EXPECT_TRUE(contains(error_of([] { split_clips(10, std::nan(""), 0.2, 1); }), "test_fraction"));
  EXPECT_TRUE(contains(error_of([] { split_clips(10, 0.2, 1.5, 1); }), "validation_fraction"));
  EXPECT_TRUE(contains(error_of([] { split_clips(0, 0.2, 0.2, 1); }), "no clips"));
}

// --- make_batch ----------------------------------------------------------------------------------

// A hand-made clip set: N clips of (T,H,W,C) with pixel e of clip n = (e * 7 + n * 31) % 256.
ClipSet patterned_clips(int n, int frames, int height, int width, int classes) {
  ClipSet clips;
  clips.extraction = ExtractionSettings{frames, height, width};
  for (int k = 0; k < classes; ++k) clips.class_names.push_back("C" + std::to_string(k));
  const size_t elements = clips.clip_elements();
  for (int i = 0; i < n; ++i) {
    clips.labels.push_back(i % classes);
    clips.paths.push_back("clip" + std::to_string(i));
    for (size_t e = 0; e < elements; ++e)
      clips.pixels.push_back(static_cast<uint8_t>((e * 7 + i * 31) % 256));
  }
  return clips;
}

ClipSet flat_clips(int n, uint8_t value, int frames, int height, int width) {
  ClipSet clips = patterned_clips(n, frames, height, width, 2);
  std::fill(clips.pixels.begin(), clips.pixels.end(), value);
  return clips;
}

TEST(MakeBatch, PixelsOver255AsNumpyDoesThem) {
  // One clip holding every byte value: 1 x 16 x 16 x 3 = 768 = 3 * 256 values.
  ClipSet clips = patterned_clips(1, 1, 16, 16, 2);
  for (size_t e = 0; e < clips.pixels.size(); ++e) clips.pixels[e] = static_cast<uint8_t>(e % 256);
  const Batch batch = make_batch(clips, {0}, Augmentation{}, nullptr, Device::cpu());
  EXPECT_EQ(batch.x.shape(), Shape({1, 1, 16, 16, 3}));
  const float* x = batch.x.data<float>();
  for (size_t e = 0; e < clips.pixels.size(); ++e) {
    // np.float32(p / 255): the float64 quotient rounded to float32, bit for bit.
    ASSERT_EQ(x[e], static_cast<float>(static_cast<double>(e % 256) / 255.0)) << "pixel " << e % 256;
  }
  EXPECT_EQ(x[255], 1.0f);
  EXPECT_EQ(x[51], 0.2f);
  EXPECT_EQ(x[0], 0.0f);
}

TEST(MakeBatch, OneHotLabelsAndOrder) {
  const ClipSet clips = patterned_clips(6, 2, 3, 4, 3);
  const Batch batch = make_batch(clips, {5, 0, 4}, Augmentation{}, nullptr, Device::cpu());
  EXPECT_EQ(batch.x.shape(), Shape({3, 2, 3, 4, 3}));
  EXPECT_EQ(batch.y.shape(), Shape({3, 3}));
  EXPECT_EQ(batch.y.to_vector(), (std::vector<double>{0, 0, 1, 1, 0, 0, 0, 1, 0}));  // labels 2, 0, 1
  const float* x = batch.x.data<float>();
  const size_t elements = clips.clip_elements();
  for (size_t e = 0; e < elements; ++e) {
    ASSERT_EQ(x[e], static_cast<float>(clips.clip(5)[e]) / 255.0f);
    ASSERT_EQ(x[elements + e], static_cast<float>(clips.clip(0)[e]) / 255.0f);
  }
}

TEST(MakeBatch, FlipReversesWidthOrLeavesTheClip) {
  const int frames = 2, height = 3, width = 5;
  const ClipSet clips = patterned_clips(16, frames, height, width, 2);
  std::vector<size_t> indices(16);
  std::iota(indices.begin(), indices.end(), 0);
  Augmentation flip;
  flip.flip = true;
  Generator rng(3);
  const Batch batch = make_batch(clips, indices, flip, &rng, Device::cpu());
  const float* x = batch.x.data<float>();
  int flipped = 0;
  for (size_t b = 0; b < indices.size(); ++b) {
    bool same = true, reversed = true;
    for (int row = 0; row < frames * height; ++row) {
      for (int w = 0; w < width; ++w) {
        for (int c = 0; c < 3; ++c) {
          const float got = x[b * clips.clip_elements() + (static_cast<size_t>(row) * width + w) * 3 + c];
          const uint8_t* src = clips.clip(b) + static_cast<size_t>(row) * width * 3;
          same &= got == static_cast<float>(src[w * 3 + c]) / 255.0f;
          reversed &= got == static_cast<float>(src[(width - 1 - w) * 3 + c]) / 255.0f;
        }
      }
    }
    EXPECT_TRUE(same || reversed) << "clip " << b;
    flipped += reversed ? 1 : 0;
  }
  // With probability 1/2 each, 16 clips are neither all flipped nor none (for this seed).
  EXPECT_GT(flipped, 0);
  EXPECT_LT(flipped, 16);
  EXPECT_EQ(rng.offset(), 2u) << "a batch takes two draws";
}

TEST(MakeBatch, AugmentationIsDeterministicBySeedAndStaysInRange) {
  const ClipSet clips = patterned_clips(8, 3, 6, 6, 2);
  const std::vector<size_t> indices = {0, 1, 2, 3, 4, 5, 6, 7};
  Augmentation all;
  all.flip = true;
  all.brightness = 0.3;
  all.contrast = 0.4;
  all.noise = 0.2;
  Generator a(11), b(11), c(12);
  const std::vector<double> xa = make_batch(clips, indices, all, &a, Device::cpu()).x.to_vector();
  const std::vector<double> xb = make_batch(clips, indices, all, &b, Device::cpu()).x.to_vector();
  const std::vector<double> xc = make_batch(clips, indices, all, &c, Device::cpu()).x.to_vector();
  EXPECT_EQ(xa, xb);
  EXPECT_NE(xa, xc);
  for (const double v : xa) {
    ASSERT_GE(v, 0.0);
    ASSERT_LE(v, 1.0);
  }
  // The next batch from the same generator is different again.
  EXPECT_NE(make_batch(clips, indices, all, &a, Device::cpu()).x.to_vector(), xa);
}

// On a GPU the batch is made there (kernels/clips.h) from the clips' uint8 values: the same
// values as on the CPU within the kernel table's elementwise tolerance (the device's logf and
// cosf in the noise, the contrast mean summed in another order).
TEST(MakeBatch, OnTheGpuMatchesTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  constexpr double kTol = 1e-6;
  const ClipSet clips = patterned_clips(8, 3, 6, 6, 2);
  const std::vector<size_t> indices = {7, 0, 3, 3, 5};
  Augmentation all;
  all.flip = true;
  all.brightness = 0.3;
  all.contrast = 0.4;
  all.noise = 0.2;
  for (const Augmentation& augmentation : {Augmentation{}, all}) {
    Generator a(21), b(21);
    const Batch cpu = make_batch(clips, indices, augmentation, &a, Device::cpu());
    const Batch gpu = make_batch(clips, indices, augmentation, &b, Device::cuda(0));
    const std::vector<double> x = cpu.x.to_vector(), xg = gpu.x.to_vector();
    ASSERT_EQ(x.size(), xg.size());
    for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(xg[i], x[i], kTol) << "value " << i;
    EXPECT_EQ(gpu.y.to_vector(), cpu.y.to_vector());
  }
}

// Noise is sigma * philox_normal(seed, offset, b * E + e) of the batch's second draw; an odd
// clip size (1 x 1 x 3 x 3 = 9 values) exercises the pairs that straddle two clips.
TEST(MakeBatch, NoiseIsPhiloxNormal) {
  const ClipSet clips = flat_clips(3, 128, 1, 1, 3);
  Augmentation noise;
  noise.noise = 0.05;
  Generator rng(21, 4);
  const Batch batch = make_batch(clips, {0, 1, 2}, noise, &rng, Device::cpu());
  const float* x = batch.x.data<float>();
  const float sigma = 0.05f;
  for (uint64_t i = 0; i < 27; ++i) {
    const float expected = std::min(std::max(128.0f / 255.0f + sigma * philox_normal(21, 5, i), 0.0f), 1.0f);
    EXPECT_EQ(x[i], expected) << "element " << i;
  }
}

TEST(MakeBatch, BrightnessShiftsAClipByOneAmount) {
  const ClipSet clips = patterned_clips(4, 2, 4, 4, 2);
  Augmentation brightness;
  brightness.brightness = 0.1;
  Generator rng(5);
  const Batch batch = make_batch(clips, {0, 1, 2, 3}, brightness, &rng, Device::cpu());
  const float* x = batch.x.data<float>();
  const size_t elements = clips.clip_elements();
  // Unclipped pixels of one clip all move by the same delta in [-0.1, 0.1].
  constexpr float kFloatSlack = 1e-6f;  // two float roundings of values <= 1
  for (size_t b = 0; b < 4; ++b) {
    float delta = 0;
    bool first = true;
    for (size_t e = 0; e < elements; ++e) {
      const float base = static_cast<float>(clips.clip(b)[e]) / 255.0f;
      const float got = x[b * elements + e];
      if (got <= 0.0f || got >= 1.0f) continue;
      if (first) {
        delta = got - base;
        first = false;
        EXPECT_LE(std::fabs(delta), 0.1f + kFloatSlack);
      }
      EXPECT_NEAR(got - base, delta, kFloatSlack);
    }
  }
}

TEST(MakeBatch, ContrastKeepsTheClipMean) {
  const ClipSet clips = flat_clips(2, 100, 1, 2, 2);
  ClipSet varied = clips;
  for (size_t e = 0; e < varied.pixels.size(); ++e) varied.pixels[e] = static_cast<uint8_t>(90 + (e % 5) * 5);
  Augmentation contrast;
  contrast.contrast = 0.5;
  Generator rng(8);
  const Batch batch = make_batch(varied, {0, 1}, contrast, &rng, Device::cpu());
  const float* x = batch.x.data<float>();
  const size_t elements = varied.clip_elements();
  constexpr double kMeanTolerance = 1e-6;  // float rounding of 12 values near 0.4
  for (size_t b = 0; b < 2; ++b) {
    double before = 0, after = 0;
    for (size_t e = 0; e < elements; ++e) {
      before += varied.clip(b)[e] / 255.0;
      after += x[b * elements + e];
    }
    EXPECT_NEAR(after / elements, before / elements, kMeanTolerance);
  }
}

TEST(MakeBatch, Errors) {
  const ClipSet clips = patterned_clips(3, 1, 2, 2, 2);
  Augmentation flip;
  flip.flip = true;
  EXPECT_TRUE(
      contains(error_of([&] { make_batch(clips, {0}, flip, nullptr, Device::cpu()); }), "rng is null"));
  EXPECT_TRUE(contains(error_of([&] { make_batch(clips, {3}, Augmentation{}, nullptr, Device::cpu()); }),
                       "out of range"));
  EXPECT_TRUE(contains(error_of([&] { make_batch(clips, {}, Augmentation{}, nullptr, Device::cpu()); }),
                       "no clip indices"));
  EXPECT_TRUE(contains(error_of([&] { make_batch(ClipSet{}, {0}, Augmentation{}, nullptr, Device::cpu()); }),
                       "empty"));
}

// --- epoch_batches -------------------------------------------------------------------------------

TEST(EpochBatches, LastBatchSmallerAndOrderKeptWithoutShuffle) {
  Generator rng(1);
  const std::vector<size_t> indices = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0};
  const auto batches = epoch_batches(indices, 4, /*shuffle=*/false, rng);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0], (std::vector<size_t>{9, 8, 7, 6}));
  EXPECT_EQ(batches[2], (std::vector<size_t>{1, 0}));
  EXPECT_EQ(rng.offset(), 0u) << "no draw without shuffling";
  EXPECT_TRUE(epoch_batches({}, 4, true, rng).empty());
  EXPECT_TRUE(contains(error_of([&] { epoch_batches(indices, 0, false, rng); }), "batch_size"));
}

TEST(EpochBatches, ShuffleIsAPermutationDeterministicBySeed) {
  std::vector<size_t> indices(23);
  std::iota(indices.begin(), indices.end(), 100);
  Generator a(4), b(4), c(5);
  const auto first = epoch_batches(indices, 5, true, a);
  EXPECT_EQ(first, epoch_batches(indices, 5, true, b));
  EXPECT_NE(first, epoch_batches(indices, 5, true, c));
  EXPECT_NE(first, epoch_batches(indices, 5, true, a)) << "the next epoch is shuffled differently";
  ASSERT_EQ(first.size(), 5u);
  EXPECT_EQ(first.back().size(), 3u);
  std::vector<size_t> all;
  for (const auto& batch : first) all.insert(all.end(), batch.begin(), batch.end());
  EXPECT_NE(all, indices);
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, indices);
}

// --- atomic writes -----------------------------------------------------------------------------

std::string text_of(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(AtomicWrite, ThroughALinkReplacesWhatItLeadsToAndKeepsTheLink) {
  const fs::path dir = fs::temp_directory_path() / ("hisvid_atomic_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "elsewhere");
  std::ofstream(dir / "elsewhere" / "cache.h5") << "old";
  fs::create_symlink(fs::path("elsewhere") / "cache.h5", dir / "link.h5");  // relative, as users write them
  write_atomically((dir / "link.h5").string(), [](const std::string& temp) { std::ofstream(temp) << "new"; });
  EXPECT_TRUE(fs::is_symlink(dir / "link.h5"));
  EXPECT_EQ(text_of(dir / "elsewhere" / "cache.h5"), "new");
  fs::remove_all(dir);
}

TEST(AtomicWrite, StaleTemporariesOfThePathGoAndNothingElse) {
  const fs::path dir = fs::temp_directory_path() / ("hisvid_stale_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string dead = "999999999";  // above any pid_max: no such process
  const std::string alive = std::to_string(::getpid());
  for (const std::string& name :
       {"c.h5.tmp-" + dead + "-0.h5", "c.h5.tmp-" + alive + "-1.h5", "c.h5.tmp-" + dead + "-x.h5",
        "d.h5.tmp-" + dead + "-0.h5", "notes.tmp-" + dead + "-0.txt"}) {
    std::ofstream(dir / name) << "x";
  }
  remove_stale_temporaries((dir / "c.h5").string());
  EXPECT_FALSE(fs::exists(dir / ("c.h5.tmp-" + dead + "-0.h5")));   // a dead writer's: gone
  EXPECT_TRUE(fs::exists(dir / ("c.h5.tmp-" + alive + "-1.h5")));   // a live writer's
  EXPECT_TRUE(fs::exists(dir / ("c.h5.tmp-" + dead + "-x.h5")));    // not hisvid's naming
  EXPECT_TRUE(fs::exists(dir / ("d.h5.tmp-" + dead + "-0.h5")));    // another file's
  EXPECT_TRUE(fs::exists(dir / ("notes.tmp-" + dead + "-0.txt")));  // a user's
  // Younger than `idle`: kept (a writer on another machine sharing the directory).
  std::ofstream(dir / ("c.h5.tmp-" + dead + "-2.h5")) << "x";
  remove_stale_temporaries((dir / "c.h5").string(), std::chrono::seconds(600));
  EXPECT_TRUE(fs::exists(dir / ("c.h5.tmp-" + dead + "-2.h5")));
  // libzip's own temporary of a .keras archive being written: <temp>.XXXXXX.
  std::ofstream(dir / ("m.keras.tmp-" + dead + "-0.keras.4v67ty")) << "x";
  std::ofstream(dir / ("m.keras.tmp-" + dead + "-0.keras.notes")) << "x";
  remove_stale_temporaries((dir / "m.keras").string());
  EXPECT_FALSE(fs::exists(dir / ("m.keras.tmp-" + dead + "-0.keras.4v67ty")));
  EXPECT_TRUE(fs::exists(dir / ("m.keras.tmp-" + dead + "-0.keras.notes")));
  // Every write of a path first removes what a killed writer of it left, once nothing has
  // written it for 10 minutes (a writer on another machine sharing the directory keeps it fresh).
  std::ofstream(dir / ("c.h5.tmp-" + dead + "-3.h5")) << "x";
  std::ofstream(dir / ("c.h5.tmp-" + dead + "-4.h5")) << "x";
  fs::last_write_time(dir / ("c.h5.tmp-" + dead + "-3.h5"),
                      fs::file_time_type::clock::now() - std::chrono::minutes(11));
  write_file_atomically((dir / "c.h5").string(), "whole");
  EXPECT_FALSE(fs::exists(dir / ("c.h5.tmp-" + dead + "-3.h5")));
  EXPECT_TRUE(fs::exists(dir / ("c.h5.tmp-" + dead + "-4.h5")));
  fs::remove_all(dir);
}

// What a SIGINT/SIGTERM handler calls before the process ends: the file being written goes.
TEST(AtomicWrite, TheFileBeingWrittenCanBeRemovedFromASignalHandler) {
  const fs::path dir = fs::temp_directory_path() / ("hisvid_signal_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  bool removed = false;
  EXPECT_THROW(
      write_atomically((dir / "out.csv").string(),
                       [&](const std::string& temp) {
                         std::ofstream(temp) << "half";
                         ASSERT_TRUE(fs::exists(temp));
                         remove_temporaries_now();
                         removed = !fs::exists(temp);
                         throw std::runtime_error("the signal's default action ends the process here");
                       }),
      std::runtime_error);
  EXPECT_TRUE(removed);
  EXPECT_TRUE(fs::is_empty(dir));
  remove_temporaries_now();  // nothing in flight: nothing removed
  write_file_atomically((dir / "out.csv").string(), "whole");
  remove_temporaries_now();
  EXPECT_EQ(text_of(dir / "out.csv"), "whole");
  fs::remove_all(dir);
}

TEST(AtomicWrite, AReplacedFileKeepsItsPermissions) {
  const fs::path dir = fs::temp_directory_path() / ("hisvid_mode_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "private.csv") << "mine";
  fs::permissions(dir / "private.csv", fs::perms::owner_read | fs::perms::owner_write);
  write_file_atomically((dir / "private.csv").string(), "new");
  EXPECT_EQ(text_of(dir / "private.csv"), "new");
  EXPECT_EQ(fs::status(dir / "private.csv").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  fs::remove_all(dir);
}

// A file the command found absent (no --overwrite) that another process made meanwhile is kept,
// and the write says so; without the mark the same write replaces it.
TEST(AtomicWrite, AFileExpectedNewIsNeverReplaced) {
  const fs::path dir = fs::temp_directory_path() / ("hisvid_new_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = (dir / "same.csv").string();
  expect_new_file(path);
  std::ofstream(path) << "the other command's";
  try {
    write_file_atomically(path, "this command's");
    ADD_FAILURE() << "replaced a file expected new";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another process made this file"), std::string::npos) << e.what();
  }
  EXPECT_EQ(text_of(path), "the other command's");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);  // no temporary left
  write_file_atomically((dir / "other.csv").string(), "a");
  write_file_atomically((dir / "other.csv").string(), "b");
  EXPECT_EQ(text_of(dir / "other.csv"), "b");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace hisvid::io
