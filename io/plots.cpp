#include "io/plots.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "engine/error.h"
#include "io/atomic_file.h"

namespace hisvid::io {

namespace {

const cv::Scalar kBlack(0, 0, 0), kWhite(255, 255, 255), kGrid(225, 225, 225);
// Curve colours (BGR): blue for training, orange for validation, as matplotlib's defaults.
const cv::Scalar kPalette[] = {cv::Scalar(180, 119, 31), cv::Scalar(14, 127, 255), cv::Scalar(44, 160, 44)};
constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;

void put_text(cv::Mat& img, const std::string& text, cv::Point at, double scale, const cv::Scalar& colour,
              int thickness = 1) {
  cv::putText(img, text, at, kFont, scale, colour, thickness, cv::LINE_AA);
}

cv::Size text_size(const std::string& text, double scale, int thickness = 1) {
  int baseline = 0;
  return cv::getTextSize(text, kFont, scale, thickness, &baseline);
}

// Text drawn vertically (bottom to top) with its lower-left corner at `at`.
void put_vertical_text(cv::Mat& img, const std::string& text, cv::Point at, double scale) {
  const cv::Size size = text_size(text, scale);
  cv::Mat strip(size.height + 6, size.width + 2, CV_8UC3, kWhite);
  put_text(strip, text, {1, size.height + 2}, scale, kBlack);
  cv::Mat rotated;
  cv::rotate(strip, rotated, cv::ROTATE_90_COUNTERCLOCKWISE);
  const cv::Rect roi(at.x, at.y - rotated.rows, rotated.cols, rotated.rows);
  const cv::Rect inside = roi & cv::Rect(0, 0, img.cols, img.rows);
  if (inside.area() > 0)
    rotated(cv::Rect(inside.x - roi.x, inside.y - roi.y, inside.width, inside.height)).copyTo(img(inside));
}

// A "nice" tick step near span / 5: 1, 2 or 5 times a power of ten.
double nice_step(double span) {
  const double raw = span / 5.0, power = std::pow(10.0, std::floor(std::log10(raw)));
  const double fraction = raw / power;
  return (fraction < 1.5 ? 1.0 : fraction < 3.5 ? 2.0 : fraction < 7.5 ? 5.0 : 10.0) * power;
}

// A tick label with the decimals its step needs.
std::string format_tick(double v, double step) {
  const int decimals = std::clamp(static_cast<int>(-std::floor(std::log10(step) + 1e-9)), 0, 6);
  if (std::fabs(v) < 1e-9 * step) v = 0.0;  // no "-0.0"
  return fmt::format("{:.{}f}", v, decimals);
}

// Encoded in memory, then written with every write checked: cv::imwrite does not check its
// final flush, and reported a PNG cut short by a full disk as written.
void write_png(const std::string& path, const cv::Mat& img) {
  std::vector<uchar> png;
  if (!cv::imencode(".png", img, png)) fail("{}: OpenCV could not encode the picture as PNG", path);
  write_file_atomically(path, std::string(png.begin(), png.end()));
}

// White -> dark blue, like matplotlib's "Blues".
cv::Scalar blues(double t) {
  t = std::clamp(t, 0.0, 1.0);
  const double b = 255 - t * (255 - 107), g = 255 - t * (255 - 48), r = 255 - t * (255 - 8);
  return cv::Scalar(b, g, r);
}

}  // namespace

void write_confusion_png(const std::string& path, const std::vector<std::vector<int64_t>>& counts,
                         const std::vector<std::string>& class_names, const std::string& title) {
  const int K = static_cast<int>(class_names.size());
  if (K == 0 || counts.size() != class_names.size()) {
    fail("{}: confusion matrix of {} rows for {} classes", path, counts.size(), class_names.size());
  }
  const int cell = std::max(36, std::min(90, 720 / K));
  int label_width = 0;
  for (const std::string& name : class_names)
    label_width = std::max(label_width, text_size(name, 0.45).width);
  const int left = label_width + 60, top = 60, bottom = label_width + 60, right = 30;
  cv::Mat img(top + K * cell + bottom, left + K * cell + right, CV_8UC3, kWhite);
  int64_t peak = 1;
  for (const auto& row : counts) {
    for (int64_t c : row) peak = std::max(peak, c);
  }
  for (int t = 0; t < K; ++t) {
    for (int p = 0; p < K; ++p) {
      const double share = static_cast<double>(counts[t][p]) / static_cast<double>(peak);
      const cv::Rect box(left + p * cell, top + t * cell, cell, cell);
      cv::rectangle(img, box, blues(share), cv::FILLED);
      cv::rectangle(img, box, kGrid, 1);
      const std::string n = std::to_string(counts[t][p]);
      const cv::Size s = text_size(n, 0.5);
      put_text(img, n, {box.x + (cell - s.width) / 2, box.y + (cell + s.height) / 2}, 0.5,
               share > 0.5 ? kWhite : kBlack);
    }
    const cv::Size s = text_size(class_names[t], 0.45);
    put_text(img, class_names[t], {left - s.width - 8, top + t * cell + (cell + s.height) / 2}, 0.45, kBlack);
    put_vertical_text(img, class_names[t],
                      {left + t * cell + (cell - s.height) / 2 - 3, top + K * cell + 8 + s.width}, 0.45);
  }
  put_text(img, title, {left, 35}, 0.6, kBlack, 1);
  put_text(img, "predicted", {left + K * cell / 2 - 40, img.rows - 15}, 0.5, kBlack);
  put_vertical_text(img, "true", {12, top + K * cell / 2 + 20}, 0.5);
  write_png(path, img);
}

void write_curves_png(const std::string& path, const std::vector<Curve>& loss,
                      const std::vector<Curve>& accuracy, const std::string& title) {
  const int panel_w = 520, panel_h = 380, margin = 60;
  cv::Mat img(panel_h + 2 * margin, 2 * (panel_w + margin) + margin, CV_8UC3, kWhite);
  // fixed_range: the accuracy panel spans [0, 1] whatever the values, and its legend goes to the
  // bottom (accuracies climb to the top right, where the loss panel's legend sits).
  auto draw_panel = [&](const std::vector<Curve>& curves, int x0, const std::string& name, bool fixed_range) {
    size_t epochs = 0;
    double lo = INFINITY, hi = -INFINITY;
    for (const Curve& c : curves) {
      epochs = std::max(epochs, c.values.size());
      for (double v : c.values) {
        if (std::isfinite(v)) {
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
      }
    }
    const cv::Rect area(x0, margin, panel_w, panel_h);
    cv::rectangle(img, area, kBlack, 1);
    put_text(img, name, {x0 + panel_w / 2 - text_size(name, 0.55).width / 2, margin - 12}, 0.55, kBlack);
    if (epochs == 0 || !std::isfinite(lo)) return;
    if (fixed_range) {
      lo = 0.0;
      hi = 1.0;
    } else {
      if (hi - lo < 1e-9) {
        hi += 0.5;
        lo -= 0.5;
      }
      const double pad = 0.05 * (hi - lo);
      lo -= pad;
      hi += pad;
    }
    auto to_px = [&](double epoch, double v) {
      const double fx = epochs > 1 ? (epoch - 1) / static_cast<double>(epochs - 1) : 0.5;
      return cv::Point(x0 + static_cast<int>(fx * (panel_w - 1)),
                       margin + panel_h - 1 - static_cast<int>((v - lo) / (hi - lo) * (panel_h - 1)));
    };
    const double y_step = nice_step(hi - lo);
    for (double v = std::ceil(lo / y_step - 1e-9) * y_step; v <= hi + 1e-9 * y_step;
         v += y_step) {  // grid, y labels
      const cv::Point p = to_px(1, v);
      cv::line(img, {x0 + 1, p.y}, {x0 + panel_w - 2, p.y}, kGrid, 1);
      put_text(img, format_tick(v, y_step), {x0 - 45, p.y + 4}, 0.4, kBlack);
    }
    const size_t epoch_step = std::max<size_t>(1, epochs / 8);
    for (size_t e = 1; e <= epochs; e += epoch_step) {  // x labels
      const cv::Point p = to_px(static_cast<double>(e), lo);
      put_text(img, std::to_string(e), {p.x - 5, margin + panel_h + 18}, 0.4, kBlack);
    }
    put_text(img, "epoch", {x0 + panel_w / 2 - 20, margin + panel_h + 40}, 0.45, kBlack);
    for (size_t c = 0; c < curves.size(); ++c) {
      const cv::Scalar colour = kPalette[c % 3];
      for (size_t e = 1; e < curves[c].values.size(); ++e) {
        const double a = curves[c].values[e - 1], b = curves[c].values[e];
        if (std::isfinite(a) && std::isfinite(b)) {
          cv::line(img, to_px(static_cast<double>(e), a), to_px(static_cast<double>(e + 1), b), colour, 2,
                   cv::LINE_AA);
        }
      }
      for (size_t e = 0; e < curves[c].values.size(); ++e) {
        if (std::isfinite(curves[c].values[e])) {
          cv::circle(img, to_px(static_cast<double>(e + 1), curves[c].values[e]), 3, colour, cv::FILLED,
                     cv::LINE_AA);
        }
      }
      const int ly = fixed_range ? margin + panel_h - 12 - static_cast<int>(curves.size() - 1 - c) * 18
                                 : margin + 18 + static_cast<int>(c) * 18;
      cv::line(img, {x0 + panel_w - 130, ly - 4}, {x0 + panel_w - 105, ly - 4}, colour, 2);
      put_text(img, curves[c].label, {x0 + panel_w - 100, ly}, 0.45, kBlack);
    }
  };
  draw_panel(loss, margin, "loss", false);
  draw_panel(accuracy, 2 * margin + panel_w, "accuracy", true);
  put_text(img, title, {margin, 25}, 0.6, kBlack);
  write_png(path, img);
}

void write_explanation_png(const std::string& path, const std::vector<std::vector<uint8_t>>& frames,
                           int height, int width, const std::vector<std::string>& captions,
                           const std::vector<double>& weights, const std::vector<double>& drops,
                           const std::string& title) {
  const size_t T = frames.size();
  if (T == 0 || captions.size() != T || weights.size() != T || drops.size() != T) {
    fail("{}: {} frames with {} captions, {} weights and {} drops", path, T, captions.size(), weights.size(),
         drops.size());
  }
  // Cells 180 pixels on their longer side, keeping the frames' aspect; about as many columns as rows.
  const double zoom = 180.0 / std::max(height, width);
  const int cell_w = std::max(1, static_cast<int>(width * zoom)),
            cell_h = std::max(1, static_cast<int>(height * zoom));
  const int columns = static_cast<int>(std::ceil(std::sqrt(static_cast<double>(T) * cell_h / cell_w)));
  const int rows = static_cast<int>((T + static_cast<size_t>(columns) - 1) / static_cast<size_t>(columns));
  const int gap = 8, caption_h = 18, margin = 60, top = 40;
  const int grid_w = columns * (cell_w + gap) - gap, grid_h = rows * (cell_h + caption_h + gap);
  const int chart_w = std::max(grid_w, 400), chart_h = 120, chart_gap = 50;
  cv::Mat img(top + grid_h + 2 * (chart_h + chart_gap) + 20,
              std::max(margin + chart_w + 30, margin + text_size(title, 0.55).width + 20), CV_8UC3, kWhite);
  put_text(img, title, {margin, 25}, 0.55, kBlack);
  for (size_t t = 0; t < T; ++t) {
    if (frames[t].size() != static_cast<size_t>(height) * width * 3) {
      fail("{}: frame {} holds {} bytes, not {}x{}x3", path, t, frames[t].size(), height, width);
    }
    const cv::Mat frame(height, width, CV_8UC3, const_cast<uint8_t*>(frames[t].data()));
    const int x = margin + static_cast<int>(t % static_cast<size_t>(columns)) * (cell_w + gap);
    const int y = top + static_cast<int>(t / static_cast<size_t>(columns)) * (cell_h + caption_h + gap);
    cv::Mat cell;
    cv::resize(frame, cell, cv::Size(cell_w, cell_h), 0, 0, zoom < 1.0 ? cv::INTER_AREA : cv::INTER_LINEAR);
    cell.copyTo(img(cv::Rect(x, y, cell_w, cell_h)));
    put_text(img, captions[t], {x, y + cell_h + 13}, 0.38, kBlack);
  }
  // One bar per frame from a zero line; the range always includes 0.
  auto chart = [&](const std::vector<double>& values, int y0, const std::string& name,
                   const cv::Scalar& colour) {
    double lo = 0.0, hi = 0.0;
    for (double v : values) {
      if (std::isfinite(v)) {
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
    }
    if (hi - lo < 1e-12) hi = lo + 1.0;
    const cv::Rect area(margin, y0, chart_w, chart_h);
    cv::rectangle(img, area, kBlack, 1);
    put_text(img, name, {margin, y0 - 8}, 0.45, kBlack);
    auto to_y = [&](double v) {
      return y0 + chart_h - 1 - static_cast<int>((v - lo) / (hi - lo) * (chart_h - 1));
    };
    const double step = nice_step(hi - lo);
    for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + 1e-9 * step; v += step) {
      cv::line(img, {margin + 1, to_y(v)}, {margin + chart_w - 2, to_y(v)}, kGrid, 1);
      put_text(img, format_tick(v, step), {margin - 50, to_y(v) + 4}, 0.38, kBlack);
    }
    const double slot = static_cast<double>(chart_w) / static_cast<double>(T);
    for (size_t t = 0; t < T; ++t) {
      const int x0 = margin + static_cast<int>(t * slot + 0.15 * slot),
                x1 = margin + static_cast<int>((t + 1) * slot - 0.15 * slot);
      if (std::isfinite(values[t])) {
        cv::rectangle(img, cv::Point(x0, to_y(0.0)), cv::Point(std::max(x0, x1 - 1), to_y(values[t])), colour,
                      cv::FILLED);
      }
      if (T <= 40 || t % 5 == 0) put_text(img, std::to_string(t), {x0, y0 + chart_h + 14}, 0.35, kBlack);
    }
    cv::line(img, {margin + 1, to_y(0.0)}, {margin + chart_w - 2, to_y(0.0)}, kBlack, 1);
  };
  const int charts_top = top + grid_h + chart_gap - 10;
  chart(weights, charts_top, "Grad-CAM weight of each frame (its share of the heat)", kPalette[0]);
  chart(drops, charts_top + chart_h + chart_gap,
        "occlusion: drop of the class's probability with the frame black", kPalette[1]);
  write_png(path, img);
}

}  // namespace hisvid::io
