#pragma once
// The subcommands of the txtcls program. Each lives in its own cmd_<name>.cpp: it declares its
// options on the CLI11 subcommand it is given and returns the action to run once the whole
// command line has parsed. Adding a subcommand is one file plus one line in kCommands.
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <string_view>

namespace txtcls_cli {

// Runs the subcommand; returns the exit status. Failures throw (txtcls::Error or any
// std::exception): main() turns them into one line on stderr and exit status 1.
using Action = std::function<int()>;

struct Command {
  const char* name;
  const char* summary;
  Action (*setup)(CLI::App& sub);
};

Action setup_train(CLI::App& sub);
Action setup_eval(CLI::App& sub);
Action setup_predict(CLI::App& sub);
Action setup_forward(CLI::App& sub);
Action setup_inspect(CLI::App& sub);

// In the order `txtcls --help` lists them.
inline constexpr Command kCommands[] = {
    {"train", "Train a classifier on a dataset and save the best model", setup_train},
    {"eval", "Evaluate a trained model on a dataset (accuracy, macro-F1, per class)", setup_eval},
    {"predict", "Classify lines of text from stdin: LABEL<TAB>probability per line", setup_predict},
    {"forward", "Run a model on given weights and inputs (parity checks against a reference)", setup_forward},
    {"inspect", "List the tensors and metadata of a safetensors file", setup_inspect},
};

}  // namespace txtcls_cli
