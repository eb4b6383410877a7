// io/synthetic.cpp — the generator of the built-in dataset (io/synthetic.h): scenes, frames, and
// the clips a model samples from them. The files are written by io/synthetic_files.cpp.
//
// Classes and the pair property. Four pairs; each pair has one generator of "forward" clips
// (MoveRight, MoveDown, Grow, OrbitClockwise) and its partner (MoveLeft, MoveUp, Shrink,
// OrbitCounterclockwise) is the same clip played backwards: clip c of either class of pair p is
// drawn from the Philox stream (seed, p, c), scene and camera noise included, and frame t of the
// partner is forward frame T-1-t. The two classes of a pair hold exactly the same frames in
// opposite orders, so no per-frame statistic can tell them apart; only the order can.
//
// One clip. All lengths are fractions of S = min(width, height).
// - Background, static, one of five kinds: flat colour; linear gradient between two colours;
//   3-6 soft elliptical blobs on a base colour; soft sinusoidal stripes (period 0.10-0.30 S, any
//   angle); a smooth texture (a 3x3 to 8x8 grid of colours, bilinearly enlarged). Every colour
//   of a background has its luminance in a band of half-width 0.03-0.12 around a centre in
//   [0.15, 0.85], and every background pixel is a convex mix of them, so it stays in the band.
// - Object: circle, square, triangle, cross or five-pointed star at a random fixed angle, of a
//   random hue whose luminance is at least kMinContrast (0.30, ~77 of 255 levels) above or below
//   every background pixel's, drawn anti-aliased at sub-pixel positions.
// - Motion, eased: position s(u) = u + a u (u - 1) of the clip's time u in [0, 1], a in
//   [-0.4, 0.4] (constant speed, speeding up or slowing down; always monotone).
//     Move*: object radius 0.10-0.16 S (a circle's diameter is 20-32% of the frame), travelling
//       35% of the frame side up to what fits (at most 60%), from a random start, at a random
//       fixed height (or column).
//     Grow/Shrink: radius from 0.06-0.09 S to 0.18-0.23 S about a random fixed centre.
//     Orbit*: radius 0.10-0.14 S, on a circle of radius 0.17-0.22 S about a point within
//       0.04 S of the frame centre, starting within 60 degrees of 12 o'clock (forward: clockwise
//       on screen) and sweeping 180-270 degrees.
//   The object always stays whole inside the frame, at least 0.03 S from its edges.
// - Camera noise: triangular (the sum of two uniform bytes, rescaled), sigma 0.5-2.0 of 255
//   levels, independent per pixel, channel and frame.
//
// The clips a model samples (synthetic_clip_set): the frames the files would hold, sampled and
// resized as frames_extraction does (io/frames.h), without the files' MJPG encoding and decoding.
#include "io/synthetic.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "engine/error.h"
#include "engine/random.h"
#include "io/frames.h"
#include "kernels/philox.h"

namespace hisvid::io {

namespace {

constexpr int kClipsPerGroup = 4;
constexpr double kPi = 3.14159265358979323846;

// Luminance distance between the object and every background pixel, in [0, 1]: the largest
// background band (half-width 0.12) plus this still leaves room for a dark or a bright object.
constexpr double kMinContrast = 0.30;
// Largest vertex radius of the unit shapes below (the star's tips): the object's extent.
constexpr double kShapeExtent = 1.4;

// Philox offsets of a clip: ((pair << 48) | (clip << 20)) + k. The scene takes offsets from
// k = 0 on (at most ~270, for an 8 x 8 texture), frame t's camera noise k = kNoiseOffset + t.
constexpr uint64_t kNoiseOffset = 1024;

enum class Motion { Horizontal, Vertical, Scale, Orbit };

struct ClassInfo {
  const char* name;
  Motion motion;
  bool reversed;  // played backwards: frame t is forward frame T-1-t
};

// Partners adjacent; the forward generators move right, down (image y grows downwards), grow and
// orbit clockwise on screen.
constexpr ClassInfo kClasses[] = {
    {"MoveLeft", Motion::Horizontal, true},   {"MoveRight", Motion::Horizontal, false},
    {"MoveUp", Motion::Vertical, true},       {"MoveDown", Motion::Vertical, false},
    {"Grow", Motion::Scale, false},           {"Shrink", Motion::Scale, true},
    {"OrbitClockwise", Motion::Orbit, false}, {"OrbitCounterclockwise", Motion::Orbit, true},
};
constexpr int kClassCount = static_cast<int>(std::size(kClasses));

// Scalar draws from one Philox stream, one Generator offset each.
class Draws {
 public:
  Draws(uint64_t seed, uint64_t offset) : generator_(seed, offset) {}
  double uniform(double low, double high) {
    const RandomDraw draw = generator_.next();
    return low + (high - low) * philox_uniform(draw.seed, draw.offset, 0);
  }
  int below(int bound) { return static_cast<int>(generator_.below(static_cast<uint64_t>(bound))); }

