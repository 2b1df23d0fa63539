#include "printable.hpp"

namespace grace::detail {

std::string quoted(std::string_view value, std::size_t limit) {
  static const char hex[] = "0123456789abcdef";
  std::string out = "\"";
  const std::size_t shown = value.size() > limit ? limit : value.size();
  for (std::size_t i = 0; i < shown; ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
  if (shown < value.size()) out += "...(" + std::to_string(value.size()) + " bytes)";
  return out;
}

}  // namespace grace::detail
