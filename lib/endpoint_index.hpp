#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace grace::detail {

// Inherited sockets filed under their endpoint's hash, for the listen calls that claim them.
// Thousands are filed at start-up, so it is one flat array (open addressing, linear probing)
// rather than a node per socket; entries are never removed (a claimed slot is skipped by its
// owner), so the entries of one hash are visited in the order they were filed.
class endpoint_index {
 public:
  void reserve(std::size_t count);
  void add(std::uint64_t hash, std::uint32_t slot);
  bool empty() const noexcept { return filings_.empty(); }
  void clear();

  // Calls visit(slot) for every slot filed under `hash`, first filed first, until it returns false.
  template <typename Visit>
  void for_each(std::uint64_t hash, Visit visit) const {
    if (filings_.empty()) return;
    const auto tag = tag_of(hash);
    for (std::size_t at = hash & mask_;; at = (at + 1) & mask_) {
      const entry& e = entries_[at];
      if (e.slot_plus_one == 0) return;
      if (e.tag == tag && !visit(e.slot_plus_one - 1)) return;
    }
  }

 private:
  struct entry {
    std::uint32_t tag = 0;            // the hash's upper half: most misses end here
    std::uint32_t slot_plus_one = 0;  // 0: empty
  };
  static std::uint32_t tag_of(std::uint64_t hash) noexcept { return static_cast<std::uint32_t>(hash >> 32); }
  void place(std::uint64_t hash, entry e);
  void grow(std::size_t capacity);

  std::vector<entry> entries_;
  struct filing {
    std::uint64_t hash;
    std::uint32_t slot;
  };
  std::vector<filing> filings_;  // in the order filed: growing re-files them so
  std::size_t mask_ = 0;
};

}  // namespace grace::detail
