// TC's attention over root-to-leaf paths, with the node gather fused into the products: no
// (G*n, h+1, d) tensor of gathered rows is ever written. Three loops make the forward and the
// backward of both products (see fused_path.py); G = batch * heads:
//   path_dots(nodes, path, rows, bias, alpha, softmax)[g, i, j] = alpha * <nodes[g, path[g, i, j]], rows[g, i]> (+ bias[g, i, j]),
//       then, with softmax, the softmax over j (the weights of query i's path nodes)
//   path_mix(nodes, path, weights)[g, i]               = sum_j weights[g, i, j] * nodes[g, path[g, i, j]]
//   path_scatter(weights, rows, path, N)[g, m]         = sum of weights[g, i, j] * rows[g, i] over path[g, i, j] == m
//   softmax_backward(weights, grad)[g, i, j]          = weights * (grad - sum_j weights * grad), the softmax's backward
// Shapes: nodes (G, N, d), path, weights and bias (G, n, P), rows (G, n, d). Operands are made
// contiguous first: on the 2-core VM this was written on, reading the projections' strided
// (B, n, H, d) views in place ran slower than one copy and contiguous reads.
// Sums run in the scalar type's opmath type (fp32 for bf16 and fp16).
//
// Two more loops sum the keys into their leaves, the first step of TC's node aggregates, reading
// k and v where they are (the projections' (B, H, n, d) views) instead of writing [k, v, 1] rows:
//   leaf_sums(k, v, leaf, L)[g, l]     = sum over keys i with leaf[g, i] == l of [k[g, i], v[g, i], 1]
//   leaf_sums_backward(grad, k, v, leaf) = (grad[g, leaf][:d], grad[g, leaf][d:2d], <grad[g, leaf], [k, v, 1]>)
// per key (zeros for padded keys, leaf -1): the gradients of the keys, values and their STE gates.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

// kLanes partial sums let the compiler vectorise a dot product without reordering one
// floating-point sum, which it may not do on its own.
constexpr int64_t kLanes = 8;

