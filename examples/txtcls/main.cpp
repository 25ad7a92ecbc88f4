// txtcls: the command-line program. Usage errors exit with status 2, failures of a command
// with status 1 and exactly one line "txtcls: error: <what>" on stderr.
#include <exception>
#include <iostream>
#include <map>
#include <new>
#include <string>

#include "commands.hpp"
#include "txtcls/core/error.hpp"

#ifndef TXTCLS_VERSION
#error "TXTCLS_VERSION must be defined by the build"
#endif

namespace {

// A message may quote file contents; control characters would break the one-line contract.
std::string one_line(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\n' || c == '\r') out += ' ';
    else if (static_cast<unsigned char>(c) < 0x20) out += '?';
    else out += c;
  }
  return out;
}

int report(std::string_view what) {
  std::cerr << "txtcls: error: " << one_line(what) << '\n';
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"txtcls: text classification models on a small C++ tensor/autograd core", "txtcls"};
  app.set_version_flag("--version", "txtcls " TXTCLS_VERSION);
  app.require_subcommand(1);
  app.failure_message([](const CLI::App* a, const CLI::Error& e) {
    std::string where = a->get_parent() ? " " + a->get_name() : "";
    return "txtcls" + where + ": usage error: " + one_line(e.what()) + "\nRun 'txtcls" + where +
           " --help' for the options.\n";
  });

  std::map<const CLI::App*, txtcls_cli::Action> actions;
  for (const auto& c : txtcls_cli::kCommands) {
    CLI::App* sub = app.add_subcommand(c.name, c.summary);
    actions[sub] = c.setup(*sub);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  try {
    for (const auto& [sub, action] : actions)
      if (sub->parsed()) return action();
    return report("no subcommand given");  // unreachable: require_subcommand(1)
  } catch (const txtcls::Error& e) {
    return report(e.what());
  } catch (const std::bad_alloc&) {
    return report("out of memory");
  } catch (const std::exception& e) {
    return report(e.what());
  }
}
