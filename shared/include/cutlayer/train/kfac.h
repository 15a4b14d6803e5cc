// K-FAC (Martens & Grosse 2015; distributed form: Pauloski et al. 2020, kfac-pytorch):
// each Linear and Conv2d layer's gradient is preconditioned with two Kronecker factors,
//   A = E[a aᵀ] of the layer's input (Conv2d: unfolded patches, a bias column of ones, /T)
//   G = E[g gᵀ] of the gradient w.r.t. its output (Conv2d: one row per position, /T),
// kept as running averages F ← decay·F + (1−decay)·F_batch that start from the identity.
// Eigen method: A = Q_A diag(d_A) Q_Aᵀ, G likewise, and
//   ∇̃ = Q_G [(Q_Gᵀ ∇W Q_A) ⊘ (d_G d_Aᵀ + λ)] Q_Aᵀ   (∇W with the bias column appended);
// inverse method: ∇̃ = (G + λI)⁻¹ ∇W (A + λI)⁻¹ (kfac-pytorch's two compute methods). All
// are scaled by min(1, √(κ / |Σ lr²⟨∇̃, ∇W⟩|)) (the KL clip). The base optimizer (SGD with
// momentum, optimizer.h) then steps on ∇̃.
//
// A Linear layer's gradient is gᵀã for the step's output gradients g (N × out) and inputs
// ã (N × in+1); when N is small against the layer, the inverse method preconditions the
// factors instead, (g (G+λI)⁻¹)ᵀ (ã (A+λI)⁻¹): for fmnist-cnn's linear(1024,512) at batch
// 64 that is 7× fewer multiply-adds. A check of ∇W v against gᵀ(ã v) for a fixed v guards
// it (a layer used twice in one step falls back to the dense product).
//
// LibTorch's C++ modules have no hooks, so a party runs its parts through forward() here:
// on a factor step it records each covered layer's input and, by an autograd hook on the
// layer's output, the gradient w.r.t. it. Each party preconditions only its own layers
// (the client its front and head, the server its back); factors never cross the cut.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cutlayer::train {

struct KfacOptions {
  // λ: kfac-pytorch's ImageNet default is 0.001, but on fmnist-cnn every λ ≤ 0.3 we tried
  // made training diverge within an epoch (docs/kfac.md); 1 trained best.
  double damping = 1.0;
  double factor_decay = 0.95;  // running average of the factors
  double kl_clip = 0.001;      // κ
  std::int64_t factor_every = 10;    // steps between factor updates
  std::int64_t inverse_every = 100;  // steps between eigendecompositions (or inverses)
  // eigen | inverse: inverse by measurement (fmnist-cnn's linear(1024,512): 1.8 ms a step
  // through its factors, against 32 ms for the eigen method's four dense products)
  std::string method = "inverse";
};

// The factors of one batch (double or float, whatever the inputs are), as kfac-pytorch
// computes them. `x`: the layer's input; `g`: the gradient w.r.t. its output.
torch::Tensor linear_a_factor(const torch::Tensor& x, bool bias);
torch::Tensor linear_g_factor(const torch::Tensor& g);
struct ConvGeometry {
  std::vector<std::int64_t> kernel, stride, padding, dilation;
};
torch::Tensor conv_a_factor(const torch::Tensor& x, const ConvGeometry& c, bool bias);
torch::Tensor conv_g_factor(const torch::Tensor& g);

// ∇̃ of a (out × in[+1]) gradient matrix from the eigendecompositions (before the clip).
torch::Tensor eigen_precondition(const torch::Tensor& grad, const torch::Tensor& qa, const torch::Tensor& qg,
                                 const torch::Tensor& dgda_inv);
// (F + λI)⁻¹ of a symmetric positive semi-definite factor (eigenvalues that rounding made
// negative count as 0).
torch::Tensor damped_inverse(const torch::Tensor& f, double damping);
// 1 / (d_G d_Aᵀ + λ), the eigenvalues clamped at 0 first.
torch::Tensor damped_inverse_eigenvalues(const torch::Tensor& dg, const torch::Tensor& da, double damping);
// min(1, √(κ / |vg|)), 1 when vg is 0.
double kl_clip_scale(double vg_sum, double kl_clip);

// A symmetric matrix as its upper triangle, row by row (n(n+1)/2 values: how shared factors
// travel), and back.
torch::Tensor pack_symmetric(const torch::Tensor& m);
torch::Tensor unpack_symmetric(const torch::Tensor& packed, std::int64_t n);

class Kfac {
 public:
  // Covers every Linear and Conv2d (zero padding) layer of `parts`, named `part_names[i]`
  // in logs ("front", "back", ...); everything else is left to the base optimizer. `who`
  // prefixes the log line that lists them. An empty `parts` (optimizer not "kfac") makes
  // forward() a plain forward and step() a no-op.
  Kfac(const std::vector<torch::nn::Sequential>& parts, const std::vector<std::string>& part_names,
       const KfacOptions& o, const std::string& who);
  Kfac(const Kfac&) = delete;
  Kfac& operator=(const Kfac&) = delete;

