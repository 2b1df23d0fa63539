#include "generations.hpp"

#include "read_file.hpp"

#include <cstdlib>
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

std::string format_ancestors(const std::vector<process_identity>& list) {
  std::string out;
  for (const auto& p : list)
    out += (out.empty() ? "" : ",") + std::to_string(p.pid) + ":" + std::to_string(p.start_time);
  return out;
}

std::vector<process_identity> parse_ancestors(const std::string& text) {
  std::vector<process_identity> out;
  std::istringstream in(text);
  std::string entry;
  while (std::getline(in, entry, ',')) {
    const auto colon = entry.find(':');
    if (colon == std::string::npos) continue;
    char* end = nullptr;
    const long pid = std::strtol(entry.c_str(), &end, 10);
    const unsigned long long start = std::strtoull(entry.c_str() + colon + 1, &end, 10);
    if (pid > 0 && start > 0) out.push_back({static_cast<pid_t>(pid), start});
  }
  return out;
}

}  // namespace grace::detail
