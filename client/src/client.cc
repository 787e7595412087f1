#include "tierkv/client.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <mutex>

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

struct Client::Connection {
  int fd = -1;
  std::mutex mu;  // guards the socket and the buffers: one round trip at a time
  std::vector<uint8_t> out;
  std::vector<uint8_t> in;
  uint32_t next_request = 1;

  ~Connection() {
    if (fd >= 0) ::close(fd);
  }

  // Sends the frame in `out` and reads the reply into `in`; returns the reply's status.
  Status roundtrip(proto::Op op, int* fd_out) {
    const uint32_t id = next_request++;
    std::memcpy(out.data() + offsetof(proto::FrameHeader, request_id), &id, sizeof(id));
    const Status sent = write_all(fd, out.data(), out.size());
    std::array<uint8_t, proto::kHeaderBytes> hb{};
    if (Status got = read_all(fd, hb.data(), hb.size(), fd_out); !got.ok()) {
      return sent.ok() ? got : sent;
    }
    // A daemon that refuses a client (uid, client limit) answers before reading anything, so
    // even a failed send may have a reply waiting that says why.
    auto h = proto::parse_header(hb);
    if (!h.ok()) return h.status();
    in.resize(h->payload_bytes);
    TIERKV_RETURN_IF_ERROR(read_all(fd, in.data(), in.size(), fd_out));
    if (h->status != 0) return proto::decode_error(static_cast<StatusCode>(h->status), in);
    if (h->op != static_cast<uint16_t>(op) || h->request_id != id) {
      return Status::ProtocolError("reply does not match request " + std::string(proto::op_name(op)));
    }
    return Status::Ok();
  }
};

template <typename Request, typename Reply>
Status Client::call(proto::Op op, const Request& req, Reply& reply) {
  std::lock_guard lock(conn_->mu);
  proto::begin_frame(conn_->out, op, 0, StatusCode::kOk);
  wire::ByteWriter w(conn_->out);
  proto::encode(w, req);
  TIERKV_RETURN_IF_ERROR(proto::end_frame(conn_->out));
  TIERKV_RETURN_IF_ERROR(conn_->roundtrip(op, nullptr));
  wire::ByteReader r(conn_->in);
  return proto::decode(r, reply);
}

Status Client::call_erased(proto::Op op, const void* req, EncodeFn encode, void* reply,
                           DecodeFn decode) {
  std::lock_guard lock(conn_->mu);
  proto::begin_frame(conn_->out, op, 0, StatusCode::kOk);
  wire::ByteWriter w(conn_->out);
  encode(w, req);
  TIERKV_RETURN_IF_ERROR(proto::end_frame(conn_->out));
  TIERKV_RETURN_IF_ERROR(conn_->roundtrip(op, nullptr));
  wire::ByteReader r(conn_->in);
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
    std::lock_guard lock(c->conn_->mu);
    proto::begin_frame(c->conn_->out, proto::Op::kHello, 0, StatusCode::kOk);
    wire::ByteWriter w(c->conn_->out);
    proto::encode(w, hello);
    TIERKV_RETURN_IF_ERROR(proto::end_frame(c->conn_->out));
    Status s = c->conn_->roundtrip(proto::Op::kHello, &region_fd);
    if (s.ok()) {
      wire::ByteReader r(c->conn_->in);
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

Result<LookupResult> Client::lookup(const Namespace& ns, std::span<const TokenId> tokens) {
  const std::vector<ChunkKey> k = keys(ns, tokens);
  return lookup(ns.id, k);
}

Result<LookupResult> Client::lookup(NamespaceId ns, std::span<const ChunkKey> keys) {
  proto::KeysRequest req{ns, std::vector<ChunkKey>(keys.begin(), keys.end())};
  proto::LookupReply rep;
  TIERKV_RETURN_IF_ERROR(call(proto::Op::kLookup, req, rep));
  LookupResult out;
  out.total_chunks = keys.size();
  out.cached_chunks = rep.tiers.size();
  out.tiers = std::move(rep.tiers);
  return out;
}

Result<PutLease> Client::begin_put(const Namespace& ns, std::span<const TokenId> tokens) {
  const std::vector<ChunkKey> k = keys(ns, tokens);
  return begin_put(ns, k, kRootKey);
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
  std::vector<ChunkKey> k = keys(ns, tokens);
  if (k.size() > max_chunks) k.resize(max_chunks);
  return load(ns.id, k);
}

Result<LoadLease> Client::load(NamespaceId ns, std::span<const ChunkKey> keys) {
  proto::KeysRequest req{ns, std::vector<ChunkKey>(keys.begin(), keys.end())};
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
  const std::vector<ChunkKey> k = keys(ns, tokens);
  return prefetch(ns.id, k);
}

Result<proto::PrefetchReply> Client::prefetch(NamespaceId ns, std::span<const ChunkKey> keys) {
  proto::KeysRequest req{ns, std::vector<ChunkKey>(keys.begin(), keys.end())};
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
