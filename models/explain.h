// models/explain.h — why a clip was classified: Grad-CAM per frame (Selvaraju et al., ICCV
// 2017) and an occlusion check per frame.
//
// Grad-CAM on a layer whose output keeps the time axis, A (T, h, w, F) for one clip. y is the
// class's score before the output activation: the softmax's logit of the class, or for a
// one-unit sigmoid head the logit for class 1 and minus the logit for class 0. The weight of
// filter f in frame t is the spatial mean of dy/dA[t, :, :, f], and frame t's map is
// ReLU(sum_f weight[t, f] A[t, :, :, f]). Each frame has its own filter weights: the frames
// are the inputs of different timesteps of the recurrent part, which treats them differently,
// and a frame that does not move the score gets weights near zero, hence a faint map.
//
// Which frames mattered, two ways: the frame's share of the clip's total map mass (the maps
// are comparable across frames because nothing is normalised per frame), and the occlusion
// check, the class's probability when the frame alone is replaced by black (the seeds'
// pixels / 255 = 0) against its probability for the whole clip.
#pragma once

#include <string>
#include <vector>

#include "engine/tensor.h"
#include "io/video.h"
#include "models/sequential.h"

namespace hisvid::models {

// The layers Grad-CAM can explain: Conv2D (bare or in TimeDistributed) and ConvLSTM2D whose
// output keeps the time axis, (T, h, w, F) without the batch axis, before the last layer.
std::vector<int> explainable_layers(const Sequential& model);
// The default: the last explainable layer (for the LRCN the last Conv2D before the LSTM, for
// the ConvLSTM the last ConvLSTM2D that returns sequences).
int default_explain_layer(const Sequential& model);
// The index of the layer named `name`; fails naming the model and the layers it could be when
// there is no such layer or it cannot be explained.
int explain_layer_by_name(const Sequential& model, const std::string& name);

// The class's score y (a () tensor on the tape) from the output of layer `layer` (1, T, h, w,
// F): the layers after it run in inference mode, ending at the score before the output
// activation.
Tensor class_score_from(Sequential& model, const Tensor& activation, int layer, int class_index);

// The output A of layer `layer` for the clip batch x (1, T, H, W, C) on the model's device, and
// dy/dA for class_index. The model's weights take no gradient (they keep whatever they held).
struct LayerGradient {
  Tensor activation;  // A (1, T, h, w, F)
  Tensor gradient;    // dy/dA, same shape
  double score = 0.0;
};
LayerGradient class_score_gradient(Sequential& model, const Tensor& x, int layer, int class_index);

struct Explanation {
  std::string layer;  // the explained layer's name
  int class_index = 0;
  std::vector<double> probabilities;  // of the whole clip, one per class
  int frames = 0, map_height = 0, map_width = 0;
  std::vector<std::vector<double>> maps;  // per frame (h, w) row-major, >= 0, as computed
  std::vector<double> frame_weights;      // per frame, summing to 1 (all 0 when every map is 0)
  std::vector<double> occluded;           // per frame: the class's probability with it blacked out
};

// Explains one clip ((T, H, W, C) uint8 as extracted for the model) for class_index (-1: the
// predicted class) on layer `layer` (-1: default_explain_layer).
Explanation explain_clip(Sequential& model, const std::vector<uint8_t>& clip,
                         const io::ExtractionSettings& settings, int layer = -1, int class_index = -1);

// Grad-CAM of a computed activation and gradient (the formula above), one map per frame.
std::vector<std::vector<double>> grad_cam_maps(const LayerGradient& gradient);

}  // namespace hisvid::models
