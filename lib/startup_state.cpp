#include "startup_state.hpp"

#include "read_file.hpp"

#include <unistd.h>


namespace grace::detail {
namespace {

struct startup_state {
  std::vector<std::string> argv;
  std::string cwd;
};

startup_state& state() {
  static startup_state s;
  return s;
}

std::string current_directory() {
  std::string buffer(4096, '\0');
  while (getcwd(buffer.data(), buffer.size()) == nullptr) {
    if (errno != ERANGE) return "/";
    buffer.resize(buffer.size() * 2);
  }
  buffer.resize(buffer.find('\0'));
  return buffer;
}

std::vector<std::string> argv_from_proc() {
  const std::string all = read_small_file("/proc/self/cmdline").value_or("");
  std::vector<std::string> out;
  std::string::size_type start = 0;
  while (start < all.size()) {
    const auto end = all.find('\0', start);
    out.push_back(all.substr(start, end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

// glibc calls .init_array entries with (argc, argv, envp), before main() can change either.
void capture(int argc, char** argv, char**) {
  auto& s = state();
  s.cwd = current_directory();
  for (int i = 0; i < argc && argv != nullptr && argv[i] != nullptr; ++i) s.argv.emplace_back(argv[i]);
}

__attribute__((used, section(".init_array"))) void (*const capture_at_startup)(int, char**,
                                                                              char**) = capture;

}  // namespace

const std::vector<std::string>& startup_argv() {
  auto& s = state();
  if (s.argv.empty()) s.argv = argv_from_proc();
  return s.argv;
}

const std::string& startup_cwd() {
  auto& s = state();
  if (s.cwd.empty()) s.cwd = current_directory();
  return s.cwd;
}

}  // namespace grace::detail
