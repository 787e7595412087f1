// The C ABI over tierkv::Client. No exception crosses it; errors become a status code plus a
// thread-local message.
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "tierkv/client.h"
#include "tierkv/prefill.h"
#include "tierkv/tierkv.h"

struct tierkv_client {
  std::shared_ptr<tierkv::Client> client;
};
struct tierkv_put_lease {
  tierkv::PutLease lease;
};
struct tierkv_load_lease {
  tierkv::LoadLease lease;
};
struct tierkv_prefill {
  std::unique_ptr<tierkv::PrefillSession> session;
  std::vector<uint32_t> backlog;  // delivered chunks not yet taken through the C API
  size_t backlog_at = 0;
};

namespace {

thread_local std::string last_error;

tierkv_status fail(const tierkv::Status& s) {
  last_error = s.message();
  return static_cast<tierkv_status>(s.code());
}

template <typename F>
tierkv_status guarded(F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return fail(tierkv::Status::ResourceExhausted("out of memory"));
  } catch (const std::exception& e) {
    return fail(tierkv::Status::Internal(e.what()));
  }
}

tierkv::Namespace to_namespace(const tierkv_namespace* ns) {
  tierkv::Namespace out;
  out.id = ns->id;
  out.layout.num_layers = ns->layout.num_layers;
  out.layout.num_kv_heads = ns->layout.num_kv_heads;
  out.layout.head_dim = ns->layout.head_dim;
  out.layout.dtype = static_cast<tierkv::DType>(ns->layout.dtype);
  out.layout.chunk_tokens = ns->layout.chunk_tokens;
  return out;
}

tierkv_status null_arg(const char* what) {
  return fail(tierkv::Status::InvalidArgument(std::string(what) + " must not be NULL"));
}

}  // namespace

