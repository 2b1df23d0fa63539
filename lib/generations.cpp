#include "generations.hpp"

#include "read_file.hpp"

#include <sstream>

namespace grace::detail {

process_identity identify(pid_t pid) {
  const std::string stat = read_small_file("/proc/" + std::to_string(pid) + "/stat").value_or("");
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos) return {pid, 0};
  std::istringstream fields(stat.substr(paren + 2));
  std::string field;
  std::string state;
  fields >> state;  // field 3
  if (state == "Z" || state == "X") return {pid, 0};
  for (int i = 4; i < 22 && fields >> field; ++i) {
  }
  unsigned long long start = 0;
  fields >> start;  // field 22
  return {pid, start};
}

bool still_running(const process_identity& p) {
  const auto now = identify(p.pid);
  return now.start_time != 0 && now.start_time == p.start_time;
}

bool process_has_exited(pid_t pid) { return pid <= 0 || identify(pid).start_time == 0; }

}  // namespace grace::detail
