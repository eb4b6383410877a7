#include "models/metrics.h"

#include <fmt/format.h>

#include <algorithm>

#include "engine/error.h"

namespace hisvid::models {

namespace {
double ratio(double num, double den) { return den > 0 ? num / den : 0.0; }
}  // namespace

ClassificationReport classification_report(const std::vector<int>& truth, const std::vector<int>& predicted,
                                           const std::vector<std::string>& class_names) {
  const size_t K = class_names.size();
  if (truth.size() != predicted.size()) {
    fail("classification_report: {} true labels but {} predictions", truth.size(), predicted.size());
  }
  ClassificationReport r;
  r.class_names = class_names;
  r.confusion.assign(K, std::vector<int64_t>(K, 0));
  for (size_t i = 0; i < truth.size(); ++i) {
    if (truth[i] < 0 || static_cast<size_t>(truth[i]) >= K || predicted[i] < 0 ||
        static_cast<size_t>(predicted[i]) >= K) {
      fail("classification_report: label {} or prediction {} outside the {} classes", truth[i], predicted[i],
           K);
    }
    ++r.confusion[truth[i]][predicted[i]];
  }
  r.total = static_cast<int64_t>(truth.size());
  int64_t correct = 0;
  r.per_class.resize(K);
  for (size_t k = 0; k < K; ++k) {
    int64_t tp = r.confusion[k][k], actual = 0, guessed = 0;
    for (size_t j = 0; j < K; ++j) {
      actual += r.confusion[k][j];
      guessed += r.confusion[j][k];
    }
    ClassScores& s = r.per_class[k];
    s.precision = ratio(static_cast<double>(tp), static_cast<double>(guessed));
    s.recall = ratio(static_cast<double>(tp), static_cast<double>(actual));
    s.f1 = ratio(2 * s.precision * s.recall, s.precision + s.recall);
    s.support = actual;
    correct += tp;
    if (actual > 0 || guessed > 0) r.labels.push_back(k);
    const double w = ratio(static_cast<double>(actual), static_cast<double>(r.total));
    r.weighted.precision += w * s.precision;
    r.weighted.recall += w * s.recall;
    r.weighted.f1 += w * s.f1;
  }
  for (const size_t k : r.labels) {
    const double share = 1.0 / static_cast<double>(r.labels.size());
    r.macro.precision += share * r.per_class[k].precision;
    r.macro.recall += share * r.per_class[k].recall;
    r.macro.f1 += share * r.per_class[k].f1;
  }
  r.macro.support = r.weighted.support = r.total;
  r.accuracy = ratio(static_cast<double>(correct), static_cast<double>(r.total));
  return r;
}

std::string ClassificationReport::text(int digits) const {
  size_t width = std::string("weighted avg").size();
  for (const std::string& name : class_names) width = std::max(width, name.size());
  const int w = static_cast<int>(width), col = std::max(digits + 3, 9);
  std::string out = fmt::format("{:>{}}{:>{}}{:>{}}{:>{}}{:>{}}\n\n", "", w, "precision", col + 1, "recall",
                                col + 1, "f1-score", col + 1, "support", col + 1);
  auto row = [&](const std::string& name, const ClassScores& s) {
    return fmt::format("{:>{}}{:>{}.{}f}{:>{}.{}f}{:>{}.{}f}{:>{}}\n", name, w, s.precision, col + 1, digits,
                       s.recall, col + 1, digits, s.f1, col + 1, digits, s.support, col + 1);
  };
  for (const size_t k : labels) out += row(class_names[k], per_class[k]);
  out += "\n";
  out += fmt::format("{:>{}}{:>{}}{:>{}}{:>{}.{}f}{:>{}}\n", "accuracy", w, "", col + 1, "", col + 1,
                     accuracy, col + 1, digits, total, col + 1);
  out += row("macro avg", macro);
  out += row("weighted avg", weighted);
  return out;
}

nlohmann::json ClassificationReport::to_json() const {
  auto scores = [](const ClassScores& s) {
    return nlohmann::json{
        {"precision", s.precision}, {"recall", s.recall}, {"f1-score", s.f1}, {"support", s.support}};
  };
  nlohmann::json classes = nlohmann::json::object();
  for (const size_t k : labels) classes[class_names[k]] = scores(per_class[k]);
  return {{"classes", classes},
          {"accuracy", accuracy},
          {"macro avg", scores(macro)},
          {"weighted avg", scores(weighted)},
          {"class_names", class_names},
          {"confusion_matrix", confusion},
          {"total", total}};
}

}  // namespace hisvid::models
