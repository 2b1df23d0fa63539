#include "process_tree.hpp"

#include <dirent.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "read_file.hpp"

namespace harness {
namespace {

// Parent pid from /proc/PID/stat (field 4, after the command name in parentheses); 0 if gone.
pid_t parent_of(pid_t pid) {
  const std::string stat = grace::detail::read_small_file("/proc/" + std::to_string(pid) + "/stat").value_or("");
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 4 >= stat.size()) return 0;
  return static_cast<pid_t>(std::atol(stat.c_str() + paren + 4));
}

bool kernel_lists_children() {
  static const bool lists = access(("/proc/self/task/" + std::to_string(gettid()) + "/children").c_str(), R_OK) == 0;
  return lists;
}

// Appends the children of every thread of `pid` (/proc/PID/task/TID/children).
void children_of(pid_t pid, std::vector<pid_t>& out) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  DIR* dir = opendir(tasks.c_str());
  if (dir == nullptr) return;  // gone meanwhile: no children to find
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    auto list = grace::detail::read_small_file(tasks + "/" + entry->d_name + "/children");
    if (!list) continue;  // the thread is gone
    const char* p = list->c_str();
    char* end = nullptr;
    for (long child = std::strtol(p, &end, 10); end != p; child = std::strtol(p, &end, 10)) {
      out.push_back(static_cast<pid_t>(child));
      p = end;
    }
  }
  closedir(dir);
}

// By every process's parent: a walk through all of /proc, for kernels without the children files.
std::vector<pid_t> descendants_by_parent(pid_t root) {
  std::map<pid_t, std::vector<pid_t>> children;
  if (DIR* proc = opendir("/proc")) {
    while (dirent* entry = readdir(proc)) {
      const pid_t pid = static_cast<pid_t>(std::atol(entry->d_name));
      if (pid > 0) children[parent_of(pid)].push_back(pid);
    }
    closedir(proc);
  }
  std::vector<pid_t> out, todo{root};
  while (!todo.empty()) {
    const pid_t next = todo.back();
    todo.pop_back();
    for (pid_t child : children[next]) {
      out.push_back(child);
      todo.push_back(child);
    }
  }
  return out;
}

}  // namespace

std::uint64_t start_ticks(pid_t pid) {
  const std::string stat = grace::detail::read_small_file("/proc/" + std::to_string(pid) + "/stat").value_or("");
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  // Fields after the command: state is field 3, starttime field 22.
  const char* p = stat.c_str() + paren + 1;
  for (int field = 3; field <= 22 && *p != '\0'; ++field) {
    while (*p == ' ') ++p;
    if (field == 22) return std::strtoull(p, nullptr, 10);
    while (*p != ' ' && *p != '\0') ++p;
  }
  return 0;
}

std::uint64_t boot_ticks_now() {
  timespec now{};
  clock_gettime(CLOCK_BOOTTIME, &now);
  const auto hz = static_cast<std::uint64_t>(sysconf(_SC_CLK_TCK));
  return static_cast<std::uint64_t>(now.tv_sec) * hz + static_cast<std::uint64_t>(now.tv_nsec) * hz / 1000000000ULL;
}

// The referee looks often while it measures, so it reads only the tree's own children lists (a few
// files), not every process on the machine: a walk through /proc took milliseconds of a core the
// server needed.
std::vector<pid_t> descendants_of(pid_t root) {
  if (!kernel_lists_children()) return descendants_by_parent(root);  // no CONFIG_PROC_CHILDREN
  std::vector<pid_t> out, todo{root};
  while (!todo.empty()) {
    const pid_t next = todo.back();
    todo.pop_back();
    const std::size_t before = out.size();
    children_of(next, out);
    todo.insert(todo.end(), out.begin() + static_cast<long>(before), out.end());
  }
  return out;
}

namespace {

// Calls `each` with the inode of every socket `pid` holds.
template <typename F>
void for_each_socket(pid_t pid, F each) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* fds = opendir(dir.c_str());
  if (fds == nullptr) return;  // gone meanwhile, or not ours to read
  while (dirent* entry = readdir(fds)) {
    if (entry->d_name[0] == '.') continue;
    char target[64];
    const ssize_t n = readlinkat(dirfd(fds), entry->d_name, target, sizeof target - 1);
    if (n <= 8 || std::strncmp(target, "socket:[", 8) != 0) continue;
    target[n] = '\0';
    each(std::strtoul(target + 8, nullptr, 10));
  }
  closedir(fds);
}

}  // namespace

std::map<unsigned long, pid_t> socket_owners(const std::vector<pid_t>& pids) {
  std::map<unsigned long, pid_t> owners;
  for (const pid_t pid : pids) for_each_socket(pid, [&](unsigned long inode) { owners[inode] = pid; });
  return owners;
}

std::map<pid_t, std::set<unsigned long>> holders_anywhere(const std::set<unsigned long>& inodes, long uid) {
  std::map<pid_t, std::set<unsigned long>> out;
  if (inodes.empty()) return out;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return out;
  const pid_t self = getpid();
  while (dirent* entry = readdir(proc)) {
    if (entry->d_name[0] < '1' || entry->d_name[0] > '9') continue;
    const pid_t pid = static_cast<pid_t>(std::atol(entry->d_name));
    if (pid == self) continue;
    struct stat st {};
    if (uid >= 0 && (fstatat(dirfd(proc), entry->d_name, &st, 0) != 0 || st.st_uid != static_cast<uid_t>(uid))) continue;
    for_each_socket(pid, [&](unsigned long inode) {
      if (inodes.count(inode) != 0) out[pid].insert(inode);
    });
  }
  closedir(proc);
  return out;
}

std::set<pid_t> holders_among(const std::vector<pid_t>& pids, const std::set<unsigned long>& inodes) {
  std::set<pid_t> out;
  for (const pid_t pid : pids)
    for_each_socket(pid, [&](unsigned long inode) {
      if (inodes.count(inode) != 0) out.insert(pid);
    });
  return out;
}

}  // namespace harness
