// LeafFirstLru: the eviction order of one tier — least recently used among the leaves of the
// prefix trees the tier holds.
//
// Each slot of the tier may name a parent slot (the chunk its key extends, when the tier holds
// it). A chunk with children in the tier is not a leaf. The owner decides which slots are
// evictable (ready, unleased, not a parent: `children(s) == 0`) and lists exactly those with
// set_evictable(); coldest(cls) is then the next victim of a size class. Dropping a leaf can make
// its parent a leaf, so a cold prefix is eaten from its end, and the shared head of many prompts
// stays as long as any of them does.
//
// Recency is a logical clock; lists are per size class, ordered by last access (head = most
// recent). Parent links carry the parent's generation, bumped by on_free(), so a link to a slot
// that was freed and reused since is ignored. Everything is O(1) except set_evictable of a slot
// older than the list's head (a parent becoming a leaf), which walks from the cold end.
// Thread safety: none; one owner thread.
#pragma once

#include <cstdint>
#include <vector>

namespace tierkv::scheduler {

class LeafFirstLru {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;

  LeafFirstLru(uint32_t slots, int classes) : nodes_(slots), lists_(classes) {}

  // Links `child` under `parent` (kNone for no parent); the parent is no longer evictable.
  // Returns false (and links nothing) when parent is kNone.
  bool link_parent(uint32_t child, uint32_t parent);
  // Unlinks `child` from its parent; returns the parent if it lost its last child (the owner
  // then re-checks whether it became evictable), else kNone.
  uint32_t unlink_parent(uint32_t child);
  uint32_t parent(uint32_t s) const { return nodes_[s].parent; }
  uint32_t children(uint32_t s) const { return nodes_[s].children; }
  // Held as a non-leaf for a while (e.g. while room is found for its child).
  void hold(uint32_t s) { ++nodes_[s].children; unlist(s); }
  uint32_t release_hold(uint32_t s) { return --nodes_[s].children; }

  void touch(uint32_t s);
  uint64_t last_access(uint32_t s) const { return nodes_[s].last_access; }
  void set_last_access(uint32_t s, uint64_t t) { nodes_[s].last_access = t; }
  uint64_t clock() const { return clock_; }

  void set_evictable(uint32_t s, int cls, bool evictable);
  bool listed(uint32_t s) const { return nodes_[s].listed; }
  uint32_t coldest(int cls) const { return lists_[cls].tail; }
  // The next warmer listed slot of the same class, or kNone.
  uint32_t warmer(uint32_t s) const { return nodes_[s].prev; }
  // The coldest listed slot of any class, or kNone.
  uint32_t coldest_any() const;

  // The slot is free: unlisted, unlinked, children cleared, generation bumped.
  void on_free(uint32_t s);

 private:
  struct Node {
    uint64_t last_access = 0;
    uint32_t prev = kNone, next = kNone;  // in its class's list
    uint32_t parent = kNone;
    uint32_t parent_gen = 0;
    uint32_t gen = 0;
    uint32_t children = 0;
    int32_t cls = -1;  // list it is in
    bool listed = false;
  };
  struct List {
    uint32_t head = kNone, tail = kNone;
  };
  void list(uint32_t s, int cls);
  void unlist(uint32_t s);

  std::vector<Node> nodes_;
  std::vector<List> lists_;
  uint64_t clock_ = 0;
};

}  // namespace tierkv::scheduler
