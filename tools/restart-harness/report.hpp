#pragma once
#include <string>

#include "grace/error.hpp"
#include "harness.hpp"

namespace harness {

struct verdict {
  bool pass = false;
  std::string line;  // "PASS: 0 lost in N requests across R restarts" or "FAIL: ..."
};

// The summary table (steady state beside the windows around restarts) and the verdict.
verdict summarize(const options& o, const run_record& r, std::string& table);
grace::result<void> write_json(const options& o, const run_record& r, const verdict& v, const std::string& path);
grace::result<void> write_svg(const options& o, const run_record& r, const std::string& path);

}  // namespace harness
