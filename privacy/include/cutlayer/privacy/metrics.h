// Leakage metrics: reconstruction quality (MSE, PSNR, SSIM) and ranking quality (ROC AUC).
#pragma once

#include <torch/types.h>

namespace cutlayer::privacy {

// Mean squared error over all elements.
double mse(const torch::Tensor& a, const torch::Tensor& b);

// 10 log10(range^2 / MSE); +inf for identical inputs.
double psnr(const torch::Tensor& a, const torch::Tensor& b, double data_range);

// Mean SSIM (Wang et al. 2004) over N x C x H x W images in [0, data_range]: an 11 x 11
// Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, valid positions only.
double ssim(const torch::Tensor& a, const torch::Tensor& b, double data_range);

// Area under the ROC curve of `scores` for binary `labels` (1 = positive), ties counted
// half (Mann-Whitney). Throws cutlayer::Error when a class is missing.
double roc_auc(const torch::Tensor& scores, const torch::Tensor& labels);

}  // namespace cutlayer::privacy
