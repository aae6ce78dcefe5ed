#pragma once
// Where a model's trained parameters come from: a checkpoint (or any name -> view source), read
// under a prefix as modules nest ("blocks.0." then "attn." ...). Every name read is recorded, so
// a loader can refuse a checkpoint holding tensors no module took (like torch's strict loading).

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "xattn/safetensors.h"
#include "xattn/tensor.h"

namespace xattn::models {

class Parameters {
 public:
  // lookup(name) returns an absent view for a name it does not hold; `names` lists those it does.
  using Lookup = std::function<TensorView(std::string_view name)>;
  Parameters(Lookup lookup, std::vector<std::string> names);
  // The tensors of a safetensors file, which must outlive this object.
  explicit Parameters(const SafetensorsFile& file);

  // The same source under `prefix` + this one's prefix ("blocks.0." then "attn.").
  Parameters under(std::string_view prefix) const;
  // The full name of `name` here, as errors should give it.
  std::string name(std::string_view name) const;
  // The prefix without its final dot, as a layer loaded from here names itself ("blocks.0.norm1").
  std::string scope() const;
  // The tensor, or an absent view when the source lacks it (the loading layer then names it).
  TensorView operator[](std::string_view name) const;
  // A lookup for the nn layers' load_state_dict, resolving names under this prefix.
  std::function<TensorView(std::string_view)> lookup() const;

  // Throws xattn::Error naming (up to five of) the tensors no one read.
  void expect_all_used() const;

 private:
  struct Source {
    Lookup lookup;
    std::vector<std::string> names;
    std::set<std::string, std::less<>> used;
  };
  Parameters(std::shared_ptr<Source> source, std::string prefix)
      : source_(std::move(source)), prefix_(std::move(prefix)) {}

  std::shared_ptr<Source> source_;
  std::string prefix_;
};

// A checkpoint written by xattn.models.save_checkpoint: the module's state_dict, with its kind
// ("xattn.model", e.g. "PerceiverIO") and constructor arguments ("xattn.config", JSON) in the
// metadata.
struct Checkpoint {
  // Throws xattn::Error naming `path` when it is no safetensors file or has no xattn metadata.
  explicit Checkpoint(const std::string& path);

  SafetensorsFile file;
  std::string kind;
  std::string config_json;
};

// Opens the checkpoint at `path`, which must be of `kind`, and calls build(config_json,
// parameters) to make the model; then checks that every tensor was read. Every xattn::Error
// (from the file, the config, a missing or misshapen tensor, an unused one) names the path.
void read_checkpoint(
    const std::string& path, std::string_view kind,
    const std::function<void(const std::string& config_json, const Parameters&)>& build);

}  // namespace xattn::models
