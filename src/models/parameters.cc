// Parameter sources and xattn checkpoints.

#include "xattn/models/parameters.h"

#include <string>
#include <utility>

#include "xattn/error.h"

namespace xattn::models {

Parameters::Parameters(Lookup lookup, std::vector<std::string> names)
    : source_(std::make_shared<Source>(Source{std::move(lookup), std::move(names), {}})) {}

Parameters::Parameters(const SafetensorsFile& file)
    : Parameters([&file](std::string_view name) {
        return file.contains(name) ? file.tensor(name) : TensorView{};
      }, file.names()) {}

Parameters Parameters::under(std::string_view prefix) const {
  return Parameters(source_, prefix_ + std::string(prefix));
}

std::string Parameters::name(std::string_view name) const { return prefix_ + std::string(name); }

std::string Parameters::scope() const {
  return prefix_.ends_with('.') ? prefix_.substr(0, prefix_.size() - 1) : prefix_;
}

TensorView Parameters::operator[](std::string_view name) const {
  const std::string full = this->name(name);
  const TensorView t = source_->lookup(full);
  if (t.present()) source_->used.insert(full);
  return t;
}

std::function<TensorView(std::string_view)> Parameters::lookup() const {
  return [self = *this](std::string_view name) { return self[name]; };
}

void Parameters::expect_all_used() const {
  std::string unused;
  int count = 0;
  for (const std::string& name : source_->names)
    if (!source_->used.contains(name) && count++ < 5) unused += (unused.empty() ? "'" : ", '") + name + "'";
  if (count > 0)
    throw Error("unexpected tensor" + std::string(count > 1 ? "s " : " ") + unused +
                (count > 5 ? " and " + std::to_string(count - 5) + " more" : "") +
                " (no module of this configuration has them)");
}

Checkpoint::Checkpoint(const std::string& path) : file(path) {
  const auto& meta = file.metadata();
  const auto kind_it = meta.find("xattn.model"), config_it = meta.find("xattn.config");
  if (kind_it == meta.end() || config_it == meta.end())
    throw Error(path + ": not an xattn model checkpoint (its metadata has no 'xattn.model' and "
                "'xattn.config'; save it with xattn.models.save_checkpoint)");
  kind = kind_it->second;
  config_json = config_it->second;
}

void read_checkpoint(
    const std::string& path, std::string_view kind,
    const std::function<void(const std::string& config_json, const Parameters&)>& build) {
  const Checkpoint checkpoint(path);
  if (checkpoint.kind != kind)
    throw Error(path + ": holds a " + checkpoint.kind + ", expected a " + std::string(kind));
  try {
    const Parameters parameters(checkpoint.file);
    build(checkpoint.config_json, parameters);
    parameters.expect_all_used();
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

}  // namespace xattn::models
