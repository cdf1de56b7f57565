// The beta-loss of (N, C) CPU logits and class indices, reduced to a scalar, as one C++ operator
// with a C++ autograd node: the gradient is written during the forward pass, so small batches pay
// one dispatch instead of the ~20 of the Python-level kernel (gdsoftmax.loss.fused). Same formulas:
// on s' = (z - max z) / tau, J = log(S_other + beta e_c) - s'_c and
// dJ/dz = w / tau * (e_i / D for i != c, -S_other / D for c), with D = S_other + beta e_c.
// exp runs on ATen's Vectorized (AVX2 where the build enables it); sums over a row and over
// rows are accumulated in double. Double backward recomputes the loss from differentiable ops.
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/extension.h>

#include <cmath>
#include <limits>
#include <vector>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Checks the targets and returns the sum of the row weights (0 for ignored rows).
template <typename scalar_t>
double total_weight(const torch::Tensor& target, const torch::Tensor& weight, int64_t classes,
                    int64_t ignore_index) {
  const int64_t* t = target.data_ptr<int64_t>();
  const scalar_t* w = weight.numel() > 0 ? weight.data_ptr<scalar_t>() : nullptr;
  double total = 0.0;
  for (int64_t i = 0; i < target.numel(); ++i) {
    if (t[i] == ignore_index) continue;
    TORCH_CHECK_INDEX(t[i] >= 0 && t[i] < classes, "Target ", t[i], " is out of bounds: class indices must lie in [0, ",
                      classes, ") or equal ignore_index (", ignore_index, ").");
    total += w ? static_cast<double>(w[t[i]]) : 1.0;
  }
  return total;
}

template <typename scalar_t>
double loss_and_gradient(const torch::Tensor& logits, const torch::Tensor& target, const torch::Tensor& weight,
                         double beta, double tau, int64_t ignore_index, double scale, scalar_t* grad) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t n = logits.size(0), c = logits.size(1);
  const scalar_t* z = logits.data_ptr<scalar_t>();
  const int64_t* t = target.data_ptr<int64_t>();
  const scalar_t* w = weight.numel() > 0 ? weight.data_ptr<scalar_t>() : nullptr;
  const scalar_t tau_ = static_cast<scalar_t>(tau);
  std::vector<double> row_loss(n, 0.0);
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> buffer(grad ? 0 : c);
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* row = z + i * c;
      scalar_t* e = grad ? grad + i * c : buffer.data();  // exp(s') first, the gradient after
      if (t[i] == ignore_index) {
        if (grad) std::fill(e, e + c, scalar_t(0));
        continue;
      }
      const int64_t k = t[i];
      const scalar_t top = at::vec::reduce_all<scalar_t>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); },
                                                         row, c);
      at::vec::map([top, tau_](Vec x) { return ((x - Vec(top)) / Vec(tau_)).exp(); }, e, row, c);
      double others = 0.0;  // summed without the target: exact as p_c -> 1
      for (int64_t j = 0; j < c; ++j) others += j == k ? 0.0 : static_cast<double>(e[j]);
      const double denominator = others + beta * static_cast<double>(e[k]);
      const double wi = w ? static_cast<double>(w[k]) : 1.0;
      const double shifted_target = static_cast<double>((row[k] - top) / tau_);
      row_loss[i] = wi * (std::log(denominator) - shifted_target);
      if (grad) {
        const double combined = wi * scale / tau / denominator;
        if (std::isfinite(static_cast<double>(static_cast<scalar_t>(combined)))) {
          const scalar_t factor = static_cast<scalar_t>(combined);
          at::vec::map([factor](Vec x) { return x * Vec(factor); }, e, e, c);
          e[k] = static_cast<scalar_t>(-combined * others);
        } else {
          // an extreme beta or tau: e_i / D and S_other / D are at most 1, so take them first
          const scalar_t inverse = static_cast<scalar_t>(1.0 / denominator);
          const scalar_t weight_scale = static_cast<scalar_t>(wi * scale / tau);
          at::vec::map([inverse, weight_scale](Vec x) { return x * Vec(inverse) * Vec(weight_scale); }, e, e, c);
          e[k] = static_cast<scalar_t>(-(wi * scale / tau) * (others / denominator));
        }
      }
    }
  });
  double total = 0.0;
  for (double value : row_loss) total += value;
  return total;
}

