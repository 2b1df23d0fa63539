#pragma once
// Outside values quoted in messages and logs. A value from the environment or the wire may hold
// newlines (which would forge log lines), control bytes or megabytes: it is shown escaped and
// cut short, never as it is.
#include <string>
#include <string_view>

namespace grace::detail {

// "\"value\"", with bytes outside printable ASCII as \xNN and at most `limit` bytes shown
// ("...(N bytes)" after a cut).
std::string quoted(std::string_view value, std::size_t limit = 120);

}  // namespace grace::detail