 private:
  Generator generator_;
};

// ---------------------------------------------------------------------------------------------
// Colours: BGR in [0, 1], luminance with the BT.601 weights OpenCV's BGR2GRAY uses.

double luminance(const cv::Vec3f& bgr) { return 0.114 * bgr[0] + 0.587 * bgr[1] + 0.299 * bgr[2]; }

// A random hue with exactly luminance y: a random colour blended towards white or scaled towards
// black (luminance is linear in the channels, so the blend hits y exactly).
cv::Vec3f colour_with_luminance(Draws& draws, double y) {
  cv::Vec3f c;
  for (int k = 0; k < 3; ++k) c[k] = static_cast<float>(draws.uniform(0, 1));
  const double yc = luminance(c);
  if (yc > y) {
    c *= static_cast<float>(y / yc);
  } else if (yc < y) {
    const float a = static_cast<float>((y - yc) / (1.0 - yc));
    for (int k = 0; k < 3; ++k) c[k] += a * (1.0f - c[k]);
  }
  return c;
}

cv::Vec3f mix(const cv::Vec3f& a, const cv::Vec3f& b, double w) {
  return a * static_cast<float>(1.0 - w) + b * static_cast<float>(w);
}

// ---------------------------------------------------------------------------------------------
// Backgrounds

struct Band {
  double low = 0, high = 0;  // luminance range of every background pixel
};

cv::Mat3f make_background(Draws& draws, int width, int height, Band& band) {
  enum Kind { kFlat, kGradient, kBlobs, kStripes, kTexture, kKinds };
  const int kind = draws.below(kKinds);
  const double side = std::min(width, height);
  const double centre = draws.uniform(0.15, 0.85);
  const double half = kind == kFlat ? 0.0 : draws.uniform(0.03, 0.12);
  band = Band{centre - half, centre + half};
  auto colour = [&] { return colour_with_luminance(draws, draws.uniform(band.low, band.high)); };

  cv::Mat3f image(height, width);
  switch (kind) {
    case kFlat:
      image.setTo(colour_with_luminance(draws, centre));
      break;
    case kGradient: {
      const cv::Vec3f a = colour(), b = colour();
      const double angle = draws.uniform(0, 2 * kPi), cs = std::cos(angle), sn = std::sin(angle);
      const double reach = 0.5 * (width * std::abs(cs) + height * std::abs(sn));
      for (int y = 0; y < height; ++y) {
        for (int x = 0; x < width; ++x) {
          const double along = (x + 0.5 - 0.5 * width) * cs + (y + 0.5 - 0.5 * height) * sn;
          image(y, x) = mix(a, b, std::clamp(0.5 + 0.5 * along / reach, 0.0, 1.0));
        }
      }
      break;
    }
    case kBlobs: {
      image.setTo(colour());
      const int blobs = 3 + draws.below(4);
      for (int i = 0; i < blobs; ++i) {
        const cv::Vec3f c = colour();
        const double cx = draws.uniform(0, width), cy = draws.uniform(0, height);
        const double sx = draws.uniform(0.08, 0.25) * side, sy = draws.uniform(0.08, 0.25) * side;
        const double strength = draws.uniform(0.5, 0.9);
        for (int y = 0; y < height; ++y) {
          for (int x = 0; x < width; ++x) {
            const double dx = (x + 0.5 - cx) / sx, dy = (y + 0.5 - cy) / sy;
            image(y, x) = mix(image(y, x), c, strength * std::exp(-0.5 * (dx * dx + dy * dy)));
          }
        }
      }
      break;
    }
    case kStripes: {
      const cv::Vec3f a = colour(), b = colour();
      const double period = draws.uniform(0.10, 0.30) * side;
      const double angle = draws.uniform(0, kPi), cs = std::cos(angle), sn = std::sin(angle);
      const double phase = draws.uniform(0, 2 * kPi);
      for (int y = 0; y < height; ++y) {
        for (int x = 0; x < width; ++x) {
          const double along = (x + 0.5) * cs + (y + 0.5) * sn;
          image(y, x) = mix(a, b, 0.5 + 0.5 * std::sin(2 * kPi * along / period + phase));
        }
      }
      break;
    }
    default: {  // kTexture
      const int cells = 3 + draws.below(6);
      cv::Mat3f grid(cells, cells);
      for (int y = 0; y < cells; ++y) {
        for (int x = 0; x < cells; ++x) grid(y, x) = colour();
      }
      cv::resize(grid, image, cv::Size(width, height), 0, 0, cv::INTER_LINEAR);
      break;
    }
  }
  return image;
}

// ---------------------------------------------------------------------------------------------
// Objects and their motion

enum class Shape { Circle, Square, Triangle, Cross, Star, Count };

// Vertices of the shape of unit radius (areas between 2.5 and 3.2, the unit circle's 3.14).
std::vector<cv::Point2d> unit_shape(Shape shape) {
  std::vector<cv::Point2d> points;
  auto ring = [&](int count, double start_degrees, auto radius_of) {
    for (int i = 0; i < count; ++i) {
      const double angle = (start_degrees + 360.0 * i / count) * kPi / 180.0;
      points.emplace_back(radius_of(i) * std::cos(angle), radius_of(i) * std::sin(angle));
    }
  };
  switch (shape) {
    case Shape::Circle:
      ring(48, 0.0, [](int) { return 1.0; });
      break;
    case Shape::Square:
      ring(4, 45.0, [](int) { return 1.2; });
      break;
    case Shape::Triangle:
      ring(3, -90.0, [](int) { return kShapeExtent; });
      break;
    case Shape::Cross: {
      const double w = 0.4, l = 1.2;
      points = {{w, l},   {w, w},   {l, w},   {l, -w}, {w, -w}, {w, -l},
                {-w, -l}, {-w, -w}, {-l, -w}, {-l, w}, {-w, w}, {-w, l}};
      break;
    }
    default:  // Star
      ring(10, -90.0, [](int i) { return i % 2 == 0 ? kShapeExtent : 0.6; });
      break;
  }
  return points;
}

struct Pose {
  double x = 0, y = 0, radius = 0;  // object centre and radius in pixels
};

struct Trajectory {
  Motion motion = Motion::Horizontal;
  Pose start, end;                                 // Move and Scale: interpolated between these
  double orbit_radius = 0, angle0 = 0, sweep = 0;  // Orbit: centre and object radius in `start`
  double ease = 0;