template <typename scalar_t, typename acc_t>
inline acc_t dot(const scalar_t* a, const scalar_t* b, int64_t dim) {
  acc_t lanes[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= dim; c += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += static_cast<acc_t>(a[c + l]) * static_cast<acc_t>(b[c + l]);
  acc_t sum = 0;
  for (int64_t l = 0; l < kLanes; ++l) sum += lanes[l];
  for (; c < dim; ++c) sum += static_cast<acc_t>(a[c]) * static_cast<acc_t>(b[c]);
  return sum;
}

// The same with one operand already in the sum type.
template <typename scalar_t, typename acc_t>
inline acc_t dot_mixed(const acc_t* a, const scalar_t* b, int64_t dim) {
  acc_t lanes[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= dim; c += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += a[c + l] * static_cast<acc_t>(b[c + l]);
  acc_t sum = 0;
  for (int64_t l = 0; l < kLanes; ++l) sum += lanes[l];
  for (; c < dim; ++c) sum += a[c] * static_cast<acc_t>(b[c]);
  return sum;
}

template <typename scalar_t, typename acc_t>
inline void add_scaled(acc_t* __restrict__ acc, acc_t weight, const scalar_t* __restrict__ row, int64_t dim) {
  for (int64_t c = 0; c < dim; ++c) acc[c] += weight * static_cast<acc_t>(row[c]);
}

void check_operands(const char* op, const at::Tensor& nodes, const at::Tensor& path, const at::Tensor& rows) {
  TORCH_CHECK(nodes.dim() == 3 && path.dim() == 3 && rows.dim() == 3,
              op, ": nodes (G, N, d), path (G, n, P) and rows (G, n, d) expected");
  TORCH_CHECK(path.scalar_type() == at::kLong, op, ": path must be int64");
  TORCH_CHECK(nodes.size(0) == path.size(0) && rows.size(0) == path.size(0) && rows.size(1) == path.size(1) &&
                  rows.size(2) == nodes.size(2),
              op, ": nodes, path and rows disagree on G, n or d");
  TORCH_CHECK(nodes.scalar_type() == rows.scalar_type(), op, ": nodes and rows must have one dtype");
}

// Every node index in [0, num_nodes): checked in one pass before the loops read through them.
void check_path(const at::Tensor& path, int64_t num_nodes, const char* op) {
  const int64_t* data = path.const_data_ptr<int64_t>();
  bool inside = true;
  for (int64_t index = 0; index < path.numel(); ++index) inside &= static_cast<uint64_t>(data[index]) < static_cast<uint64_t>(num_nodes);
  TORCH_CHECK(inside, op, ": a path holds a node index outside [0, ", num_nodes, ")");
}

at::Tensor like_path(const at::Tensor& tensor, const at::Tensor& path, at::ScalarType dtype, const char* op) {
  TORCH_CHECK(tensor.sizes() == path.sizes(), op, ": weights and bias must have path's shape");
  return tensor.to(dtype).contiguous();
}

at::Tensor path_dots(const at::Tensor& nodes_in, const at::Tensor& path_in, const at::Tensor& rows_in,
                     const std::optional<at::Tensor>& bias_in, double alpha, bool softmax) {
  check_operands("path_dots", nodes_in, path_in, rows_in);
  auto nodes = nodes_in.contiguous(), path = path_in.contiguous(), rows = rows_in.contiguous();
  at::Tensor bias = bias_in.has_value() ? like_path(*bias_in, path, nodes.scalar_type(), "path_dots") : at::Tensor();
  const int64_t queries = path.size(0) * path.size(1), n = path.size(1), width = path.size(2);
  const int64_t num_nodes = nodes.size(1), dim = nodes.size(2);
  check_path(path, num_nodes, "path_dots");
  TORCH_CHECK(width > 0 || !softmax, "path_dots: a softmax over empty paths");
  auto out = at::empty(path.sizes(), nodes.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, nodes.scalar_type(), "path_dots", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* node_data = nodes.const_data_ptr<scalar_t>();
    const scalar_t* row_data = rows.const_data_ptr<scalar_t>();
    const scalar_t* bias_data = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    const int64_t* path_data = path.const_data_ptr<int64_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    const acc_t scale = static_cast<acc_t>(alpha);
    at::parallel_for(0, queries, 64, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> scores(width);
      for (int64_t query = begin; query < end; ++query) {
        const scalar_t* row = row_data + query * dim;
        const scalar_t* group_nodes = node_data + (query / n) * num_nodes * dim;
        const int64_t first = query * width;
        for (int64_t j = 0; j < width; ++j) {
          const acc_t sum = scale * dot<scalar_t, acc_t>(group_nodes + path_data[first + j] * dim, row, dim);
          scores[j] = bias_data ? sum + static_cast<acc_t>(bias_data[first + j]) : sum;
        }
        if (softmax) {
          const acc_t top = *std::max_element(scores.begin(), scores.end());
          acc_t total = 0;
          for (auto& score : scores) total += (score = std::exp(score - top));
          for (auto& score : scores) score /= total;
        }
        for (int64_t j = 0; j < width; ++j) out_data[first + j] = static_cast<scalar_t>(scores[j]);
      }
    });
  });
  return out;
}

