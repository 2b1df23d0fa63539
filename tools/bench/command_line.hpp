#pragma once
// The command-line conventions every benchmark follows, whatever its own arguments: --help
// prints the usage (status 0), --version the program's name and grace's version (0), and an
// option it does not know is reported as unknown (2), wherever it stands.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "../../include/grace/version.hpp"  // the benchmarks that link nothing of grace have no include path

namespace bench {

// `usage`: one line, "usage: NAME ...". `with_value`: the options that take a value, which
// follows them (so that a value such as "-1" is not taken for an option).
inline void follow_conventions(int argc, char** argv, const char* name, const char* usage,
                               std::initializer_list<const char*> with_value = {}) {
  for (int i = 1; i < argc; ++i) {
    const char* arg = argv[i];
    if (std::strcmp(arg, "-h") == 0 || std::strcmp(arg, "--help") == 0) {
      std::printf("%s\n", usage);
      std::exit(0);
    }
    if (std::strcmp(arg, "--version") == 0) {
      std::printf("%s (grace) %s\n", name, GRACE_VERSION_STRING);
      std::exit(0);
    }
    bool takes_value = false;
    for (const char* option : with_value) takes_value = takes_value || std::strcmp(arg, option) == 0;
    if (takes_value) {
      ++i;
      continue;
    }
    if (arg[0] == '-' && arg[1] != '\0') {
      std::fprintf(stderr, "%s: unknown option \"%s\"\n%s\n", name, arg, usage);
      std::exit(2);
    }
  }
}

}  // namespace bench
