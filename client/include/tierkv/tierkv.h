/* tierkv.h: the C ABI of libtierkv, for engines not written in C++.
 *
 * Every function returns a tierkv_status (0 = OK). On failure, tierkv_last_error() returns the
 * message for the calling thread ("lookup: namespace 0x1234 is not registered"), valid until the
 * thread's next call. Handles are opaque; a tierkv_client is thread-safe, leases are not.
 * Data is read and written in place in shared memory: tierkv_put_slot() gives where to write a
 * chunk, tierkv_load_chunk() where to read one. No C++ exception crosses this boundary. */
#ifndef TIERKV_TIERKV_H_
#define TIERKV_TIERKV_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int tierkv_status; /* values of tierkv::StatusCode: 0 OK, 1 invalid argument, ... */
typedef struct tierkv_client tierkv_client;
typedef struct tierkv_put_lease tierkv_put_lease;
typedef struct tierkv_load_lease tierkv_load_lease;

typedef struct tierkv_layout {
  uint32_t num_layers;
  uint32_t num_kv_heads;
  uint32_t head_dim;
  uint32_t dtype;        /* 1 fp16, 2 bf16, 3 fp32, 4 fp8_e4m3, 5 int8 */
  uint32_t chunk_tokens; /* 0 = daemon default */
} tierkv_layout;

typedef struct tierkv_namespace {
  uint64_t id;
  tierkv_layout layout; /* resolved */
  uint64_t chunk_bytes;
} tierkv_namespace;

const char* tierkv_last_error(void);

/* socket_path NULL = $TIERKV_SOCKET or /run/tierkv/tierkvd.sock */
tierkv_status tierkv_connect(const char* socket_path, tierkv_client** out);
void tierkv_close(tierkv_client* client);

tierkv_status tierkv_register_layout(tierkv_client* client, const tierkv_layout* layout,
                                     const char* tenant, const char* salt /* may be NULL */,
                                     tierkv_namespace* out);

/* Number of leading cached chunks of the prompt; tiers_out (optional, capacity tiers_cap) gets
 * each cached chunk's tier (2 = host). */
tierkv_status tierkv_lookup(tierkv_client* client, const tierkv_namespace* ns,
                            const uint32_t* tokens, size_t n_tokens, size_t* cached_chunks,
                            uint8_t* tiers_out, size_t tiers_cap);

/* Store: begin, write every chunk whose slot is non-NULL, then commit (or abort). */
tierkv_status tierkv_put_begin(tierkv_client* client, const tierkv_namespace* ns,
                               const uint32_t* tokens, size_t n_tokens, tierkv_put_lease** out);
size_t tierkv_put_chunks(const tierkv_put_lease* put);
/* Where to write chunk i (ns->chunk_bytes bytes), or NULL if it needs no write. */
void* tierkv_put_slot(tierkv_put_lease* put, size_t i);
tierkv_status tierkv_put_commit(tierkv_put_lease* put, size_t* committed); /* frees put */
void tierkv_put_abort(tierkv_put_lease* put);                              /* frees put */

/* One call: copy kv (chunk after chunk) into the cache. written may be NULL. */
tierkv_status tierkv_put(tierkv_client* client, const tierkv_namespace* ns, const uint32_t* tokens,
                         size_t n_tokens, const void* kv, size_t kv_bytes, size_t* written);

/* Load: lease the leading cached chunks (at most max_chunks; 0 = all), read in place, release. */
tierkv_status tierkv_load_begin(tierkv_client* client, const tierkv_namespace* ns,
                                const uint32_t* tokens, size_t n_tokens, size_t max_chunks,
                                tierkv_load_lease** out);
size_t tierkv_load_chunks(const tierkv_load_lease* load);
const void* tierkv_load_chunk(const tierkv_load_lease* load, size_t i, size_t* bytes);
void tierkv_load_release(tierkv_load_lease* load); /* frees load */

/* Drops the prompt's chunks (tokens != NULL) or the whole namespace (tokens == NULL) from every
 * tier. removed may be NULL. */
tierkv_status tierkv_delete(tierkv_client* client, const tierkv_namespace* ns,
                            const uint32_t* tokens, size_t n_tokens, uint64_t* removed);