at::Tensor path_mix(const at::Tensor& nodes_in, const at::Tensor& path_in, const at::Tensor& weights_in) {
  TORCH_CHECK(nodes_in.dim() == 3 && path_in.dim() == 3 && path_in.scalar_type() == at::kLong,
              "path_mix: nodes (G, N, d) and int64 path (G, n, P) expected");
  TORCH_CHECK(nodes_in.size(0) == path_in.size(0), "path_mix: nodes and path disagree on G");
  auto nodes = nodes_in.contiguous(), path = path_in.contiguous();
  auto weights = like_path(weights_in, path, nodes.scalar_type(), "path_mix");
  const int64_t groups = path.size(0), n = path.size(1), width = path.size(2);
  const int64_t num_nodes = nodes.size(1), dim = nodes.size(2);
  check_path(path, num_nodes, "path_mix");
  auto out = at::empty({groups, n, dim}, nodes.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, nodes.scalar_type(), "path_mix", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* node_data = nodes.const_data_ptr<scalar_t>();
    const scalar_t* weight_data = weights.const_data_ptr<scalar_t>();
    const int64_t* path_data = path.const_data_ptr<int64_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, groups * n, 64, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> sum(dim);
      for (int64_t query = begin; query < end; ++query) {
        const scalar_t* group_nodes = node_data + (query / n) * num_nodes * dim;
        std::fill(sum.begin(), sum.end(), acc_t(0));
        for (int64_t j = 0; j < width; ++j) {
          const int64_t index = query * width + j, node = path_data[index];
          add_scaled<scalar_t, acc_t>(sum.data(), static_cast<acc_t>(weight_data[index]), group_nodes + node * dim, dim);
        }
        scalar_t* target = out_data + query * dim;
        for (int64_t c = 0; c < dim; ++c) target[c] = static_cast<scalar_t>(sum[c]);
      }
    });
  });
  return out;
}

at::Tensor path_scatter(const at::Tensor& weights_in, const at::Tensor& rows_in, const at::Tensor& path_in,
                        int64_t num_nodes) {
  TORCH_CHECK(path_in.dim() == 3 && path_in.scalar_type() == at::kLong && rows_in.dim() == 3 &&
                  rows_in.size(0) == path_in.size(0) && rows_in.size(1) == path_in.size(1),
              "path_scatter: int64 path (G, n, P) and rows (G, n, d) expected");
  auto rows = rows_in.contiguous(), path = path_in.contiguous();
  auto weights = like_path(weights_in, path, rows.scalar_type(), "path_scatter");
  const int64_t groups = path.size(0), n = path.size(1), width = path.size(2), dim = rows.size(2);
  check_path(path, num_nodes, "path_scatter");
  auto out = at::empty({groups, num_nodes, dim}, rows.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, rows.scalar_type(), "path_scatter", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* row_data = rows.const_data_ptr<scalar_t>();
    const scalar_t* weight_data = weights.const_data_ptr<scalar_t>();
    const int64_t* path_data = path.const_data_ptr<int64_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    // One group (example and head) per task: its nodes receive only its own queries' rows, so no
    // two tasks write the same node.
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> sums(num_nodes * dim);
      for (int64_t group = begin; group < end; ++group) {
        std::fill(sums.begin(), sums.end(), acc_t(0));
        for (int64_t query = group * n; query < (group + 1) * n; ++query) {
          const scalar_t* row = row_data + query * dim;
          for (int64_t j = 0; j < width; ++j) {
            const int64_t index = query * width + j, node = path_data[index];
            add_scaled<scalar_t, acc_t>(sums.data() + node * dim, static_cast<acc_t>(weight_data[index]), row, dim);
          }
        }
        scalar_t* target = out_data + group * num_nodes * dim;
        for (int64_t m = 0; m < num_nodes * dim; ++m) target[m] = static_cast<scalar_t>(sums[m]);
      }
    });
  });
  return out;
}

at::Tensor softmax_backward(const at::Tensor& weights_in, const at::Tensor& grad_in) {
  TORCH_CHECK(weights_in.sizes() == grad_in.sizes() && weights_in.dim() >= 1,
              "softmax_backward: weights and grad of one shape expected");
  auto weights = weights_in.contiguous(), grad = grad_in.to(weights.scalar_type()).contiguous();
  const int64_t width = weights.size(-1), rows = width ? weights.numel() / width : 0;
  auto out = at::empty(weights.sizes(), weights.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, weights.scalar_type(), "softmax_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* weight_data = weights.const_data_ptr<scalar_t>();
    const scalar_t* grad_data = grad.const_data_ptr<scalar_t>();
    scalar_t* out_data = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t first = row * width;
        acc_t inner = 0;
        for (int64_t j = 0; j < width; ++j)
          inner += static_cast<acc_t>(weight_data[first + j]) * static_cast<acc_t>(grad_data[first + j]);
        for (int64_t j = 0; j < width; ++j)
          out_data[first + j] = static_cast<scalar_t>(static_cast<acc_t>(weight_data[first + j]) *
                                                      (static_cast<acc_t>(grad_data[first + j]) - inner));
      }
    });
  });
  return out;
}

