// models/metrics.h — classification metrics as the seeds report them: accuracy, per-class
// precision / recall / F1 / support with macro and weighted averages (the layout of
// sklearn.metrics.classification_report), and the confusion matrix (rows = true class,
// columns = predicted class).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace hisvid::models {

struct ClassScores {
  double precision = 0, recall = 0, f1 = 0;
  int64_t support = 0;
};

struct ClassificationReport {
  std::vector<std::string> class_names;
  std::vector<std::vector<int64_t>> confusion;  // [true][predicted]
  std::vector<ClassScores> per_class;
  // The classes reported, as sklearn's default labels: those in the truth or the predictions. A
  // model class neither in the data nor predicted (a 50-class model scored on 4 of its classes)
  // has no row and does not dilute the macro average.
  std::vector<size_t> labels;
  ClassScores macro, weighted;
  double accuracy = 0;
  int64_t total = 0;

  // sklearn's text layout (precision recall f1-score support; accuracy, macro avg, weighted avg).
  std::string text(int digits = 4) const;
  nlohmann::json to_json() const;
};

// Precision of a class nobody predicted is 0, recall of a class with no samples is 0, and F1
// with precision + recall = 0 is 0 (sklearn's zero_division=0); the macro average is over
// `labels`.
ClassificationReport classification_report(const std::vector<int>& truth, const std::vector<int>& predicted,
                                           const std::vector<std::string>& class_names);

}  // namespace hisvid::models
