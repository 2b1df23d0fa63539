// The pid file, written in this process: never through a symlink, no temporary file left
// behind, a directory that does not exist named in the error.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <string>

#include "grace/pidfile.hpp"
#include "support/process.hpp"

using namespace test_support;

TEST_CASE("the pid file never writes through a symlink, and leaves no temporary file behind") {
  temp_dir dir;
  const std::string victim = dir.file("victim");
  std::ofstream(victim) << "precious\n";
  const std::string pidfile = dir.file("app.pid");
  REQUIRE(symlink(victim.c_str(), pidfile.c_str()) == 0);  // planted by whoever can write the directory
  REQUIRE(grace::write_pidfile(pidfile, 4242));
  CHECK(read_pidfile(pidfile) == 4242);
  std::ifstream in(victim);
  std::string content;
  std::getline(in, content);
  CHECK(content == "precious");
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir.path())) ++files;
  CHECK(files == 2);  // the victim and the pid file
  auto missing_dir = grace::write_pidfile(dir.file("no/such/dir/app.pid"), 1);
  REQUIRE_FALSE(missing_dir);
  CHECK(missing_dir.error().message().find("no/such/dir") != std::string::npos);
}