  // part->forward(x), recording each covered layer's input and output gradient (in training
  // mode with gradients on); a second forward of the same part in one step replaces the
  // first's records.
  torch::Tensor forward(torch::nn::Sequential& part, torch::Tensor x);
  // After backward, before the base optimizer's step: factors, eigendecompositions,
  // preconditioned and clipped gradients (in place), for learning rate `lr`.
  void step(double lr);

  bool active() const { return !layers_.empty(); }
  const KfacOptions& options() const { return options_; }
  std::int64_t steps() const { return steps_; }
  std::vector<std::string> covered() const;
  double last_clip_scale() const { return last_scale_; }
  // The running factors of covered layer `i` (undefined before the first update): what a
  // data-parallel group would average.
  struct Factors {
    torch::Tensor a, g;
  };
  Factors factors(std::size_t i) const { return {layers_.at(i).a, layers_.at(i).g}; }

  // Shared factors (an aggregation's members; docs/kfac.md). A sharing party's step() keeps
  // a factor step's batch factors for take_batch_factors() instead of folding them into its
  // own, and never decomposes: its preconditioner is what install_* last received.
  void share(bool on) { sharing_ = on; }
  bool sharing() const { return sharing_; }
  // A, G of each covered layer from the last factor step; empty when there was none since
  // the last take (or a layer had no records, or a factor was not finite).
  std::vector<torch::Tensor> take_batch_factors();
  // The aggregator: folds batch factors (A, G per layer, e.g. the members' weighted mean)
  // into the running ones, as a factor step does; returns how many folds so far.
  std::int64_t fold(const std::vector<torch::Tensor>& batch);
  // The running factors (A, G per layer), and the decompositions of the configured method
  // (inverse: A⁻¹, G⁻¹; eigen: Q_A, Q_G, 1/(d_G d_Aᵀ + λ) per layer): what members receive.
  std::vector<torch::Tensor> factor_tensors() const;
  std::vector<torch::Tensor> decomposition_tensors() const;
  void decompose_now() { decompose(); }
  // Members: received factors (then decomposed here) or decompositions replace this party's.
  // Throws ProtocolError, changing nothing, unless they are of this model's layers: count,
  // shapes, float32, finite; factors also symmetric with a non-negative diagonal.
  void install_factors(const std::vector<torch::Tensor>& t);
  void install_decompositions(const std::vector<torch::Tensor>& t);
  void check_decompositions(const std::vector<torch::Tensor>& t) const;  // as install_decompositions
  // A sharing member joining an aggregation that has shipped nothing yet: no preconditioner.
  void clear_shared();
  // Throws ProtocolError unless `t` are batch or running factors of these layers (as above).
  void check_factors(const std::vector<torch::Tensor>& t, const std::string& what) const;
  // Factors as they travel (each packed: pack_symmetric), and back: ProtocolError unless
  // `packed` are float32 vectors of these layers' lengths.
  static std::vector<torch::Tensor> pack(const std::vector<torch::Tensor>& factors);
  std::vector<torch::Tensor> unpack(const std::vector<torch::Tensor>& packed, const std::string& what) const;
  // A hash of the preconditioner (the decompositions; "none" before the first): with shared
  // factors it is the same on every member at the same round. with_factors: of the running
  // factors and the step count too (all the state a refused input must leave alone).
  std::string hash(bool with_factors = false) const;

  // Its state (steps, factors, eigendecompositions) under "<prefix>.…"; load refuses
  // (CheckpointRefused) a missing or misshapen entry and then leaves this as it was.
  void save(torch::serialize::OutputArchive& a, const std::string& prefix) const;
  void load(torch::serialize::InputArchive& a, const std::string& prefix);

 private:
  struct Layer {
    std::string name;
    const torch::nn::Module* module = nullptr;
    torch::Tensor weight, bias;  // bias undefined without one
    bool conv = false;
    ConvGeometry geometry;
    torch::Tensor input, grad_output;  // this step's records
    torch::Tensor a, g;                // running factors
    torch::Tensor qa, qg, dgda_inv;    // eigen method
    torch::Tensor a_inv, g_inv;        // inverse method
  };
  struct Saved {
    const char* name;
    torch::Tensor* tensor;
    std::int64_t rows, cols;
  };
  static std::vector<Saved> saved(Layer& l);  // what save() writes of a layer
  Layer* find(const torch::nn::Module* m);
  void update_factors();
  void fold_layer(Layer& l, const torch::Tensor& a, const torch::Tensor& g);
  static std::pair<std::int64_t, std::int64_t> dims(const Layer& l);
  std::vector<std::pair<std::int64_t, std::int64_t>> factor_shapes() const;
  std::vector<std::pair<std::int64_t, std::int64_t>> decomposition_shapes() const;
  void decompose();
  torch::Tensor grad_matrix(const Layer& l) const;
  torch::Tensor precondition(const Layer& l, const torch::Tensor& grad) const;
  bool ready(const Layer& l) const;
  void set_grad(Layer& l, const torch::Tensor& pg, double scale);

  KfacOptions options_;
  std::vector<Layer> layers_;
  std::int64_t steps_ = 0;
  double last_scale_ = 1.0;
  bool sharing_ = false;
  std::vector<torch::Tensor> batch_;  // sharing: the last factor step's A, G per layer
};

}  // namespace cutlayer::train