void check_keys(const char* op, const at::Tensor& keys, const at::Tensor& values, const at::Tensor& leaf) {
  TORCH_CHECK(keys.dim() == 4 && keys.sizes() == values.sizes() && keys.scalar_type() == values.scalar_type(),
              op, ": k and v (B, H, n, d) of one dtype expected");
  TORCH_CHECK(leaf.scalar_type() == at::kLong && leaf.sizes() == keys.sizes().slice(0, 3),
              op, ": leaf (B, H, n) int64 expected");
}

// Every leaf below num_leaves (-1 marks padding): checked in one pass before the loops write through them.
void check_leaves(const at::Tensor& leaf, int64_t num_leaves, const char* op) {
  const int64_t* data = leaf.const_data_ptr<int64_t>();
  bool inside = true;
  for (int64_t index = 0; index < leaf.numel(); ++index) inside &= data[index] >= -1 && data[index] < num_leaves;
  TORCH_CHECK(inside, op, ": a leaf index outside [-1, ", num_leaves, ")");
}

// Calls visit(key index i, leaf) for the real keys of one group.
template <typename Visit>
void for_each_key(const int64_t* leaf_data, int64_t group, int64_t n, const Visit& visit) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t leaf = leaf_data[group * n + i];
    if (leaf >= 0) visit(i, leaf);
  }
}