/* --- Co-scheduled prefill ---------------------------------------------------------------------
 * The engine computes the cached prefix from the front while tierkvd loads it from the back. The
 * engine's loop, with no thread of its own:
 *
 *   tierkv_prefill_begin(client, &ns, tokens, n, 1, &p, &plan);
 *   for (;;) {
 *     size_t ready[64], k = tierkv_prefill_take_ready(p, ready, 64);
 *     for (size_t j = 0; j < k; ++j) {      scatter chunk ready[j] from tierkv_prefill_chunk(),
 *                                           then tierkv_prefill_release_chunk(p, ready[j]);   }
 *     size_t i;
 *     int what = tierkv_prefill_next(p, &i);
 *     if (what == TIERKV_PREFILL_DONE) break;
 *     if (what == TIERKV_PREFILL_COMPUTE) { compute chunk i; tierkv_prefill_computed(p, i); }
 *     else tierkv_prefill_wait(p, 5000);
 *   }
 *   tierkv_prefill_end(p, NULL);            then compute the rest of the prompt
 *
 * No chunk is ever both computed and loaded when the loop follows tierkv_prefill_next(). */
typedef struct tierkv_prefill tierkv_prefill;

typedef struct tierkv_prefill_plan {
  size_t total_chunks;    /* full chunks in the prompt */
  size_t cached_chunks;   /* the prefix the session covers */
  size_t meeting_point;   /* planned: compute [0, m), load [m, cached) */
  size_t load_chunks;     /* reads planned from slower tiers */
  size_t resident_chunks; /* handed over from host RAM at once */
  int loading_helps;      /* 0: nothing will be read from a slower tier */
  double compute_only_ms; /* predicted time to first token: computing everything, */
  double load_only_ms;    /* loading everything, */
  double bidir_ms;        /* and both at once, as planned */
} tierkv_prefill_plan;

typedef struct tierkv_prefill_summary {
  size_t handed_over, loaded, computed, failed;
  size_t planned_meeting_point, actual_meeting_point;
  int met, cancelled;
  uint64_t elapsed_us, met_us;
} tierkv_prefill_summary;

enum { TIERKV_PREFILL_COMPUTE = 0, TIERKV_PREFILL_WAIT = 1, TIERKV_PREFILL_DONE = 2 };

/* compute_lookahead: chunks the engine may be granted at once (0 = 1). plan may be NULL. */
tierkv_status tierkv_prefill_begin(tierkv_client* client, const tierkv_namespace* ns,
                                   const uint32_t* tokens, size_t n_tokens,
                                   uint32_t compute_lookahead, tierkv_prefill** out,
                                   tierkv_prefill_plan* plan);
/* The engine's time per chunk: c tokens after a prefix of L take a*c + b*c*(L + c/2) ms. Both
 * negative: forget any profile and learn it from this engine's reports. */
tierkv_status tierkv_prefill_set_profile(tierkv_client* client, const tierkv_namespace* ns,
                                         double a_ms_per_token, double b_ms_per_token2);
/* TIERKV_PREFILL_COMPUTE (compute *chunk), _WAIT (for loads), or _DONE (prefix covered). */
int tierkv_prefill_next(const tierkv_prefill* p, size_t* chunk);
tierkv_status tierkv_prefill_computed(tierkv_prefill* p, size_t chunk);
tierkv_status tierkv_prefill_poll(tierkv_prefill* p);
tierkv_status tierkv_prefill_wait(tierkv_prefill* p, uint32_t timeout_us);
/* Up to cap chunks delivered since the last call (the rest stay for the next call). */
size_t tierkv_prefill_take_ready(tierkv_prefill* p, size_t* chunks, size_t cap);
/* A delivered chunk's bytes, read in place; NULL if not delivered (or released). */
const void* tierkv_prefill_chunk(const tierkv_prefill* p, size_t chunk, size_t* bytes);
void tierkv_prefill_release_chunk(tierkv_prefill* p, size_t chunk);
/* End (frees p); summary may be NULL. Cancel gives up early (frees p). */
tierkv_status tierkv_prefill_end(tierkv_prefill* p, tierkv_prefill_summary* summary);
void tierkv_prefill_cancel(tierkv_prefill* p);

#ifdef __cplusplus
}
#endif

#endif /* TIERKV_TIERKV_H_ */
