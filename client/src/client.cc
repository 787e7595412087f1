#include "tierkv/client.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "tierkv/stream_copy.h"
#include "tierkv/version.h"

namespace tierkv {

namespace {

Status write_all(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::Unavailable(std::string("send to tierkvd: ") + std::strerror(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

// Reads exactly n bytes; a received file descriptor (only the hello reply carries one) is stored
// in *fd_out.
Status read_all(int fd, uint8_t* p, size_t n, int* fd_out) {
  while (n > 0) {
    iovec iov{p, n};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t r = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::Unavailable(std::string("receive from tierkvd: ") + std::strerror(errno));
    }
    if (r == 0) return Status::Unavailable("tierkvd closed the connection");
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        int received = -1;
        std::memcpy(&received, CMSG_DATA(c), sizeof(int));
        if (fd_out != nullptr && *fd_out < 0) *fd_out = received;
        else ::close(received);
      }
    }
    p += r;
    n -= static_cast<size_t>(r);
  }
  return Status::Ok();
}

}  // namespace

// An empty request payload (stats, list_namespaces).
struct EmptyRequest {};
namespace proto {
inline void encode(wire::ByteWriter&, const EmptyRequest&) {}
}  // namespace proto

// The connection to tierkvd, shared by every thread of the Client. Requests are pipelined: a
// thread sends its frame and waits for its reply without holding the socket, so several threads'
// requests are in flight at once and the daemon answers them back to back, instead of every
// thread waiting out the others' whole round trips. The daemon answers each connection's requests
// one at a time, in the order they arrived, so replies come back in send order and are matched to
// requests through a FIFO (their request ids are checked against it).
//
// No thread is dedicated to reading: a waiting thread takes the reader's turn when nobody has it,
// reads replies into their owners' buffers and wakes them, until its own reply is in; then it
// hands the turn to the oldest request still waiting. A single thread thus reads its own reply
// with no hand-off at all. A Pending lives on its caller's stack: the reader fills in its reply
// while the owner waits and marks it done under `mu`, after which the reader lets go of it and
// the owner may return.
//
// Locks: send_mu (sending, request ids) is taken before mu (the FIFO, the reader's turn, the
// broken state); reading the socket holds neither, so senders and waiters never wait on it.
struct Client::Connection {
  struct Pending {
    uint32_t id = 0;
    proto::Op op = proto::Op::kHello;
    std::vector<uint8_t>* reply = nullptr;  // the owner's buffer for the reply payload
    int* fd_out = nullptr;                  // hello only: where the host pool's fd goes
    Status status;                          // the reply's status, or why no reply came
    bool done = false;
    Pending* next = nullptr;
    std::condition_variable wake;  // the reply is in, or the reader's turn is free
  };

  int fd = -1;
  std::mutex send_mu;  // one frame on the socket at a time; ids are given in send order
  uint32_t next_request = 1;
  std::mutex mu;
  Pending* head = nullptr;  // sent, reply not read yet; oldest first
  Pending* tail = nullptr;
  bool reading = false;  // some thread has the reader's turn
  Status broken;         // once set, the stream is unusable and every call fails with it

  ~Connection() {
    if (fd >= 0) ::close(fd);
  }

  // Sends the frame in `out` (its request id is filled in here) and waits for its reply, whose
  // payload lands in `in`; returns the reply's status.
  Status roundtrip(proto::Op op, std::vector<uint8_t>& out, std::vector<uint8_t>& in, int* fd_out) {
    Pending me;
    me.op = op;
    me.reply = &in;
    me.fd_out = fd_out;
    Status sent;
    {
      std::lock_guard send_lock(send_mu);
      {
        std::lock_guard lock(mu);
        if (!broken.ok()) return broken;
        me.id = next_request++;
        (tail != nullptr ? tail->next : head) = &me;
        tail = &me;
      }
      std::memcpy(out.data() + offsetof(proto::FrameHeader, request_id), &me.id, sizeof(me.id));
      sent = write_all(fd, out.data(), out.size());
      if (!sent.ok()) {
        // Part of a frame may have gone out: nothing more can be sent on this stream. Shutting
        // our side makes the daemon hang up, so whoever reads sees the end instead of waiting.
        std::lock_guard lock(mu);
        if (broken.ok()) broken = sent;
        ::shutdown(fd, SHUT_WR);
      }
    }
    Status got = await(me);
    // A daemon that refuses a client (uid, client limit) answers before reading anything, so even
    // a failed send may have a reply waiting that says why; without one, the send error says more.
    if (!sent.ok() && got.code() == StatusCode::kUnavailable) return sent;
    return got;
  }