at::Tensor leaf_sums(const at::Tensor& keys_in, const at::Tensor& values_in, const at::Tensor& leaf_in, int64_t num_leaves) {
  check_keys("leaf_sums", keys_in, values_in, leaf_in);
  auto keys = keys_in.stride(3) == 1 ? keys_in : keys_in.contiguous();
  auto values = values_in.stride(3) == 1 ? values_in : values_in.contiguous();
  auto leaf = leaf_in.contiguous();
  const int64_t heads = keys.size(1), n = keys.size(2), dim = keys.size(3), groups = keys.size(0) * heads, width = 2 * dim + 1;
  const int64_t* leaf_data = leaf.const_data_ptr<int64_t>();
  check_leaves(leaf, num_leaves, "leaf_sums");
  const auto sum_type = at::toOpMathType(keys.scalar_type());
  auto out = at::zeros({groups, num_leaves, width}, keys.options().dtype(sum_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, keys.scalar_type(), "leaf_sums", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* key_data = keys.const_data_ptr<scalar_t>();
    const scalar_t* value_data = values.const_data_ptr<scalar_t>();
    acc_t* out_data = out.mutable_data_ptr<acc_t>();
    // One group per task: its keys land only in its own leaves.
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      for (int64_t group = begin; group < end; ++group) {
        const int64_t b = group / heads, h = group % heads;
        const scalar_t* group_keys = key_data + b * keys.stride(0) + h * keys.stride(1);
        const scalar_t* group_values = value_data + b * values.stride(0) + h * values.stride(1);
        for_each_key(leaf_data, group, n, [&](int64_t i, int64_t leaf_index) {
          acc_t* row = out_data + (group * num_leaves + leaf_index) * width;
          add_scaled<scalar_t, acc_t>(row, acc_t(1), group_keys + i * keys.stride(2), dim);
          add_scaled<scalar_t, acc_t>(row + dim, acc_t(1), group_values + i * values.stride(2), dim);
          row[2 * dim] += acc_t(1);
        });
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> leaf_sums_backward(const at::Tensor& grad_in, const at::Tensor& keys_in,
                                                                  const at::Tensor& values_in, const at::Tensor& leaf_in) {
  check_keys("leaf_sums_backward", keys_in, values_in, leaf_in);
  auto keys = keys_in.stride(3) == 1 ? keys_in : keys_in.contiguous();
  auto values = values_in.stride(3) == 1 ? values_in : values_in.contiguous();
  auto leaf = leaf_in.contiguous(), grad = grad_in.contiguous();
  const int64_t heads = keys.size(1), n = keys.size(2), dim = keys.size(3), groups = keys.size(0) * heads, width = 2 * dim + 1;
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) == groups && grad.size(2) == width &&
                  grad.scalar_type() == at::toOpMathType(keys.scalar_type()),
              "leaf_sums_backward: grad (B*H, L, 2d+1) of leaf_sums' dtype expected");
  const int64_t num_leaves = grad.size(1);
  check_leaves(leaf, num_leaves, "leaf_sums_backward");
  auto grad_keys = at::zeros(keys.sizes(), keys.options()), grad_values = at::zeros(keys.sizes(), keys.options());
  auto grad_gate = at::zeros(leaf.sizes(), keys.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, keys.scalar_type(), "leaf_sums_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* key_data = keys.const_data_ptr<scalar_t>();
    const scalar_t* value_data = values.const_data_ptr<scalar_t>();
    const acc_t* grad_data = grad.const_data_ptr<acc_t>();
    const int64_t* leaf_data = leaf.const_data_ptr<int64_t>();
    scalar_t* grad_key_data = grad_keys.mutable_data_ptr<scalar_t>();
    scalar_t* grad_value_data = grad_values.mutable_data_ptr<scalar_t>();
    scalar_t* grad_gate_data = grad_gate.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      for (int64_t group = begin; group < end; ++group) {
        const int64_t b = group / heads, h = group % heads;
        const scalar_t* group_keys = key_data + b * keys.stride(0) + h * keys.stride(1);
        const scalar_t* group_values = value_data + b * values.stride(0) + h * values.stride(1);
        for_each_key(leaf_data, group, n, [&](int64_t i, int64_t leaf_index) {
          const acc_t* row = grad_data + (group * num_leaves + leaf_index) * width;
          const scalar_t* key = group_keys + i * keys.stride(2);
          const scalar_t* value = group_values + i * values.stride(2);
          scalar_t* grad_key = grad_key_data + (group * n + i) * dim;
          scalar_t* grad_value = grad_value_data + (group * n + i) * dim;
          for (int64_t c = 0; c < dim; ++c) grad_key[c] = static_cast<scalar_t>(row[c]);
          for (int64_t c = 0; c < dim; ++c) grad_value[c] = static_cast<scalar_t>(row[dim + c]);
          const acc_t gate = dot_mixed<scalar_t, acc_t>(row, key, dim) + dot_mixed<scalar_t, acc_t>(row + dim, value, dim) +
                             row[2 * dim];
          grad_gate_data[group * n + i] = static_cast<scalar_t>(gate);
        });
      }
    });
  });
  return {grad_keys, grad_values, grad_gate};
}

}  // namespace

TORCH_LIBRARY(treeformer_path, m) {
  m.def("path_dots(Tensor nodes, Tensor path, Tensor rows, Tensor? bias, float alpha, bool softmax) -> Tensor");
  m.def("softmax_backward(Tensor weights, Tensor grad) -> Tensor");
  m.def("path_mix(Tensor nodes, Tensor path, Tensor weights) -> Tensor");
  m.def("path_scatter(Tensor weights, Tensor rows, Tensor path, int num_nodes) -> Tensor");
  m.def("leaf_sums(Tensor keys, Tensor values, Tensor leaf, int num_leaves) -> Tensor");
  m.def("leaf_sums_backward(Tensor grad, Tensor keys, Tensor values, Tensor leaf) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(treeformer_path, CPU, m) {
  m.impl("path_dots", &path_dots);
  m.impl("softmax_backward", &softmax_backward);
  m.impl("path_mix", &path_mix);
  m.impl("path_scatter", &path_scatter);
  m.impl("leaf_sums", &leaf_sums);
  m.impl("leaf_sums_backward", &leaf_sums_backward);
}
