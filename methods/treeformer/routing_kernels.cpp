// DGT routing without the AND bias (methods/treeformer/tree.py, `_DGTRouting`), one pass each way
// over the node scores z (H, N, T) of T tokens (N = 2^h - 1 nodes, breadth-first):
//   dgt_walk(z) -> (leaf (H, 1, T), walked (H, h, T), scale (H, 1, T)): the walk from the root,
//       z < 0 going right, the nodes it passed, and DGT's scale mean|z| over the nodes;
//   dgt_walk_backward(z, walked, beta, factor) -> grad_z (H, N, T): the closed-form straight-through
//       gradient of `_factorised_node_grad` times `factor` (H, 1, T), kept where |z| < 1 + eps (DGT's
//       hard-tanh window); beta = tanh(mean|z|) and factor = p_leaf * d loss / d gate * 2 (2 mean|z|
//       when scaled) come in from PyTorch, whose vectorised tanh, log and exp were faster than
//       the C library's per token.
// The eager code makes a dozen passes over (H, N, T) tensors for these; here each token's nodes
// are visited once, in chunks of tokens so that the loops over a chunk vectorise.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

namespace {

constexpr int64_t kChunk = 64;  // tokens per inner loop

// +1 for z >= 0, else -1, as arithmetic: the signs of node scores are random, and a branch on them
// mispredicted half the time (these loops ran several times slower with the ternary).
template <typename acc_t>
inline acc_t sign_of(acc_t value) {
  return static_cast<acc_t>(value >= 0) * 2 - 1;
}

int64_t height_of(int64_t nodes) {
  int64_t height = 0;
  while ((int64_t{2} << height) - 1 <= nodes) ++height;
  TORCH_CHECK((int64_t{1} << height) - 1 == nodes, "dgt_walk: z must have 2^h - 1 nodes, got ", nodes);
  return height;
}

// Calls visit(head, first token, tokens in chunk) for every chunk of every head, in parallel.
template <typename Visit>
void for_each_chunk(int64_t heads, int64_t tokens, const Visit& visit) {
  const int64_t chunks = (tokens + kChunk - 1) / kChunk;
  at::parallel_for(0, heads * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t head = task / chunks, first = (task % chunks) * kChunk;
      visit(head, first, std::min(kChunk, tokens - first));
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dgt_walk(const at::Tensor& z_in) {
  TORCH_CHECK(z_in.dim() == 3 && z_in.is_floating_point(), "dgt_walk: z (H, N, T) floating point expected");
  auto z = z_in.contiguous();
  const int64_t heads = z.size(0), nodes = z.size(1), tokens = z.size(2), height = height_of(nodes);
  auto leaf = at::empty({heads, 1, tokens}, z.options().dtype(at::kLong));
  auto walked = at::empty({heads, height, tokens}, z.options().dtype(at::kLong));
  auto scale = at::empty({heads, 1, tokens}, z.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, z.scalar_type(), "dgt_walk", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* z_data = z.const_data_ptr<scalar_t>();
    int64_t* leaf_data = leaf.mutable_data_ptr<int64_t>();
    int64_t* walked_data = walked.mutable_data_ptr<int64_t>();
    scalar_t* scale_data = scale.mutable_data_ptr<scalar_t>();
    for_each_chunk(heads, tokens, [&](int64_t head, int64_t first, int64_t count) {
      const scalar_t* head_z = z_data + head * nodes * tokens;
      acc_t sums[kChunk] = {};
      for (int64_t node = 0; node < nodes; ++node) {
        const scalar_t* row = head_z + node * tokens + first;
        for (int64_t c = 0; c < count; ++c) sums[c] += std::abs(static_cast<acc_t>(row[c]));
      }
      for (int64_t c = 0; c < count; ++c) scale_data[head * tokens + first + c] = static_cast<scalar_t>(sums[c] / nodes);
      for (int64_t c = 0; c < count; ++c) {
        const int64_t token = first + c;
        int64_t node = 0;
        for (int64_t level = 0; level < height; ++level) {
          walked_data[(head * height + level) * tokens + token] = node;
          node = 2 * node + 1 + (head_z[node * tokens + token] < 0 ? 1 : 0);
        }
        leaf_data[head * tokens + token] = node - nodes;
      }
    });
  });
  return {leaf, walked, scale};
}

at::Tensor dgt_walk_backward(const at::Tensor& z_in, const at::Tensor& walked_in, const at::Tensor& beta_in,
                             const at::Tensor& factor_in) {
  TORCH_CHECK(z_in.dim() == 3 && z_in.is_floating_point(), "dgt_walk_backward: z (H, N, T) floating point expected");
  auto z = z_in.contiguous(), walked = walked_in.contiguous();
  const int64_t heads = z.size(0), nodes = z.size(1), tokens = z.size(2), height = height_of(nodes);
  auto beta = beta_in.to(z.scalar_type()).contiguous(), factor = factor_in.to(z.scalar_type()).contiguous();
  TORCH_CHECK(beta.numel() == heads * tokens && factor.numel() == heads * tokens,
              "dgt_walk_backward: beta and factor (H, 1, T) expected");
  TORCH_CHECK(walked.scalar_type() == at::kLong && walked.dim() == 3 && walked.size(0) == heads &&
                  walked.size(1) == height && walked.size(2) == tokens,
              "dgt_walk_backward: walked (H, h, T) int64 expected");
  const int64_t* walked_data = walked.const_data_ptr<int64_t>();
  bool inside = true;
  for (int64_t index = 0; index < walked.numel(); ++index)
    inside &= static_cast<uint64_t>(walked_data[index]) < static_cast<uint64_t>(nodes);
  TORCH_CHECK(inside, "dgt_walk_backward: a walked node outside the tree");
  auto grad_z = at::empty(z.sizes(), z.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, z.scalar_type(), "dgt_walk_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* z_data = z.const_data_ptr<scalar_t>();
    const scalar_t* beta_data = beta.const_data_ptr<scalar_t>();
    const scalar_t* factor_data = factor.const_data_ptr<scalar_t>();
    scalar_t* out_data = grad_z.mutable_data_ptr<scalar_t>();
    const acc_t edge = acc_t(1) + std::numeric_limits<scalar_t>::epsilon();
    for_each_chunk(heads, tokens, [&](int64_t head, int64_t first, int64_t count) {
      const scalar_t* head_z = z_data + head * nodes * tokens + first;
      const scalar_t* chunk_beta = beta_data + head * tokens + first;
      scalar_t* head_out = out_data + head * nodes * tokens + first;
      // The chunk's scores first go to a local (N, chunk) block: rows of z lie T floats apart,
      // a multiple of 4 KiB at the usual T, so reading them in place kept evicting each other
      // from the L1 cache (this loop ran several times slower that way).
      std::vector<acc_t> block(3 * nodes * kChunk);
      acc_t* __restrict__ local_z = block.data();
      acc_t* __restrict__ reach = local_z + nodes * kChunk;  // the probability of passing each node
      acc_t* __restrict__ grad = reach + nodes * kChunk;
      for (int64_t node = 0; node < nodes; ++node)
        for (int64_t c = 0; c < count; ++c) local_z[node * kChunk + c] = static_cast<acc_t>(head_z[node * tokens + c]);
      // Root reach 1, children reach (1 +- s beta) / 2; node j's gradient before the walked path
      // is -tilt_j = -s_j beta reach_j.
      for (int64_t c = 0; c < count; ++c) reach[c] = 1;
      for (int64_t node = 0; node < nodes; ++node) {
        const acc_t* __restrict__ row = local_z + node * kChunk;
        const acc_t* __restrict__ here = reach + node * kChunk;
        acc_t* __restrict__ node_grad = grad + node * kChunk;
        for (int64_t c = 0; c < count; ++c)
          node_grad[c] = -sign_of(row[c]) * here[c] * static_cast<acc_t>(chunk_beta[c]);
        if (2 * node + 2 < nodes) {
          acc_t* __restrict__ left = reach + (2 * node + 1) * kChunk;
          acc_t* __restrict__ right = reach + (2 * node + 2) * kChunk;
          for (int64_t c = 0; c < count; ++c) {
            left[c] = (here[c] - node_grad[c]) / 2;
            right[c] = (here[c] + node_grad[c]) / 2;
          }
        }
      }
      for (int64_t level = 0; level < height; ++level) {
        const int64_t* level_nodes = walked_data + (head * height + level) * tokens + first;
        for (int64_t c = 0; c < count; ++c) {
          const int64_t index = level_nodes[c] * kChunk + c;
          grad[index] += sign_of(local_z[index]);
        }
      }
      const scalar_t* __restrict__ chunk_factor = factor_data + head * tokens + first;
      for (int64_t node = 0; node < nodes; ++node) {
        const acc_t* __restrict__ row = local_z + node * kChunk;
        const acc_t* __restrict__ node_grad = grad + node * kChunk;
        scalar_t* __restrict__ out = head_out + node * tokens;
        for (int64_t c = 0; c < count; ++c) {
          const acc_t inside_window = static_cast<acc_t>(std::abs(row[c]) < edge);
          out[c] = static_cast<scalar_t>(inside_window * node_grad[c] * static_cast<acc_t>(chunk_factor[c]));
        }
      }
    });
  });
  return grad_z;
}

}  // namespace

TORCH_LIBRARY(treeformer_routing, m) {
  m.def("dgt_walk(Tensor z) -> (Tensor, Tensor, Tensor)");
  m.def("dgt_walk_backward(Tensor z, Tensor walked, Tensor beta, Tensor factor) -> Tensor");
}

TORCH_LIBRARY_IMPL(treeformer_routing, CPU, m) {
  m.impl("dgt_walk", &dgt_walk);
  m.impl("dgt_walk_backward", &dgt_walk_backward);
}
