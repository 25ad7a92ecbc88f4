#pragma once
// Where the tests find the source tree (fixtures, data/trec) and the txtcls program. The paths
// are compiled into one small file (test_paths.cpp), not into every test: a second checkout of
// the project then recompiles only that file and takes the rest from the compiler cache.
namespace tt {
const char* source_dir();
const char* cli_path();  // "" when the program is not built
}  // namespace tt

#define TXTCLS_SOURCE_DIR ::tt::source_dir()
#define TXTCLS_CLI ::tt::cli_path()