extern "C" {

const char* tierkv_last_error(void) { return last_error.c_str(); }

tierkv_status tierkv_connect(const char* socket_path, tierkv_client** out) {
  if (out == nullptr) return null_arg("out");
  return guarded([&] {
    tierkv::ClientOptions options;
    if (socket_path != nullptr) options.socket_path = socket_path;
    options.client_name = "libtierkv (C)";
    auto c = tierkv::Client::connect(options);
    if (!c.ok()) return fail(c.status());
    *out = new tierkv_client{std::move(c).value()};
    return 0;
  });
}

void tierkv_close(tierkv_client* client) { delete client; }

tierkv_status tierkv_register_layout(tierkv_client* client, const tierkv_layout* layout,
                                     const char* tenant, const char* salt, tierkv_namespace* out) {
  if (client == nullptr) return null_arg("client");
  if (layout == nullptr) return null_arg("layout");
  if (tenant == nullptr) return null_arg("tenant");
  if (out == nullptr) return null_arg("out");
  return guarded([&] {
    tierkv::Layout l;
    l.num_layers = layout->num_layers;
    l.num_kv_heads = layout->num_kv_heads;
    l.head_dim = layout->head_dim;
    l.dtype = static_cast<tierkv::DType>(layout->dtype);
    l.chunk_tokens = layout->chunk_tokens;
    auto ns = client->client->register_layout(l, tenant, salt != nullptr ? salt : "");
    if (!ns.ok()) return fail(ns.status());
    out->id = ns->id;
    out->layout = tierkv_layout{ns->layout.num_layers, ns->layout.num_kv_heads,
                                ns->layout.head_dim, static_cast<uint32_t>(ns->layout.dtype),
                                ns->layout.chunk_tokens};
    out->chunk_bytes = ns->chunk_bytes();
    return 0;
  });
}

tierkv_status tierkv_lookup(tierkv_client* client, const tierkv_namespace* ns,
                            const uint32_t* tokens, size_t n_tokens, size_t* cached_chunks,
                            uint8_t* tiers_out, size_t tiers_cap) {
  if (client == nullptr) return null_arg("client");
  if (ns == nullptr) return null_arg("ns");
  if (tokens == nullptr && n_tokens > 0) return null_arg("tokens");
  if (cached_chunks == nullptr) return null_arg("cached_chunks");
  return guarded([&] {
    auto r = client->client->lookup(to_namespace(ns), {tokens, n_tokens});
    if (!r.ok()) return fail(r.status());
    *cached_chunks = r->cached_chunks;
    if (tiers_out != nullptr) {
      for (size_t i = 0; i < r->tiers.size() && i < tiers_cap; ++i) {
        tiers_out[i] = static_cast<uint8_t>(r->tiers[i]);
      }
    }
    return 0;
  });
}

tierkv_status tierkv_put_begin(tierkv_client* client, const tierkv_namespace* ns,
                               const uint32_t* tokens, size_t n_tokens, tierkv_put_lease** out) {
  if (client == nullptr) return null_arg("client");
  if (ns == nullptr) return null_arg("ns");
  if (tokens == nullptr && n_tokens > 0) return null_arg("tokens");
  if (out == nullptr) return null_arg("out");
  return guarded([&] {
    auto lease = client->client->begin_put(to_namespace(ns), {tokens, n_tokens});
    if (!lease.ok()) return fail(lease.status());
    *out = new tierkv_put_lease{std::move(lease).value()};
    return 0;
  });
}

size_t tierkv_put_chunks(const tierkv_put_lease* put) { return put == nullptr ? 0 : put->lease.chunks(); }

void* tierkv_put_slot(tierkv_put_lease* put, size_t i) {
  if (put == nullptr || i >= put->lease.chunks() || !put->lease.needs_write(i)) return nullptr;
  return put->lease.slot(i).data();
}

tierkv_status tierkv_put_commit(tierkv_put_lease* put, size_t* committed) {
  if (put == nullptr) return null_arg("put");
  return guarded([&] {
    auto n = put->lease.commit();
    delete put;
    if (!n.ok()) return fail(n.status());
    if (committed != nullptr) *committed = *n;
    return 0;
  });
}

void tierkv_put_abort(tierkv_put_lease* put) {
  if (put == nullptr) return;
  (void)put->lease.abort();
  delete put;
}

tierkv_status tierkv_put(tierkv_client* client, const tierkv_namespace* ns, const uint32_t* tokens,
                         size_t n_tokens, const void* kv, size_t kv_bytes, size_t* written) {
  if (client == nullptr) return null_arg("client");
  if (ns == nullptr) return null_arg("ns");
  if (tokens == nullptr && n_tokens > 0) return null_arg("tokens");
  if (kv == nullptr && kv_bytes > 0) return null_arg("kv");
  return guarded([&] {
    auto r = client->client->put(to_namespace(ns), {tokens, n_tokens},
                                 {static_cast<const std::byte*>(kv), kv_bytes});
    if (!r.ok()) return fail(r.status());
    if (written != nullptr) *written = r->written;
    return 0;
  });
}

tierkv_status tierkv_load_begin(tierkv_client* client, const tierkv_namespace* ns,
                                const uint32_t* tokens, size_t n_tokens, size_t max_chunks,
                                tierkv_load_lease** out) {
  if (client == nullptr) return null_arg("client");
  if (ns == nullptr) return null_arg("ns");
  if (tokens == nullptr && n_tokens > 0) return null_arg("tokens");
  if (out == nullptr) return null_arg("out");
  return guarded([&] {
    auto lease = client->client->load(to_namespace(ns), {tokens, n_tokens},
                                      max_chunks == 0 ? SIZE_MAX : max_chunks);
    if (!lease.ok()) return fail(lease.status());
    *out = new tierkv_load_lease{std::move(lease).value()};
    return 0;
  });
}

size_t tierkv_load_chunks(const tierkv_load_lease* load) {
  return load == nullptr ? 0 : load->lease.chunks();
}

const void* tierkv_load_chunk(const tierkv_load_lease* load, size_t i, size_t* bytes) {
  if (load == nullptr || i >= load->lease.chunks()) return nullptr;
  const auto c = load->lease.chunk(i);
  if (bytes != nullptr) *bytes = c.size();
  return c.data();
}

void tierkv_load_release(tierkv_load_lease* load) {
  if (load == nullptr) return;
  (void)load->lease.release();
  delete load;
}

tierkv_status tierkv_delete(tierkv_client* client, const tierkv_namespace* ns,
                            const uint32_t* tokens, size_t n_tokens, uint64_t* removed) {
  if (client == nullptr) return null_arg("client");
  if (ns == nullptr) return null_arg("ns");
  return guarded([&] {
    tierkv::Result<uint64_t> r = uint64_t{0};
    if (tokens == nullptr) {
      r = client->client->remove_namespace(ns->id);
    } else {
      const auto keys = tierkv::Client::keys(to_namespace(ns), {tokens, n_tokens});
      r = client->client->remove(ns->id, keys);
    }
    if (!r.ok()) return fail(r.status());
    if (removed != nullptr) *removed = *r;
    return 0;
  });
}

tierkv_status tierkv_prefill_begin(tierkv_client* client, const tierkv_namespace* ns,
                                   const uint32_t* tokens, size_t n_tokens,
                                   uint32_t compute_lookahead, tierkv_prefill** out,
                                   tierkv_prefill_plan* plan) {
  if (client == nullptr) return null_arg("client");
  if (ns == nullptr) return null_arg("ns");
  if (tokens == nullptr && n_tokens > 0) return null_arg("tokens");
  if (out == nullptr) return null_arg("out");
  return guarded([&] {
    tierkv::PrefillOptions o;
    o.compute_lookahead = compute_lookahead == 0 ? 1 : compute_lookahead;
    auto s = tierkv::PrefillSession::begin(client->client, to_namespace(ns), {tokens, n_tokens}, o);
    if (!s.ok()) return fail(s.status());
    if (plan != nullptr) {
      const auto& p = (*s)->plan();
      *plan = tierkv_prefill_plan{(*s)->total_chunks(), (*s)->cached_chunks(), p.meeting_point,
                                  p.load_chunks,        p.resident_chunks,     p.loading_helps,
                                  p.compute_only_ms,    p.load_only_ms,        p.bidir_ms};
    }
    *out = new tierkv_prefill{std::move(s).value(), {}, 0};
    return 0;
  });
}

tierkv_status tierkv_prefill_set_profile(tierkv_client* client, const tierkv_namespace* ns,
                                         double a_ms_per_token, double b_ms_per_token2) {
  if (client == nullptr) return null_arg("client");
  if (ns == nullptr) return null_arg("ns");
  return guarded([&] {
    const tierkv::Status s =
        a_ms_per_token < 0 && b_ms_per_token2 < 0
            ? tierkv::learn_compute_profile(*client->client, ns->id)
            : tierkv::set_compute_profile(*client->client, ns->id, a_ms_per_token, b_ms_per_token2);
    return s.ok() ? 0 : fail(s);
  });
}

int tierkv_prefill_next(const tierkv_prefill* p, size_t* chunk) {
  if (p == nullptr) return TIERKV_PREFILL_DONE;
  const auto next = p->session->next();
  if (chunk != nullptr) *chunk = next.chunk;
  switch (next.action) {
    case tierkv::PrefillSession::Action::kCompute: return TIERKV_PREFILL_COMPUTE;
    case tierkv::PrefillSession::Action::kWait: return TIERKV_PREFILL_WAIT;
    case tierkv::PrefillSession::Action::kDone: break;
  }
  return TIERKV_PREFILL_DONE;
}

tierkv_status tierkv_prefill_computed(tierkv_prefill* p, size_t chunk) {
  if (p == nullptr) return null_arg("p");
  return guarded([&] {
    if (chunk > UINT32_MAX) {
      return fail(tierkv::Status::InvalidArgument("chunk index " + std::to_string(chunk) +
                                                  " is out of range"));
    }
    const tierkv::Status s = p->session->computed(static_cast<uint32_t>(chunk));
    return s.ok() ? 0 : fail(s);
  });
}

tierkv_status tierkv_prefill_poll(tierkv_prefill* p) { return tierkv_prefill_wait(p, 0); }

tierkv_status tierkv_prefill_wait(tierkv_prefill* p, uint32_t timeout_us) {
  if (p == nullptr) return null_arg("p");
  return guarded([&] {
    const tierkv::Status s = p->session->wait_ready(std::chrono::microseconds(timeout_us));
    return s.ok() ? 0 : fail(s);
  });
}

size_t tierkv_prefill_take_ready(tierkv_prefill* p, size_t* chunks, size_t cap) {
  if (p == nullptr || chunks == nullptr) return 0;
  if (p->backlog_at == p->backlog.size()) {
    p->backlog.clear();
    p->backlog_at = 0;
  }
  for (uint32_t c : p->session->take_ready()) p->backlog.push_back(c);
  size_t k = 0;
  while (k < cap && p->backlog_at < p->backlog.size()) chunks[k++] = p->backlog[p->backlog_at++];
  return k;
}

const void* tierkv_prefill_chunk(const tierkv_prefill* p, size_t chunk, size_t* bytes) {
  if (p == nullptr || chunk > UINT32_MAX) return nullptr;
  const auto c = p->session->chunk(static_cast<uint32_t>(chunk));
  if (c.empty()) return nullptr;
  if (bytes != nullptr) *bytes = c.size();
  return c.data();
}

void tierkv_prefill_release_chunk(tierkv_prefill* p, size_t chunk) {
  if (p == nullptr || chunk > UINT32_MAX) return;
  p->session->release(static_cast<uint32_t>(chunk));
}

tierkv_status tierkv_prefill_end(tierkv_prefill* p, tierkv_prefill_summary* summary) {
  if (p == nullptr) return null_arg("p");
  return guarded([&] {
    auto r = p->session->end();
    delete p;
    if (!r.ok()) return fail(r.status());
    if (summary != nullptr) {
      *summary = tierkv_prefill_summary{r->handed_over,           r->loaded,
                                        r->computed,              r->failed,
                                        r->planned_meeting_point, r->actual_meeting_point,
                                        r->met,                   r->cancelled,
                                        r->elapsed_us,            r->met_us};
    }
    return 0;
  });
}

void tierkv_prefill_cancel(tierkv_prefill* p) {
  if (p == nullptr) return;
  (void)p->session->cancel();
  delete p;
}

}  // extern "C"
