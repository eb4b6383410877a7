#include "models/batch_staging.h"

#include <cstring>

namespace hisvid::models {

BatchStaging::BatchStaging(Device device, size_t clip_values, int classes)
    : device_(device), clip_values_(clip_values), classes_(classes) {}

BatchStaging::Staged& BatchStaging::at(size_t batch) {
  auto it = staged_.find(batch);
  if (it != staged_.end()) return it->second;
  Staged staged;
  staged.pixels = std::make_unique<Storage>(batch * clip_values_, device_);
  staged.targets = Tensor::zeros(Shape{static_cast<int64_t>(batch), classes_}, DType::Float32, device_);
  return staged_.emplace(batch, std::move(staged)).first->second;
}

BatchStaging::Staged& BatchStaging::fill(size_t batch, const std::vector<uint8_t>& pixels,
                                         const std::vector<float>& targets) {
  Staged& staged = at(batch);
  const size_t target_bytes = targets.size() * sizeof(float);
  if (device_.is_cuda()) {  // through pinned memory: the host does not wait for the stream
    if (uploads_ == nullptr || uploads_->bytes() < pixels.size() + target_bytes) {
      uploads_ = std::make_unique<UploadStaging>(device_, pixels.size() + target_bytes);
    }
    uint8_t* host = uploads_->next();
    std::memcpy(host, pixels.data(), pixels.size());
    if (target_bytes > 0) std::memcpy(host + pixels.size(), targets.data(), target_bytes);
    uploads_->copy(staged.pixels->data, 0, pixels.size());
    if (target_bytes > 0) uploads_->copy(staged.targets.data_ptr(), pixels.size(), target_bytes);
    uploads_->done();
  } else {
    copy_bytes(staged.pixels->data, device_, pixels.data(), Device::cpu(), pixels.size());
    if (target_bytes > 0)
      copy_bytes(staged.targets.data_ptr(), device_, targets.data(), Device::cpu(), target_bytes);
  }
  return staged;
}

}  // namespace hisvid::models
