#pragma once
// `xattn info`: what the library chose at run time.

#include <ostream>

namespace CLI {
class App;
}

namespace xattn::cli {

CLI::App* add_info_command(CLI::App& app);
void info_command(std::ostream& os);

}  // namespace xattn::cli
