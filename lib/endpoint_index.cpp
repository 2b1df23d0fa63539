#include "endpoint_index.hpp"

namespace grace::detail {

void endpoint_index::reserve(std::size_t count) {
  std::size_t capacity = 16;
  while (capacity < count * 2) capacity *= 2;  // at most half full: short probes
  if (capacity > entries_.size()) grow(capacity);
  filings_.reserve(count);
}

void endpoint_index::add(std::uint64_t hash, std::uint32_t slot) {
  if ((filings_.size() + 1) * 2 > entries_.size()) grow(entries_.empty() ? 16 : entries_.size() * 2);
  place(hash, entry{tag_of(hash), slot + 1});
  filings_.push_back(filing{hash, slot});
}

void endpoint_index::clear() {
  entries_.clear();
  filings_.clear();
  mask_ = 0;
}

void endpoint_index::place(std::uint64_t hash, entry e) {
  std::size_t at = hash & mask_;
  while (entries_[at].slot_plus_one != 0) at = (at + 1) & mask_;
  entries_[at] = e;
}

void endpoint_index::grow(std::size_t capacity) {
  entries_.assign(capacity, entry{});
  mask_ = capacity - 1;
  for (const filing& f : filings_) place(f.hash, entry{tag_of(f.hash), f.slot + 1});
}

}  // namespace grace::detail
