#pragma once
// How grace decides that an inherited socket is the one a listen call asks for.
#include <string>
#include <string_view>

#include "grace/address.hpp"

namespace grace::detail {

// What two listening sockets must share to be the same listener: socket type, family class
// (inet or unix) and address, with every wildcard (0.0.0.0, ::) as ":PORT" and a v4-mapped
// address as its IPv4 form.
std::string match_key(int type, const socket_address& address);

// Lexical normalisation of `path` made absolute against `base_dir`: no ".", "..", or repeated
// slashes.
std::string normalize_absolute_path(std::string_view base_dir, std::string_view path);

}  // namespace grace::detail
