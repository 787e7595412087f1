#include "tierkv/scheduler/leaf_first_lru.h"

namespace tierkv::scheduler {

bool LeafFirstLru::link_parent(uint32_t child, uint32_t parent) {
  Node& c = nodes_[child];
  c.parent = parent;
  if (parent == kNone) return false;
  c.parent_gen = nodes_[parent].gen;
  ++nodes_[parent].children;
  unlist(parent);
  return true;
}

uint32_t LeafFirstLru::unlink_parent(uint32_t child) {
  Node& c = nodes_[child];
  const uint32_t p = c.parent;
  c.parent = kNone;
  // The parent may have been freed and its slot reused since: the generation tells.
  if (p == kNone || nodes_[p].gen != c.parent_gen || nodes_[p].children == 0) return kNone;
  return --nodes_[p].children == 0 ? p : kNone;
}

void LeafFirstLru::touch(uint32_t s) {
  Node& n = nodes_[s];
  n.last_access = ++clock_;
  if (n.listed) {
    const int cls = n.cls;
    unlist(s);
    list(s, cls);
  }
}

void LeafFirstLru::set_evictable(uint32_t s, int cls, bool evictable) {
  if (evictable && !nodes_[s].listed) list(s, cls);
  if (!evictable && nodes_[s].listed) unlist(s);
}

uint32_t LeafFirstLru::coldest_any() const {
  uint32_t victim = kNone;
  uint64_t coldest = UINT64_MAX;
  for (const List& l : lists_) {
    if (l.tail != kNone && nodes_[l.tail].last_access < coldest) {
      coldest = nodes_[l.tail].last_access;
      victim = l.tail;
    }
  }
  return victim;
}

void LeafFirstLru::on_free(uint32_t s) {
  unlist(s);
  Node& n = nodes_[s];
  n.parent = kNone;
  n.children = 0;
  ++n.gen;
}

void LeafFirstLru::list(uint32_t s, int cls) {
  Node& n = nodes_[s];
  List& l = lists_[cls];
  // Keep the list ordered by last access. Usually s is the most recent (a touch or a commit);
  // a parent that just became a leaf is older and lands near the cold end, where its evicted
  // child was.
  uint32_t after = kNone;  // insert on the cold side of this node; kNone = at the head
  if (l.head != kNone && nodes_[l.head].last_access > n.last_access) {
    after = l.tail;
    while (nodes_[after].last_access < n.last_access) after = nodes_[after].prev;
  }
  n.prev = after;
  n.next = after == kNone ? l.head : nodes_[after].next;
  if (n.next != kNone) nodes_[n.next].prev = s;
  else l.tail = s;
  if (after != kNone) nodes_[after].next = s;
  else l.head = s;
  n.listed = true;
  n.cls = cls;
}

void LeafFirstLru::unlist(uint32_t s) {
  Node& n = nodes_[s];
  if (!n.listed) return;
  List& l = lists_[n.cls];
  if (n.prev != kNone) nodes_[n.prev].next = n.next;
  else l.head = n.next;
  if (n.next != kNone) nodes_[n.next].prev = n.prev;
  else l.tail = n.prev;
  n.prev = n.next = kNone;
  n.listed = false;
}

}  // namespace tierkv::scheduler