// The differentiable composite, for double backward only.
torch::Tensor composite_loss(const torch::Tensor& logits, const torch::Tensor& target, const torch::Tensor& weight,
                             double beta, double tau, int64_t ignore_index, double scale) {
  auto ignored = target.eq(ignore_index);
  auto index = target.masked_fill(ignored, 0).unsqueeze(1);  // (N, 1)
  auto shifted = (logits - std::get<0>(logits.max(1, true)).detach()) / tau;
  auto exp_shifted = shifted.exp();
  auto exp_target = exp_shifted.gather(1, index);
  auto others = exp_shifted.scatter(1, index, 0.0).sum(1, true);
  auto per_row = ((others + beta * exp_target).log() - shifted.gather(1, index)).squeeze(1);
  auto row_weight = weight.numel() > 0 ? weight.index({index.squeeze(1)}) : torch::ones_like(per_row);
  row_weight = row_weight.masked_fill(ignored, 0.0);
  return (row_weight * per_row).sum() * scale;
}

struct BetaLoss : public torch::autograd::Function<BetaLoss> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits, const torch::Tensor& target,
                               const torch::Tensor& weight, double beta, double tau, int64_t ignore_index,
                               bool mean) {
    const bool needs_grad = logits.requires_grad();
    torch::Tensor grad = needs_grad ? torch::empty_like(logits) : torch::Tensor();
    double total = 0.0, sum = 0.0, scale = 1.0;
    AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "beta_loss", [&] {
      total = total_weight<scalar_t>(target, weight, logits.size(1), ignore_index);
      if (mean && total == 0.0) return;  // as F.cross_entropy: NaN, with a zero gradient
      scale = mean ? 1.0 / total : 1.0;
      sum = loss_and_gradient<scalar_t>(logits, target, weight, beta, tau, ignore_index, scale,
                                        needs_grad ? grad.data_ptr<scalar_t>() : nullptr);
    });
    const bool empty = mean && total == 0.0;
    if (empty && needs_grad) grad.zero_();
    ctx->save_for_backward({grad, logits, target, weight});
    ctx->saved_data["beta"] = beta;
    ctx->saved_data["tau"] = tau;
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["scale"] = empty ? 0.0 : scale;
    const double value = empty ? std::numeric_limits<double>::quiet_NaN() : sum * scale;
    return torch::full({}, value, logits.options());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_output) {
    auto saved = ctx->get_saved_variables();
    torch::Tensor grad_logits;
    if (torch::GradMode::is_enabled()) {  // create_graph: differentiate the recomputed composite
      auto loss = composite_loss(saved[1], saved[2], saved[3], ctx->saved_data["beta"].toDouble(),
                                 ctx->saved_data["tau"].toDouble(), ctx->saved_data["ignore_index"].toInt(),
                                 ctx->saved_data["scale"].toDouble());
      grad_logits = torch::autograd::grad({loss}, {saved[1]}, {grad_output[0]}, true, true)[0];
    } else {
      grad_logits = saved[0] * grad_output[0];
    }
    return {grad_logits, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

torch::Tensor beta_loss(const torch::Tensor& logits, const torch::Tensor& target,
                        const c10::optional<torch::Tensor>& weight, double beta, double tau, int64_t ignore_index,
                        bool mean) {
  TORCH_CHECK(logits.dim() == 2 && logits.device().is_cpu() && logits.is_contiguous(),
              "beta_loss takes contiguous (N, C) CPU logits");
  TORCH_CHECK(target.dim() == 1 && target.size(0) == logits.size(0) && target.scalar_type() == torch::kLong,
              "beta_loss takes (N,) int64 targets");
  // no weight: an empty tensor, since autograd Functions take defined tensors
  torch::Tensor w = weight.has_value() ? weight->contiguous() : torch::empty({0}, logits.options());
  return BetaLoss::apply(logits, target.contiguous(), w, beta, tau, ignore_index, mean);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("beta_loss", &beta_loss, "beta-loss of (N, C) CPU logits, mean or sum, gradient written in the forward pass");
}