  Pose at(double u) const {
    const double s = u + ease * u * (u - 1.0);
    if (motion == Motion::Orbit) {
      const double angle = angle0 + sweep * s;
      return Pose{start.x + orbit_radius * std::cos(angle), start.y + orbit_radius * std::sin(angle),
                  start.radius};
    }
    return Pose{start.x + (end.x - start.x) * s, start.y + (end.y - start.y) * s,
                start.radius + (end.radius - start.radius) * s};
  }
};

Trajectory make_trajectory(Draws& draws, Motion motion, int width, int height) {
  const double side = std::min(width, height);
  const double margin = 0.03 * side;
  Trajectory path;
  path.motion = motion;
  path.ease = draws.uniform(-0.4, 0.4);
  switch (motion) {
    case Motion::Horizontal:
    case Motion::Vertical: {
      const bool horizontal = motion == Motion::Horizontal;
      const double along_side = horizontal ? width : height, across_side = horizontal ? height : width;
      const double radius = draws.uniform(0.10, 0.16) * side, extent = kShapeExtent * radius;
      const double room = along_side - 2 * (extent + margin);  // >= 0.492 S
      const double travel = draws.uniform(0.35, std::min(0.60, room / along_side)) * along_side;
      const double from = draws.uniform(extent + margin, extent + margin + room - travel);
      const double across = draws.uniform(extent + margin, across_side - extent - margin);
      path.start = horizontal ? Pose{from, across, radius} : Pose{across, from, radius};
      path.end = horizontal ? Pose{from + travel, across, radius} : Pose{across, from + travel, radius};
      break;
    }
    case Motion::Scale: {
      const double small = draws.uniform(0.06, 0.09) * side, large = draws.uniform(0.18, 0.23) * side;
      const double reach = kShapeExtent * large + margin;
      const double x = draws.uniform(reach, width - reach), y = draws.uniform(reach, height - reach);
      path.start = Pose{x, y, small};
      path.end = Pose{x, y, large};
      break;
    }
    case Motion::Orbit: {
      // Reach from the frame centre: 0.04 + 0.22 + 1.4 * 0.14 = 0.456 S < 0.5 S - margin.
      path.start = Pose{0.5 * width + draws.uniform(-0.04, 0.04) * side,
                        0.5 * height + draws.uniform(-0.04, 0.04) * side, draws.uniform(0.10, 0.14) * side};
      path.end = path.start;
      path.orbit_radius = draws.uniform(0.17, 0.22) * side;
      path.angle0 = -0.5 * kPi + draws.uniform(-kPi / 3, kPi / 3);  // near 12 o'clock
      path.sweep = draws.uniform(kPi, 1.5 * kPi);                   // positive: clockwise on screen (y down)
      break;
    }
  }
  return path;
}

// ---------------------------------------------------------------------------------------------
// A clip

struct Scene {
  cv::Mat3f background;  // (H,W) BGR in [0, 1]
  cv::Vec3f colour;
  std::vector<cv::Point2d> shape;  // unit radius, rotated
  Trajectory path;
  double noise_levels = 0;  // camera noise sigma, in 0-255 levels
  uint64_t seed = 0, offset = 0;
};

uint64_t clip_offset(int pair, int clip) {
  return (static_cast<uint64_t>(pair) << 48) | (static_cast<uint64_t>(clip) << 20);
}

Scene make_scene(uint64_t seed, int pair, int clip, Motion motion, int width, int height) {
  Scene scene;
  scene.seed = seed;
  scene.offset = clip_offset(pair, clip);
  Draws draws(seed, scene.offset);
  Band band;
  scene.background = make_background(draws, width, height, band);

  const bool can_be_dark = band.low - kMinContrast >= 0.0, can_be_bright = band.high + kMinContrast <= 1.0;
  if (!can_be_dark && !can_be_bright) {
    fail("make_synthetic_dataset: internal error: no object luminance contrasts with [{}, {}]", band.low,
         band.high);
  }
  const bool dark = can_be_dark && (!can_be_bright || draws.below(2) == 0);
  const double y =
      dark ? draws.uniform(0.0, band.low - kMinContrast) : draws.uniform(band.high + kMinContrast, 1.0);
  scene.colour = colour_with_luminance(draws, y);

  const double rotation = draws.uniform(0, 2 * kPi), cs = std::cos(rotation), sn = std::sin(rotation);
  for (const cv::Point2d& p : unit_shape(static_cast<Shape>(draws.below(static_cast<int>(Shape::Count))))) {
    scene.shape.emplace_back(cs * p.x - sn * p.y, sn * p.x + cs * p.y);
  }
  scene.path = make_trajectory(draws, motion, width, height);
  scene.noise_levels = draws.uniform(0.5, 2.0);
  return scene;
}

// The object's outline at forward frame t of `frames`, in pixel coordinates (render_frame draws
// the same vertices shifted by half a pixel: fillPoly puts pixel centres on integers).
std::vector<cv::Point2d> outline(const Scene& scene, int t, int frames) {
  const Pose pose = scene.path.at(static_cast<double>(t) / (frames - 1));
  std::vector<cv::Point2d> points;
  for (const cv::Point2d& p : scene.shape)
    points.emplace_back(pose.x + pose.radius * p.x, pose.y + pose.radius * p.y);
  return points;
}

// Forward frame t of `frames` into `out` (H,W) BGR uint8.
void render_frame(const Scene& scene, int t, int frames, cv::Mat3b& out) {
  const int height = scene.background.rows, width = scene.background.cols;

  // Coverage of the object, anti-aliased, vertices with 8 fractional bits.
  constexpr int kShift = 8;
  const double scale = 1 << kShift;
  const Pose pose = scene.path.at(static_cast<double>(t) / (frames - 1));
  std::vector<cv::Point> vertices;
  for (const cv::Point2d& p : scene.shape) {
    vertices.emplace_back(static_cast<int>(std::lround((pose.x - 0.5 + pose.radius * p.x) * scale)),
                          static_cast<int>(std::lround((pose.y - 0.5 + pose.radius * p.y) * scale)));
  }
  cv::Mat1b coverage = cv::Mat1b::zeros(height, width);
  const cv::Point* polygon = vertices.data();
  const int count = static_cast<int>(vertices.size());
  cv::fillPoly(coverage, &polygon, &count, 1, cv::Scalar(255), cv::LINE_AA, kShift);

  // Camera noise: each 16-bit half of a Philox word gives one sample, the sum of its two bytes
  // (triangular, mean 255, standard deviation 104.5), rescaled to unit variance.
  const RandomDraw draw =
      Generator(scene.seed, scene.offset + kNoiseOffset + static_cast<uint64_t>(t)).next();
  const size_t elements = static_cast<size_t>(height) * width * 3;
  std::vector<int16_t> noise(elements + 7);
  for (size_t i = 0; i < elements; i += 8) {
    const Philox4x32 words = philox_block(draw.seed, draw.offset, i / 2);
    for (int k = 0; k < 8; ++k) {
      const uint32_t half = words.v[k / 2] >> (16 * (k % 2));
      noise[i + k] = static_cast<int16_t>((half & 0xff) + ((half >> 8) & 0xff) - 255);
    }
  }
  const float noise_scale = static_cast<float>(scene.noise_levels / 104.5);

  out.create(height, width);
  size_t element = 0;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const float a = coverage(y, x) / 255.0f;
      const cv::Vec3f clean = scene.background(y, x) * (1.0f - a) + scene.colour * a;
      for (int k = 0; k < 3; ++k, ++element) {
        out(y, x)[k] = cv::saturate_cast<uint8_t>(clean[k] * 255.0f + noise_scale * noise[element]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The spec

// The generator's index of class `name`; -1 when it has none of that name.
int class_index(const std::string& name) {
  for (int i = 0; i < kClassCount; ++i) {
    if (name == kClasses[i].name) return i;
  }
  return -1;
}

std::vector<int> resolve_classes(const SyntheticSpec& spec) {
  std::vector<int> chosen;
  if (spec.classes.empty()) {
    for (int i = 0; i < kClassCount; ++i) chosen.push_back(i);
    return chosen;
  }
  for (const std::string& name : spec.classes) {
    const int index = class_index(name);
    if (index < 0) {
      std::string known;
      for (const ClassInfo& info : kClasses) known += (known.empty() ? "" : ", ") + std::string(info.name);
      fail("built-in dataset: unknown class '{}' (known: {})", name, known);
    }
    if (std::find(chosen.begin(), chosen.end(), index) != chosen.end()) {
      fail("built-in dataset: class '{}' is listed twice", name);
    }
    chosen.push_back(index);
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

void validate(const SyntheticSpec& spec) {
  if (spec.clips_per_class < 1 || spec.clips_per_class > kMaxClipsPerClass) {
    fail("built-in dataset: clips per class must be between 1 and {} (got {})", kMaxClipsPerClass,
         spec.clips_per_class);
  }
  if (spec.frames_per_clip < kMinFrames || spec.frames_per_clip > kMaxFrames) {
    fail(
        "built-in dataset: frames per clip must be between {} (the frames a model samples) and {} "
        "(got {})",
        kMinFrames, kMaxFrames, spec.frames_per_clip);
  }
  if (spec.width < kMinSide || spec.height < kMinSide || spec.width > kMaxSide || spec.height > kMaxSide) {
    fail("built-in dataset: width and height must be between {} and {} pixels (got {} x {})", kMinSide,
         kMaxSide, spec.width, spec.height);
  }
  const double clip_bytes = 3.0 * spec.frames_per_clip * spec.width * spec.height;
  if (clip_bytes > static_cast<double>(kMaxClipBytes)) {
    fail(
        "built-in dataset: a clip of {} frames of {} x {} pixels takes {:.1f} GiB in memory while it is "
        "written; at most {} GiB (fewer frames or a smaller size)",
        spec.frames_per_clip, spec.width, spec.height, clip_bytes / double(1 << 30), kMaxClipBytes >> 30);
  }
  if (spec.width % 2 != 0 || spec.height % 2 != 0) {
    // FFmpeg's MJPG encoder subsamples chroma 2x2 and OpenCV's writer silently crops odd sides.
    fail("built-in dataset: width and height must be even (got {} x {})", spec.width, spec.height);
  }
  if (!std::isfinite(spec.fps) || spec.fps <= 0 || spec.fps > 1000) {
    fail("built-in dataset: fps must be in (0, 1000] (got {})", spec.fps);
  }
}

// The class index of clip `clip` of `class_name`, after checking the spec and that the clip exists.
int class_of_clip(const SyntheticSpec& spec, const std::string& class_name, int clip, const char* who) {
  validate(spec);
  SyntheticSpec one = spec;
  one.classes = {class_name};
  const int index = resolve_classes(one)[0];
  if (clip < 0 || clip >= spec.clips_per_class) {
    fail("{}: clip {} of class '{}' does not exist (clips_per_class {})", who, clip, class_name,
         spec.clips_per_class);
  }
  return index;
}

Scene scene_of(const SyntheticSpec& spec, int index, int clip) {
  return make_scene(spec.seed, index / 2, clip, kClasses[index].motion, spec.width, spec.height);
}

// The forward frame shown as frame t of a clip of class `info`.
int forward_frame(const SyntheticSpec& spec, const ClassInfo& info, int t) {
  return info.reversed ? spec.frames_per_clip - 1 - t : t;
}

}  // namespace

const std::vector<std::string>& synthetic_class_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> all;
    for (const ClassInfo& info : kClasses) all.push_back(info.name);
    return all;
  }();
  return names;
}

std::string synthetic_clip_name(const std::string& class_name, int clip) {
  return fmt::format("v_{}_g{:02d}_c{:02d}.avi", class_name, clip / kClipsPerGroup + 1,
                     clip % kClipsPerGroup + 1);
}

std::vector<std::string> synthetic_classes(const SyntheticSpec& spec) {
  validate(spec);
  std::vector<std::string> names;
  for (int index : resolve_classes(spec)) names.push_back(kClasses[index].name);
  return names;
}

std::vector<uint8_t> synthetic_clip_frames(const SyntheticSpec& spec, const std::string& class_name,
                                           int clip) {
  const int index = class_of_clip(spec, class_name, clip, "synthetic_clip_frames");
  const Scene scene = scene_of(spec, index, clip);
  const size_t frame_bytes = static_cast<size_t>(spec.height) * spec.width * 3;
  std::vector<uint8_t> frames(static_cast<size_t>(spec.frames_per_clip) * frame_bytes);
  cv::Mat3b frame;
  for (int t = 0; t < spec.frames_per_clip; ++t) {
    render_frame(scene, forward_frame(spec, kClasses[index], t), spec.frames_per_clip, frame);
    std::memcpy(frames.data() + t * frame_bytes, frame.ptr<uint8_t>(), frame_bytes);
  }
  return frames;
}

ClipSet synthetic_clip_set(const SyntheticSpec& spec, const ExtractionSettings& extraction,
                           const ProgressFn& progress) {
  const ExtractionSettings& s = extraction;
  check_extraction("built-in dataset", s);
  if (spec.frames_per_clip < s.sequence_length) {
    fail("built-in dataset: its clips have {} frames, fewer than the {} a clip samples", spec.frames_per_clip,
         s.sequence_length);
  }
  // As load_clips lists the files: class folders, then each folder's files, by name.
  std::vector<std::string> classes = synthetic_classes(spec);
  std::sort(classes.begin(), classes.end());
  ClipSet clips;
  clips.class_names = classes;
  clips.extraction = extraction;
  std::vector<int> clip_of;  // the generator's clip number of each clip
  for (size_t label = 0; label < classes.size(); ++label) {
    std::vector<std::pair<std::string, int>> files;  // name, clip
    for (int clip = 0; clip < spec.clips_per_class; ++clip)
      files.emplace_back(synthetic_clip_name(classes[label], clip), clip);
    std::sort(files.begin(), files.end());
    for (const auto& [name, clip] : files) {
      const std::string relative = classes[label] + "/" + name;
      clips.paths.push_back(spec.out_dir.empty() ? relative : spec.out_dir + "/" + relative);
      clips.labels.push_back(static_cast<int>(label));
      clip_of.push_back(clip);
    }
  }

  // Frame i * skip of each file, rendered alone: the frames of a clip do not depend on each other.
  const int64_t skip = sampling_stride(spec.frames_per_clip, s.sequence_length);
  clips.pixels.resize(clips.size() * s.clip_bytes());
  Progress state;
  state.total = clips.size();
  cv::Mat3b frame;
  for (size_t i = 0; i < clips.size(); ++i) {
    const int index = class_index(classes[static_cast<size_t>(clips.labels[i])]);
    const Scene scene = scene_of(spec, index, clip_of[i]);
    uint8_t* out = clips.pixels.data() + i * s.clip_bytes();
    for (int f = 0; f < s.sequence_length; ++f) {
      const int t = static_cast<int>(f * skip);
      render_frame(scene, forward_frame(spec, kClasses[index], t), spec.frames_per_clip, frame);
      resize_frame(frame, s.height, s.width, s.channels, out + f * s.frame_bytes());
    }
    state.done = i + 1;
    state.current = clips.paths[i];
    if (progress) progress(state);
  }
  return clips;
}

std::vector<ObjectBox> synthetic_object_boxes(const SyntheticSpec& spec, const std::string& class_name,
                                              int clip) {
  const int index = class_of_clip(spec, class_name, clip, "synthetic_object_boxes");
  const ClassInfo& info = kClasses[index];
  const Scene scene = scene_of(spec, index, clip);
  std::vector<ObjectBox> boxes;
  for (int t = 0; t < spec.frames_per_clip; ++t) {
    const int forward = forward_frame(spec, info, t);
    ObjectBox box{1e300, 1e300, -1e300, -1e300};
    for (const cv::Point2d& p : outline(scene, forward, spec.frames_per_clip)) {
      box.x0 = std::min(box.x0, p.x);
      box.y0 = std::min(box.y0, p.y);
      box.x1 = std::max(box.x1, p.x);
      box.y1 = std::max(box.y1, p.y);
    }
    boxes.push_back(box);
  }
  return boxes;
}

}  // namespace hisvid::io