 private:
  Status await(Pending& me) {
    std::unique_lock lock(mu);
    while (!me.done) {
      if (reading) {
        me.wake.wait(lock);
        continue;
      }
      reading = true;
      lock.unlock();
      read_until(me);
      lock.lock();
      reading = false;
      if (head != nullptr) head->wake.notify_one();  // the oldest waiter reads next
    }
    return me.status;
  }

  // The reader's turn: reads replies in order, completing their requests, until `me`'s is in or
  // the stream fails (which fails every request in flight).
  void read_until(Pending& me) {
    for (;;) {
      Pending* p = nullptr;
      {
        std::lock_guard lock(mu);
        p = head;  // me is queued, so there is a head; only the reader pops it
      }
      const Status stream = read_reply(*p);
      std::lock_guard lock(mu);
      if (!stream.ok()) {
        fail_all(stream);
        return;
      }
      head = p->next;
      if (head == nullptr) tail = nullptr;
      p->done = true;
      if (p == &me) return;
      p->wake.notify_one();
    }
  }

  // Reads one reply frame for `p` (the oldest request) into p->reply and sets p->status.
  // Returns non-OK only when the stream itself failed or fell out of step with the requests.
  Status read_reply(Pending& pending) {
    Pending* p = &pending;
    std::array<uint8_t, proto::kHeaderBytes> hb{};
    TIERKV_RETURN_IF_ERROR(read_all(fd, hb.data(), hb.size(), p->fd_out));
    auto h = proto::parse_header(hb);
    if (!h.ok()) return Status::ProtocolError("reply from tierkvd: " + h.status().message());
    p->reply->resize(h->payload_bytes);
    TIERKV_RETURN_IF_ERROR(read_all(fd, p->reply->data(), p->reply->size(), p->fd_out));
    // Request id 0 is a refusal sent before any request was read (hello only).
    const bool ours = h->request_id == p->id || (h->request_id == 0 && h->status != 0);
    if (!ours || (h->op != static_cast<uint16_t>(p->op) && h->status == 0)) {
      return Status::ProtocolError("reply (" + std::to_string(h->op) + ", request " +
                                   std::to_string(h->request_id) + ") does not match request " +
                                   std::to_string(p->id) + " (" +
                                   std::string(proto::op_name(p->op)) + ")");
    }
    p->status = h->status != 0 ? proto::decode_error(static_cast<StatusCode>(h->status), *p->reply)
                               : Status::Ok();
    return Status::Ok();
  }

