// The two builds agree: CMakeLists.txt and meson.build compile the same library sources, and
// tests/CMakeLists.txt and tests/meson.build register the same tests with the same label, so that
// a test registered in one build only cannot silently not run in the other. Every
// tests/test_*.cpp is registered, the fuzz targets are the same, and each CMake option has its
// meson option with the same default. Reads the files named through GRACE_SOURCE_DIR; each failure
// names what differs.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#ifndef GRACE_SOURCE_DIR
#error "GRACE_SOURCE_DIR must name the source tree"
#endif

namespace {

const std::string source_dir = GRACE_SOURCE_DIR;

std::string read(const std::string& relative) {
  std::ifstream in(source_dir + "/" + relative);
  REQUIRE_MESSAGE(in, "cannot read " << source_dir << "/" << relative);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The text without comments: from '#' outside a quoted string to the end of the line.
std::string without_comments(const std::string& text) {
  std::string out;
  char quote = 0;
  bool comment = false;
  for (char c : text) {
    if (comment) {
      if (c == '\n') {
        comment = false;
        out += c;
      }
      continue;
    }
    if (quote) {
      if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == '#') {
      comment = true;
      continue;
    } else if (c == '\n') {
      quote = 0;
    }
    out += c;
  }
  return out;
}

// From the '(', '[' or '{' at `open` to its match (exclusive); empty when unbalanced.
std::string balanced(const std::string& text, std::size_t open) {
  const char opening = text[open];
  const char closing = opening == '(' ? ')' : opening == '[' ? ']' : '}';
  int depth = 0;
  char quote = 0;
  for (std::size_t i = open; i < text.size(); ++i) {
    const char c = text[i];
    if (quote) {
      if (c == quote) quote = 0;
      continue;
    }
    if (c == '\'' || c == '"') quote = c;
    else if (c == opening) ++depth;
    else if (c == closing && --depth == 0) return text.substr(open + 1, i - open - 1);
  }
  return {};
}

std::vector<std::string> words(const std::string& text) {
  std::istringstream in(text);
  return {std::istream_iterator<std::string>(in), std::istream_iterator<std::string>()};
}

std::vector<std::string> quoted(const std::string& text) {
  std::vector<std::string> out;
  static const std::regex single("'([^']*)'");
  for (std::sregex_iterator i(text.begin(), text.end(), single), end; i != end; ++i) out.push_back((*i)[1]);
  return out;
}

// CMake: the words of set(NAME ...), comments dropped.
std::vector<std::string> cmake_list(const std::string& text, const std::string& name) {
  const std::regex start("set\\(\\s*" + name + "\\s");
  std::smatch m;
  REQUIRE_MESSAGE(std::regex_search(text, m, start), "no set(" << name << " ...)");
  const std::size_t open = static_cast<std::size_t>(m.position(0)) + 3;
  auto list = words(balanced(text, open));
  REQUIRE_MESSAGE(!list.empty(), "set(" << name << " ...) is empty or unbalanced");
  list.erase(list.begin());  // the variable's name
  return list;
}

// meson: the strings inside `name = files(...)`, `name = [...]` or `name = {...}` (a dict's keys
// and values alike).
std::vector<std::string> meson_list(const std::string& text, const std::string& name) {
  const std::regex start("(^|\\n)\\s*" + name + "\\s*=\\s*(files\\()?");
  std::smatch m;
  REQUIRE_MESSAGE(std::regex_search(text, m, start), "no " << name << " = ... in meson");
  std::size_t open = static_cast<std::size_t>(m.position(0) + m.length(0));
  if (m[2].matched) --open;  // at files('s parenthesis
  while (open < text.size() && std::isspace(static_cast<unsigned char>(text[open]))) ++open;
  REQUIRE_MESSAGE(open < text.size(), name << " has no value");
  return quoted(balanced(text, open));
}

// What is in `a` only and in `b` only, as one line each; empty when they hold the same names.
std::string difference(const std::string& a_name, const std::vector<std::string>& a, const std::string& b_name,
                       const std::vector<std::string>& b) {
  const std::set<std::string> as(a.begin(), a.end()), bs(b.begin(), b.end());
  std::string out;
  auto only = [&](const std::string& where, const std::set<std::string>& here, const std::set<std::string>& there) {
    std::string names;
    for (const auto& n : here)
      if (!there.count(n)) names += " " + n;
    if (!names.empty()) out += "only in " + where + ":" + names + "\n";
  };
  only(a_name, as, bs);
  only(b_name, bs, as);
  auto duplicates = [&](const std::string& where, const std::vector<std::string>& list, const std::set<std::string>& set) {
    if (list.size() != set.size()) out += where + " names a file twice\n";
  };
  duplicates(a_name, a, as);
  duplicates(b_name, b, bs);
  return out;
}

const std::set<std::string> labels = {"unit", "e2e", "install"};

// tests/CMakeLists.txt: grace_test(NAME LABEL ...) and grace_script_test(NAME LABEL ...).
std::map<std::string, std::string> cmake_tests(std::string& problems) {
  const std::string text = without_comments(read("tests/CMakeLists.txt"));
  std::map<std::string, std::string> tests;
  static const std::regex call("(^|\\n)\\s*grace_(script_)?test\\(\\s*([A-Za-z0-9_]+)\\s+([A-Za-z0-9_]+)");
  for (std::sregex_iterator i(text.begin(), text.end(), call), end; i != end; ++i) {
    const std::string name = (*i)[3], label = (*i)[4];
    if (!labels.count(label)) problems += "tests/CMakeLists.txt: " + name + " has label \"" + label + "\"\n";
    if (!tests.emplace(name, label).second) problems += "tests/CMakeLists.txt registers " + name + " twice\n";
  }
  // A test added with add_test() itself would escape this comparison (and its label).
  static const std::regex direct("add_test\\(\\s*NAME\\s+([A-Za-z0-9_]+)");
  for (std::sregex_iterator i(text.begin(), text.end(), direct), end; i != end; ++i)
    problems += "tests/CMakeLists.txt adds " + std::string((*i)[1]) +
                " with add_test(); use grace_test or grace_script_test, which carry its label\n";
  return tests;
}

// tests/meson.build: the lists unit_tests, e2e_tests, install_tests (names, or dicts keyed by
// name) and test('NAME', ..., suite : 'LABEL') calls.
std::map<std::string, std::string> meson_tests(std::string& problems) {
  const std::string text = without_comments(read("tests/meson.build"));
  std::map<std::string, std::string> tests;
  auto add = [&](const std::string& name, const std::string& label) {
    if (!labels.count(label)) problems += "tests/meson.build: " + name + " has suite \"" + label + "\"\n";
    if (!tests.emplace(name, label).second) problems += "tests/meson.build registers " + name + " twice\n";
  };
  static const std::regex list_start("(^|\\n)\\s*(unit|e2e|install)_tests\\s*=\\s*([\\[{])");
  for (std::sregex_iterator i(text.begin(), text.end(), list_start), end; i != end; ++i) {
    const std::size_t open = static_cast<std::size_t>(i->position(3));
    for (const auto& s : quoted(balanced(text, open)))
      if (s.rfind("test_", 0) == 0 && s.find('.') == std::string::npos) add(s, (*i)[2]);
  }
  static const std::regex call("(^|[^A-Za-z0-9_.])test\\(\\s*'([A-Za-z0-9_]+)'");
  for (std::sregex_iterator i(text.begin(), text.end(), call), end; i != end; ++i) {
    const std::string name = (*i)[2];
    const std::string call_args = balanced(text, text.rfind('(', static_cast<std::size_t>(i->position(2))));
    static const std::regex suite_arg("suite\\s*:\\s*'([A-Za-z0-9_]+)'");
    std::smatch suite;
    if (std::regex_search(call_args, suite, suite_arg)) add(name, suite[1]);
    else problems += "tests/meson.build: test('" + name + "') has no suite\n";
  }
  return tests;
}

std::string describe(const std::map<std::string, std::string>& tests) {
  std::string out;
  for (const auto& [name, label] : tests) out += " " + name + "(" + label + ")";
  return out;
}

}  // namespace

TEST_CASE("CMake and meson build the same library sources") {
  const std::string cmake = without_comments(read("CMakeLists.txt"));
  const std::string meson = without_comments(read("meson.build"));
  const std::string core = difference("CMakeLists.txt GRACE_SOURCES", cmake_list(cmake, "GRACE_SOURCES"),
                                      "meson.build grace_sources", meson_list(meson, "grace_sources"));
  CHECK_MESSAGE(core.empty(), "the core library's sources differ:\n" << core);
  const std::string uv = difference("CMakeLists.txt GRACE_UV_SOURCES", cmake_list(cmake, "GRACE_UV_SOURCES"),
                                    "meson.build grace_uv_sources", meson_list(meson, "grace_uv_sources"));
  CHECK_MESSAGE(uv.empty(), "grace-uv's sources differ:\n" << uv);
}

TEST_CASE("CMake and meson register the same tests, each with one label: unit, e2e or install") {
  std::string problems;
  const auto cmake = cmake_tests(problems);
  const auto meson = meson_tests(problems);
  CHECK_MESSAGE(problems.empty(), problems);
  REQUIRE_MESSAGE(!cmake.empty(), "no grace_test(NAME LABEL) in tests/CMakeLists.txt");
  REQUIRE_MESSAGE(!meson.empty(), "no unit_tests, e2e_tests or test('NAME', suite : ...) in tests/meson.build");
  std::string differ;
  for (const auto& [name, label] : cmake) {
    auto m = meson.find(name);
    if (m == meson.end()) differ += name + " is registered in tests/CMakeLists.txt only: meson never runs it\n";
    else if (m->second != label)
      differ += name + " is " + label + " in tests/CMakeLists.txt but " + m->second + " in tests/meson.build\n";
  }
  for (const auto& [name, label] : meson)
    if (!cmake.count(name)) differ += name + " is registered in tests/meson.build only: CTest never runs it\n";
  CHECK_MESSAGE(differ.empty(), differ << "CMake:" << describe(cmake) << "\nmeson:" << describe(meson));

  // Every test program in tests/ is registered (its name is its file's).
  std::string unregistered;
  for (const auto& entry : std::filesystem::directory_iterator(source_dir + "/tests")) {
    const std::string file = entry.path().filename().string();
    if (file.rfind("test_", 0) != 0 || entry.path().extension() != ".cpp") continue;
    const std::string name = entry.path().stem().string();
    if (!cmake.count(name) && !meson.count(name)) unregistered += " tests/" + file;
  }
  CHECK_MESSAGE(unregistered.empty(), "registered in neither build, so never run:" << unregistered);
}

TEST_CASE("CMake and meson build the same fuzz targets") {
  const std::string cmake = without_comments(read("tests/fuzz/CMakeLists.txt"));
  const std::string meson = without_comments(read("tests/fuzz/meson.build"));
  std::smatch m;
  REQUIRE_MESSAGE(std::regex_search(cmake, m, std::regex("foreach\\(\\s*target\\s+([^)]*)\\)")),
                  "no foreach(target ...) in tests/fuzz/CMakeLists.txt");
  const auto cmake_targets = words(m[1]);
  REQUIRE_MESSAGE(std::regex_search(meson, m, std::regex("foreach\\s+target\\s*:\\s*\\[([^\\]]*)\\]")),
                  "no foreach target : [...] in tests/fuzz/meson.build");
  const auto meson_targets = quoted(m[1]);
  const std::string fuzz = difference("tests/fuzz/CMakeLists.txt", cmake_targets, "tests/fuzz/meson.build", meson_targets);
  CHECK_MESSAGE(fuzz.empty(), "the fuzz targets differ:\n" << fuzz);
}

// CMakeLists.txt's option(GRACE_NAME "..." DEFAULT) and meson_options.txt's option('name', ...):
// each CMake option has its meson option (GRACE_FOO_BAR: 'foo_bar', unless named below), with the
// same default where CMake's is a plain ON or OFF.
TEST_CASE("CMake and meson offer the same options, with the same defaults") {
  // CMake options whose meson counterpart has another name, or is meson's own (built-in) option or
  // none at all.
  const std::map<std::string, std::string> renamed = {
      {"GRACE_BUILD_TESTS", "tests"},
      {"GRACE_WERROR", ""},         // meson's werror
      {"GRACE_SANITIZE", ""},       // meson's b_sanitize
      {"GRACE_BUILD_SAMPLES", ""},  // meson builds the samples and tools whenever grace is the
      {"GRACE_BUILD_TOOLS", ""},    // top-level project, and never as a subproject
  };
  const std::string cmake = without_comments(read("CMakeLists.txt"));
  const std::string meson = without_comments(read("meson_options.txt"));
  std::map<std::string, std::string> cmake_options;  // name: default
  static const std::regex cmake_option("(^|\\n)\\s*option\\(\\s*([A-Z0-9_]+)\\s+\"[^\"]*\"\\s+([^)\\s]+)\\s*\\)");
  for (std::sregex_iterator i(cmake.begin(), cmake.end(), cmake_option), end; i != end; ++i)
    cmake_options[(*i)[2]] = (*i)[3];
  std::map<std::string, std::string> meson_options;  // name: value
  static const std::regex meson_option("(^|\\n)\\s*option\\(\\s*'([a-z0-9_]+)'");
  static const std::regex value_arg("value\\s*:\\s*([a-z]+)");
  for (std::sregex_iterator i(meson.begin(), meson.end(), meson_option), end; i != end; ++i) {
    const std::string args = balanced(meson, meson.rfind('(', static_cast<std::size_t>(i->position(2))));
    std::smatch value;
    meson_options[(*i)[2]] = std::regex_search(args, value, value_arg) ? std::string(value[1]) : "";
  }
  REQUIRE_MESSAGE(!cmake_options.empty(), "no option(GRACE_...) in CMakeLists.txt");
  REQUIRE_MESSAGE(!meson_options.empty(), "no option('...') in meson_options.txt");

  std::string differ;
  std::set<std::string> matched;
  for (const auto& [name, default_value] : cmake_options) {
    std::string meson_name;
    if (auto r = renamed.find(name); r != renamed.end()) {
      meson_name = r->second;
    } else {
      meson_name = name.substr(name.rfind("GRACE_", 0) == 0 ? 6 : 0);
      for (char& c : meson_name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    if (meson_name.empty()) continue;
    auto m = meson_options.find(meson_name);
    if (m == meson_options.end()) {
      differ += "CMake's " + name + " has no meson option '" + meson_name + "' in meson_options.txt\n";
      continue;
    }
    matched.insert(meson_name);
    const std::string expected = default_value == "ON" ? "true" : default_value == "OFF" ? "false" : "";
    if (!expected.empty() && m->second != expected)
      differ += name + " defaults to " + default_value + " but meson's '" + meson_name + "' to " + m->second + "\n";
  }
  for (const auto& [name, value] : meson_options)
    if (!matched.count(name)) differ += "meson's '" + name + "' has no CMake option\n";
  CHECK_MESSAGE(differ.empty(), differ);
}
