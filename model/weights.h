// The tensors of a layer range, prepared for compute: matrices stay in their stored dtype (used in place
// from the mapped file where the layout allows), vectors become fp32 with the official load-time maps
// applied (decay exponentials, per-head expansion), LoRA factors are transposed to [out][in].
#pragma once
#include <map>
#include <optional>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "common/matrix.h"
#include "model/architecture.h"
#include "model/checkpoint.h"

namespace skein {

// How a stage keeps its matrices: in the stored dtype, converted to `dtype`, or quantized (`i8`, the
// official uint8 scheme, for linear matrices and the head; LoRA factors and the embedding stay float).
struct WeightFormat {
  std::optional<DType> dtype;  // nullopt: as stored in the checkpoint
  bool i8 = false;
};

struct LayerWeights {
  std::map<std::string, Vector> vec;  // e.g. "ln1.weight", "att.time_mix_k"
  std::map<std::string, Matrix> mat;  // e.g. "att.key", "ffn.value", "att.w1" (LoRA, transposed)

  const Vector& v(const std::string& name) const;
  const Matrix& m(const std::string& name) const;
  bool has_m(const std::string& name) const { return mat.count(name) != 0; }
};

struct ModelWeights {
  ModelDims dims;
  std::shared_ptr<const Checkpoint> checkpoint;
  int first_layer = 0;  // layers [first_layer, last_layer) are loaded
  int last_layer = 0;

  // Embedding (present when the range starts at layer 0): raw table rows + ln0, applied per lookup.
  bool has_embedding = false;
  TensorRef emb;
  Vector ln0_w, ln0_b;
  // ln0 is applied in fp32 per lookup. (The official v4-v6 loaders run it in bf16 on bf16 tables; that
  // rounding is not reproducible and costs up to 0.03 in the logits, see ../shared/golden/README.md.)
  // Replacement table [vocab x C] already normalised (tests load the official emb_ln0.f32 here).
  std::shared_ptr<const std::vector<float>> emb_override;

  WeightFormat format;
  std::set<int> streamed;            // layers whose matrices are prepared on each use, not kept
  std::vector<LayerWeights> layers;  // index 0 = first_layer; empty for streamed layers

  bool has_head = false;  // present when the range ends at the last layer
  Vector ln_out_w, ln_out_b;
  Matrix head;

  size_t matrix_bytes() const;    // bytes of every resident matrix (what a decode step reads), head included
  size_t resident_bytes() const;  // everything prepared and kept: matrices, vectors, the embedding table
  size_t streamed_bytes() const;  // the streamed layers' tensors, prepared: what a step brings in from host memory

  // A streamed layer's weights, prepared now; release_layer_pages() afterwards returns its file pages.
  LayerWeights load_streamed_layer(int layer) const;
  void release_layer_pages(int layer) const;
};

// Bytes a tensor occupies once prepared in `format` (what resident_bytes() counts), from its header alone;
// placement plans use this without reading any weight.
uint64_t prepared_tensor_bytes(const TensorRef& t, const ModelDims& dims, const WeightFormat& format);

// Loads layers [first, last) and, if asked, embedding and head. Validates every tensor's shape against
// the detected dims; errors name the file and the tensor.
ModelWeights load_weights(std::shared_ptr<const Checkpoint> ck, const ModelDims& dims, int first, int last,
                          bool with_embedding, bool with_head, const WeightFormat& format = {}, std::set<int> streamed = {});

// Layer `layer`'s tuned initial wkv state (blocks.N.att.time_state) in the state's layout, fp32.
Vector initial_wkv_state(const Checkpoint& ck, const ModelDims& dims, int layer);

inline ModelWeights load_all_weights(std::shared_ptr<const Checkpoint> ck, const ModelDims& dims) {
  return load_weights(std::move(ck), dims, 0, dims.n_layer, true, true);
}

}  // namespace skein
