// What the CUDA products keep on a GPU beside a stage's weights, states and activations: cuBLAS
// handles' workspaces and the products' scratch. Plain C++, so the placement plan (built with or without
// CUDA) counts exactly what linear.cu allocates.
#pragma once
#include <algorithm>
#include <cstdint>

namespace skein::cuda {

constexpr int kMaxGroup = 8;     // jobs per launch: a v7 layer's r, k, v and four LoRA inputs
constexpr int kGemmLanes = 4;    // cuBLAS handles (and streams) a set of GEMMs runs on side by side
constexpr uint64_t kBlasWorkspaceBytes = uint64_t(32) << 20;  // per handle: NVIDIA's advice for Hopper
constexpr int64_t kDequantTileRows = 4096;                     // uint8 weight rows dequantized at once for a GEMM
constexpr uint64_t kProductLibraryBytes = kGemmLanes * kBlasWorkspaceBytes;

// The most product scratch (one block per GPU, grown to the largest step) a step of `rows` rows of
// activations asks for, with n_embd and dim_ffn the widest inputs: every distinct input of a group
// rounded to 16 bits (at most kMaxGroup n_embd-wide ones, or the one dim_ffn-wide input of ffn.value),
// and with uint8 weights, one input plus a dequantized tile, or a matrix-vector group's split inputs.
constexpr uint64_t product_scratch_bytes(int64_t rows, int64_t n_embd, int64_t dim_ffn, bool u8) {
  const uint64_t widest = uint64_t(std::max(n_embd, dim_ffn)), r = uint64_t(rows), align = 256;
  uint64_t bytes = 2 * r * std::max(uint64_t(kMaxGroup) * uint64_t(n_embd), uint64_t(dim_ffn)) + kMaxGroup * align;
  if (u8) {
    bytes = std::max(bytes, 2 * (r + uint64_t(kDequantTileRows)) * widest + 2 * align);
    bytes = std::max(bytes, uint64_t(kMaxGroup) * (2 * (2 * 8 * widest + align) + align));
  }
  return bytes;
}

}  // namespace skein::cuda
