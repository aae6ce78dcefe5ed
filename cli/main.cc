// Entry point: subcommand dispatch and the one place errors become exit codes.
//   0 success, 2 bad input or usage (one line on stderr: "xattn: <message>"), 1 anything else.

#include <CLI/CLI.hpp>

#include <iostream>
#include <new>
#include <string>

#include "bench_command.h"
#include "info_command.h"
#include "model_command.h"
#include "process_tuning.h"
#include "run_command.h"
#include "transcribe_command.h"
#include "xattn/error.h"
#include "xattn/runtime.h"

namespace {

constexpr int kUsageError = 2;
constexpr int kInternalError = 1;

// Messages are promised to be one line; CLI11's sometimes span several.
int fail(int status, const std::string& message) {
  std::string line;
  for (char c : message) line += (c == '\n' || c == '\r') ? ' ' : c;
  while (!line.empty() && line.back() == ' ') line.pop_back();
  std::cerr << "xattn: " << line << std::endl;
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    CLI::App app{"xattn: fused cross-attention on CPU.", "xattn"};
    app.set_version_flag("--version", xattn::version());
    app.require_subcommand(1);
    xattn::cli::RunOptions run_options;
    CLI::App* run = xattn::cli::add_run_command(app, run_options);
    CLI::App* info = xattn::cli::add_info_command(app);
    xattn::cli::BenchOptions bench_options;
    CLI::App* bench = xattn::cli::add_bench_command(app, bench_options);
    xattn::cli::ModelOptions model_options;
    CLI::App* model = xattn::cli::add_model_command(app, model_options);
    xattn::cli::TranscribeOptions transcribe_options;
    CLI::App* transcribe = xattn::cli::add_transcribe_command(app, transcribe_options);

    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
      return fail(kUsageError, std::string(e.what()) + " (see 'xattn --help')");
    }

    if (model->parsed() || transcribe->parsed()) xattn::cli::restart_tuned_for_layers(argv);
    if (run->parsed()) xattn::cli::run_command(run_options);
    if (info->parsed()) xattn::cli::info_command(std::cout);
    if (bench->parsed()) xattn::cli::bench_command(bench_options, std::cout);
    if (model->parsed()) xattn::cli::model_command(model_options, std::cout);
    if (transcribe->parsed()) xattn::cli::transcribe_command(transcribe_options, std::cout);
    std::cout.flush();
    if (!std::cout) return fail(kInternalError, "cannot write to standard output");
    return 0;
  } catch (const xattn::Error& e) {
    return fail(kUsageError, e.what());
  } catch (const std::bad_alloc&) {
    return fail(kInternalError, "out of memory");
  } catch (const std::exception& e) {
    return fail(kInternalError, std::string("internal error: ") + e.what());
  }
}
