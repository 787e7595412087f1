// tierkv-bench: measures tierkv against the physical limit of the same machine, measured in the
// same run. One subcommand per subsystem; see bench_command.h.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench_command.h"
#include "common/tool_main.h"

namespace {

int run_main(int argc, char** argv) {
  using namespace tierkv::bench;
  CLI::App app{"tierkv-bench: tierkv's figures next to the machine's physical limits"};
  app.set_version_flag("--version", TIERKV_VERSION);
  app.require_subcommand(1);

  auto commands = all_bench_commands();
  std::vector<CLI::App*> subcommands;
  CommonOptions common;
  for (auto& c : commands) {
    CLI::App* sub = app.add_subcommand(c->name(), c->summary());
    sub->add_flag("--json", common.json, "print exactly one JSON object on stdout");
    sub->add_flag("--quick", common.quick, "short measurements (a smoke test, not a result)");
    c->add_options(*sub);
    subcommands.push_back(sub);
  }
  CLI11_PARSE(app, argc, argv);

  for (size_t i = 0; i < commands.size(); ++i) {
    if (!*subcommands[i]) continue;
    auto report = commands[i]->run(common);
    if (!report.ok()) {
      return tierkv::tools::exit_status("tierkv-bench " + commands[i]->name(), report.status());
    }
    const std::string out = common.json ? report->render_json() : report->render_table();
    std::fwrite(out.data(), 1, out.size(), stdout);
    // Missing a target is a result, not a failure of the tool: exit 0 either way.
    return 0;
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  return tierkv::tools::run_guarded("tierkv-bench", run_main, argc, argv);
}