  // Under mu: the stream is gone; every request in flight gets `why`. The socket is shut down both
  // ways, so that a sender blocked on a full socket buffer returns too.
  void fail_all(const Status& why) {
    if (broken.ok()) broken = why;
    ::shutdown(fd, SHUT_RDWR);
    for (Pending* p = head; p != nullptr;) {
      Pending* next = p->next;
      p->status = why;
      p->done = true;
      p->wake.notify_one();
      p = next;
    }
    head = tail = nullptr;
  }
};

namespace {
// Per-thread frame buffers: each thread encodes its request and receives its reply in its own
// buffers, reused from call to call (no allocation once they have grown to the working size).
struct FrameBuffers {
  std::vector<uint8_t> out;
  std::vector<uint8_t> in;
};
FrameBuffers& frame_buffers() {
  thread_local FrameBuffers buffers;
  return buffers;
}
}  // namespace

template <typename Request, typename Reply>
Status Client::call(proto::Op op, const Request& req, Reply& reply) {
  FrameBuffers& b = frame_buffers();
  proto::begin_frame(b.out, op, 0, StatusCode::kOk);
  wire::ByteWriter w(b.out);
  proto::encode(w, req);
  TIERKV_RETURN_IF_ERROR(proto::end_frame(b.out));
  TIERKV_RETURN_IF_ERROR(conn_->roundtrip(op, b.out, b.in, nullptr));
  wire::ByteReader r(b.in);
  return proto::decode(r, reply);
}

Status Client::call_erased(proto::Op op, const void* req, EncodeFn encode, void* reply,
                           DecodeFn decode) {
  FrameBuffers& b = frame_buffers();
  proto::begin_frame(b.out, op, 0, StatusCode::kOk);
  wire::ByteWriter w(b.out);
  encode(w, req);
  TIERKV_RETURN_IF_ERROR(proto::end_frame(b.out));
  TIERKV_RETURN_IF_ERROR(conn_->roundtrip(op, b.out, b.in, nullptr));
  wire::ByteReader r(b.in);
  return decode(r, reply);
}

Result<std::shared_ptr<Client>> Client::connect(const ClientOptions& options) {
  std::shared_ptr<Client> c(new Client());
  c->socket_path_ = options.socket_path;
  if (c->socket_path_.empty()) {
    const char* env = std::getenv("TIERKV_SOCKET");
    c->socket_path_ = (env != nullptr && *env != '\0') ? env : kDefaultSocketPath;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (c->socket_path_.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument("socket path '" + c->socket_path_ + "' is longer than " +
                                   std::to_string(sizeof(addr.sun_path) - 1) + " characters");
  }
  std::memcpy(addr.sun_path, c->socket_path_.c_str(), c->socket_path_.size() + 1);
  c->conn_ = std::make_unique<Connection>();
  c->conn_->fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->conn_->fd < 0) return Status::FromErrno("socket", errno);
  if (::connect(c->conn_->fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Status::Unavailable("tierkvd is not running at " + c->socket_path_ + ": connect: " +
                               std::strerror(errno));
  }

  proto::HelloRequest hello;
  hello.client_name = options.client_name.substr(0, proto::kMaxNameBytes);
  proto::HelloReply rep;
  int region_fd = -1;
  {
    FrameBuffers& b = frame_buffers();
    proto::begin_frame(b.out, proto::Op::kHello, 0, StatusCode::kOk);
    wire::ByteWriter w(b.out);
    proto::encode(w, hello);
    TIERKV_RETURN_IF_ERROR(proto::end_frame(b.out));
    Status s = c->conn_->roundtrip(proto::Op::kHello, b.out, b.in, &region_fd);
    if (s.ok()) {
      wire::ByteReader r(b.in);
      s = proto::decode(r, rep);
    }
    if (!s.ok()) {
      if (region_fd >= 0) ::close(region_fd);
      return s;
    }
  }
  if (region_fd < 0) return Status::ProtocolError("tierkvd's hello reply carried no host pool fd");
  void* base = ::mmap(nullptr, rep.host_region_bytes, PROT_READ | PROT_WRITE,
                      MAP_SHARED | (options.populate ? MAP_POPULATE : 0), region_fd, 0);
  const int mmap_errno = errno;
  ::close(region_fd);  // the mapping keeps the memory
  if (base == MAP_FAILED) return Status::FromErrno("mmap tierkvd host pool", mmap_errno);
  c->base_ = static_cast<std::byte*>(base);
  c->region_bytes_ = rep.host_region_bytes;
  c->daemon_version_ = rep.daemon_version;
  c->default_chunk_tokens_ = rep.default_chunk_tokens;
  return c;
}

Client::~Client() {
  if (base_ != nullptr) ::munmap(base_, region_bytes_);
}

Result<Namespace> Client::register_layout(const Layout& layout, std::string_view tenant,
                                          std::string_view salt) {
  proto::RegisterLayoutRequest req{layout, std::string(tenant), std::string(salt)};
  proto::RegisterLayoutReply rep;
  TIERKV_RETURN_IF_ERROR(call(proto::Op::kRegisterLayout, req, rep));
  return Namespace{rep.ns, rep.layout, std::string(tenant), std::string(salt)};
}

std::vector<ChunkKey> Client::keys(const Namespace& ns, std::span<const TokenId> tokens) {
  std::vector<ChunkKey> out;
  chunk_keys(ns.id, tokens, ns.layout.chunk_tokens, out);
  return out;
}

namespace {
// The calling thread's chunk keys of a prompt, in a buffer it reuses from call to call.
std::span<const ChunkKey> thread_keys(const Namespace& ns, std::span<const TokenId> tokens) {
  thread_local std::vector<ChunkKey> keys;
  chunk_keys(ns.id, tokens, ns.layout.chunk_tokens, keys);
  return keys;
}
}  // namespace

Result<LookupResult> Client::lookup(const Namespace& ns, std::span<const TokenId> tokens) {
  return lookup(ns.id, thread_keys(ns, tokens));
}

Result<LookupResult> Client::lookup(NamespaceId ns, std::span<const ChunkKey> keys) {
  const proto::KeysRequestView req{ns, keys};
  proto::LookupReply rep;
  TIERKV_RETURN_IF_ERROR(call(proto::Op::kLookup, req, rep));
  LookupResult out;
  out.total_chunks = keys.size();
  out.cached_chunks = rep.tiers.size();
  out.tiers = std::move(rep.tiers);
  return out;
}

Result<PutLease> Client::begin_put(const Namespace& ns, std::span<const TokenId> tokens) {
  return begin_put(ns, thread_keys(ns, tokens), kRootKey);
}

Result<PutLease> Client::begin_put(const Namespace& ns, std::span<const ChunkKey> keys,
                                   const ChunkKey& parent) {
  proto::PutBeginRequest req{ns.id, parent, ns.chunk_bytes(),
                             std::vector<ChunkKey>(keys.begin(), keys.end())};
  proto::PutBeginReply rep;
  TIERKV_RETURN_IF_ERROR(call(proto::Op::kPutBegin, req, rep));
  if (rep.slots.size() != keys.size()) {
    return Status::ProtocolError("put_begin reply names " + std::to_string(rep.slots.size()) +
                                 " slots for " + std::to_string(keys.size()) + " keys");
  }
  for (const proto::PutSlot& s : rep.slots) {
    if (s.disposition == proto::PutDisposition::kWrite &&
        (s.offset > region_bytes_ || region_bytes_ - s.offset < ns.chunk_bytes())) {
      return Status::ProtocolError("put_begin reply: slot " + std::to_string(s.slot) +
                                   " lies outside the host pool");
    }
  }
  return PutLease(shared_from_this(), std::move(rep.slots), ns.chunk_bytes());
}

Result<PutResult> Client::put(const Namespace& ns, std::span<const TokenId> tokens,
                              std::span<const std::byte> kv) {
  const uint64_t cb = ns.chunk_bytes();
  const size_t n = tokens.size() / ns.layout.chunk_tokens;
  if (kv.size() < n * cb) {
    return Status::InvalidArgument("kv holds " + std::to_string(kv.size()) + " bytes; " +
                                   std::to_string(n) + " full chunks of " + std::to_string(cb) +
                                   " bytes need " + std::to_string(n * cb));
  }
  auto lease = begin_put(ns, tokens);
  if (!lease.ok()) return lease.status();
  PutResult result;
  result.total_chunks = lease->chunks();
  for (size_t i = 0; i < lease->chunks(); ++i) {
    switch (lease->disposition(i)) {
      case proto::PutDisposition::kWrite:
        TIERKV_RETURN_IF_ERROR(lease->write(i, kv.subspan(i * cb, cb)));
        ++result.written;
        break;
      case proto::PutDisposition::kCached: ++result.already_cached; break;
      case proto::PutDisposition::kInProgress: ++result.in_progress; break;
      case proto::PutDisposition::kNoSpace: ++result.no_space; break;
    }
  }
  auto committed = lease->commit();
  if (!committed.ok()) return committed.status();
  return result;
}

Result<LoadLease> Client::load(const Namespace& ns, std::span<const TokenId> tokens,
                               size_t max_chunks) {
  const std::span<const ChunkKey> k = thread_keys(ns, tokens);
  return load(ns.id, k.first(std::min(k.size(), max_chunks)));
}

Result<LoadLease> Client::load(NamespaceId ns, std::span<const ChunkKey> keys) {
  const proto::KeysRequestView req{ns, keys};
  proto::LoadReply rep;
  TIERKV_RETURN_IF_ERROR(call(proto::Op::kLoad, req, rep));
  LoadLease lease(shared_from_this(), std::move(rep.slots));
  for (const proto::SlotRef& s : lease.slots_) {
    if (s.pool != proto::kHostPool || s.offset > region_bytes_ ||
        region_bytes_ - s.offset < s.bytes) {
      return Status::ProtocolError("load reply: slot " + std::to_string(s.slot) +
                                   " lies outside the host pool");
    }
  }
  return lease;
}

Result<uint64_t> Client::drop(proto::Op op, NamespaceId ns, proto::Scope scope,
                              std::span<const ChunkKey> keys) {
  proto::DropRequest req{ns, scope, std::vector<ChunkKey>(keys.begin(), keys.end())};
  proto::CountReply rep;
  TIERKV_RETURN_IF_ERROR(call(op, req, rep));
  return rep.count;
}

Result<uint64_t> Client::evict(NamespaceId ns, std::span<const ChunkKey> keys) {
  return drop(proto::Op::kEvict, ns, proto::Scope::kKeys, keys);
}
Result<uint64_t> Client::evict_namespace(NamespaceId ns) {
  return drop(proto::Op::kEvict, ns, proto::Scope::kNamespace, {});
}
Result<uint64_t> Client::remove(NamespaceId ns, std::span<const ChunkKey> keys) {
  return drop(proto::Op::kDelete, ns, proto::Scope::kKeys, keys);
}
Result<uint64_t> Client::remove_namespace(NamespaceId ns) {
  return drop(proto::Op::kDelete, ns, proto::Scope::kNamespace, {});
}

Result<proto::StatsReply> Client::stats() {
  proto::StatsReply rep;
  TIERKV_RETURN_IF_ERROR(call(proto::Op::kStats, EmptyRequest{}, rep));
  return rep;
}

Result<proto::PrefetchReply> Client::prefetch(const Namespace& ns,
                                              std::span<const TokenId> tokens) {
  return prefetch(ns.id, thread_keys(ns, tokens));
}

Result<proto::PrefetchReply> Client::prefetch(NamespaceId ns, std::span<const ChunkKey> keys) {
  const proto::KeysRequestView req{ns, keys};
  proto::PrefetchReply rep;
  TIERKV_RETURN_IF_ERROR(call(proto::Op::kPrefetch, req, rep));
  return rep;
}

Result<proto::FlushReply> Client::flush() {
  proto::FlushReply rep;
  TIERKV_RETURN_IF_ERROR(call(proto::Op::kFlush, EmptyRequest{}, rep));
  return rep;
}

Result<proto::VerifyReply> Client::verify(uint64_t cursor, uint32_t max_chunks) {
  proto::VerifyReply rep;
  TIERKV_RETURN_IF_ERROR(call(proto::Op::kVerify, proto::VerifyRequest{cursor, max_chunks}, rep));
  return rep;
}

Result<proto::ListNamespacesReply> Client::list_namespaces() {
  proto::ListNamespacesReply rep;
  TIERKV_RETURN_IF_ERROR(call(proto::Op::kListNamespaces, EmptyRequest{}, rep));
  return rep;
}

Status Client::release_slots(proto::Op op, std::span<const uint32_t> slots, uint64_t* count) {
  proto::SlotsRequest req{std::vector<uint32_t>(slots.begin(), slots.end())};
  proto::CountReply rep;
  TIERKV_RETURN_IF_ERROR(call(op, req, rep));
  if (count != nullptr) *count = rep.count;
  return Status::Ok();
}

// --- PutLease ------------------------------------------------------------------------------------

PutLease::PutLease(std::shared_ptr<Client> client, std::vector<proto::PutSlot> slots,
                   uint64_t chunk_bytes)
    : client_(std::move(client)), slots_(std::move(slots)), chunk_bytes_(chunk_bytes) {}
PutLease::PutLease(PutLease&&) noexcept = default;
PutLease& PutLease::operator=(PutLease&& other) noexcept {
  if (this != &other) {
    (void)abort();
    client_ = std::move(other.client_);
    slots_ = std::move(other.slots_);
    chunk_bytes_ = other.chunk_bytes_;
  }
  return *this;
}
PutLease::~PutLease() { (void)abort(); }

bool PutLease::needs_write(size_t i) const {
  return client_ != nullptr && slots_[i].disposition == proto::PutDisposition::kWrite;
}

Status PutLease::write(size_t i, std::span<const std::byte> src) {
  if (i >= slots_.size()) {
    return Status::InvalidArgument("chunk " + std::to_string(i) + " is past the lease's " +
                                   std::to_string(slots_.size()) + " chunks");
  }
  if (!needs_write(i)) {
    return Status::FailedPrecondition("chunk " + std::to_string(i) +
                                      " needs no write (cached, or being stored by another client)");
  }
  if (src.size() != chunk_bytes_) {
    return Status::InvalidArgument("chunk " + std::to_string(i) + ": " +
                                   std::to_string(src.size()) + " bytes given, the chunk is " +
                                   std::to_string(chunk_bytes_));
  }
  copy_streaming(slot(i).data(), src.data(), src.size());
  return Status::Ok();
}

std::span<std::byte> PutLease::slot(size_t i) const {
  if (!needs_write(i)) return {};
  return {client_->at(slots_[i].offset), chunk_bytes_};
}

Status PutLease::finish(proto::Op op, size_t* count) {
  if (client_ == nullptr) return Status::Ok();
  std::vector<uint32_t> ids;
  for (const proto::PutSlot& s : slots_) {
    if (s.disposition == proto::PutDisposition::kWrite) ids.push_back(s.slot);
  }
  uint64_t n = 0;
  Status st = ids.empty() ? Status::Ok() : client_->release_slots(op, ids, &n);
  client_.reset();
  if (count != nullptr) *count = n;
  return st;
}

Result<size_t> PutLease::commit() {
  size_t n = 0;
  TIERKV_RETURN_IF_ERROR(finish(proto::Op::kPutCommit, &n));
  return n;
}

Status PutLease::abort() { return finish(proto::Op::kPutAbort, nullptr); }

// --- LoadLease -----------------------------------------------------------------------------------

LoadLease::LoadLease(std::shared_ptr<Client> client, std::vector<proto::SlotRef> slots)
    : client_(std::move(client)), slots_(std::move(slots)) {}
LoadLease::LoadLease(LoadLease&&) noexcept = default;
LoadLease& LoadLease::operator=(LoadLease&& other) noexcept {
  if (this != &other) {
    (void)release();
    client_ = std::move(other.client_);
    slots_ = std::move(other.slots_);
  }
  return *this;
}
LoadLease::~LoadLease() { (void)release(); }

std::span<const std::byte> LoadLease::chunk(size_t i) const {
  if (client_ == nullptr || on_gpu(i)) return {};
  return {client_->at(slots_[i].offset), slots_[i].bytes};
}

size_t LoadLease::gpu_chunks() const {
  return static_cast<size_t>(
      std::count_if(slots_.begin(), slots_.end(),
                    [](const proto::SlotRef& s) { return s.pool == proto::kGpuPool; }));
}

Status LoadLease::release() {
  if (client_ == nullptr) return Status::Ok();
  std::vector<uint32_t> ids;
  std::vector<uint32_t> gpu_ids;  // GPU-pool leases go back with gpu_release
  ids.reserve(slots_.size());
  for (const proto::SlotRef& s : slots_) {
    (s.pool == proto::kGpuPool ? gpu_ids : ids).push_back(s.slot);
  }
  Status st = ids.empty() ? Status::Ok() : client_->release_slots(proto::Op::kRelease, ids, nullptr);
  if (!gpu_ids.empty()) {
    Status gst = client_->release_slots(proto::Op::kGpuRelease, gpu_ids, nullptr);
    if (st.ok()) st = gst;
  }
  client_.reset();
  return st;
}

}  // namespace tierkv
