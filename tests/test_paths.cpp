#include "test_paths.hpp"

namespace tt {
const char* source_dir() { return TXTCLS_SOURCE_DIR_VALUE; }
const char* cli_path() { return TXTCLS_CLI_VALUE; }
}  // namespace tt
