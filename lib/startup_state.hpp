#pragma once
#include <string>
#include <vector>

namespace grace::detail {

// argv and the working directory as they were when the program started, before it could chdir
// or rewrite its argv.
const std::vector<std::string>& startup_argv();
const std::string& startup_cwd();

}  // namespace grace::detail
