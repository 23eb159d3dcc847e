// The decode product kernel (kernels/cuda/matvec.cuh) on one GPU at several pipeline depths, next to a
// plain read of the same bytes and the card's peak: what the kernel achieves per shape, what the
// memory allows, and which depth to run. `skein bench --products` prints it; a GPU test runs it small.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace skein {

struct ProductShape {
  std::string format;  // "fp16" or "uint8"
  int64_t rows, cols;
  int T;  // rows of x, 1 to 8
};

struct ProductSweepRow {
  ProductShape shape;
  std::string kernel;  // "read" (the floor: a plain read of the weight bytes), or "steps S, stages R"
  int steps = 0, stages = 0;   // the depth (0 for the read)
  int blocks_per_sm = 0;       // blocks of 8 warps an SM holds at once (the occupancy calculator's)
  bool product = false;        // the depth the products run at
  double us = 0;               // per launch, best of the repeats
  double gb_s = 0;             // weight bytes per second
  double max_error = 0;        // largest |y - exact| over sum |w x| (fp64 on the host, sampled rows)
  bool same_as_product = true;  // bit for bit the product depth's results
};

// Every shape at every depth the sweep instantiates, on `device`. Weights are random and rotated
// through copies that together exceed the L2 cache, so every launch reads from memory.
std::vector<ProductSweepRow> sweep_products(int device, const std::vector<ProductShape>& shapes, int repeats);

// A 7B v7 layer's products and its head, fp16 and uint8, at 1 and 8 rows of x.
std::vector<ProductShape> decode_product_shapes();

}  // namespace skein
