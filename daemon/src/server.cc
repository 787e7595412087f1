#include "tierkv/daemon/server.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "asio_clock.h"
#include "tierkv/prefill_protocol.h"
#include "tierkv/protocol.h"
#include "tierkv/version.h"

namespace tierkv::daemon {

namespace asio = boost::asio;
using asio::local::stream_protocol;
using proto::Op;

// One client connection. Owned by shared_ptrs held by its pending asynchronous operations.
// Requests are handled one at a time: the next header is read only once the current request's
// reply is written, so replies go out in request order, which pipelining clients rely on
// (protocol.h). A handler that answers later (a load from NVMe, a prefill poll) keeps that order.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Server& server, stream_protocol::socket socket, ucred peer)
      : server_(server),
        socket_(std::move(socket)),
        peer_(peer),
        wait_timer_(socket_.get_executor()) {}

  void start() {
    session_ = server_.engine_.open_session();
    ++server_.connections_;
    spdlog::info("client {} connected (pid {}, uid {})", session_, peer_.pid, peer_.uid);
    read_header();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ignored;
    socket_.close(ignored);
    close_prefill();
    const auto stats = server_.engine_.close_session(session_);
    --server_.connections_;
    spdlog::info("client {} ({}, pid {}) disconnected; reclaimed {} read leases, discarded {} "
                 "uncommitted chunks, cancelled {} loads",
                 session_, name_.empty() ? "no hello" : name_, peer_.pid, stats.read_leases,
                 stats.pending_writes, stats.loads_cancelled);
    if (stats.gpu_leases > 0) {
      spdlog::info("client {}: reclaimed {} GPU leases", session_, stats.gpu_leases);
    }
  }

 private:
  void read_header() {
    auto self = shared_from_this();
    asio::async_read(socket_, asio::buffer(header_),
                     [this, self](boost::system::error_code ec, size_t) {
                       if (ec) return close();
                       on_header();
                     });
  }

  void on_header() {
    auto h = proto::parse_header(header_);
    if (!h.ok()) {
      // The frame cannot be delimited: answer, then hang up.
      proto::FrameHeader raw;
      std::memcpy(&raw, header_.data(), sizeof(raw));
      fail(raw.op, raw.request_id, h.status(), /*close_after=*/true);
      return;
    }
    hdr_ = *h;
    payload_.resize(hdr_.payload_bytes);
    auto self = shared_from_this();
    asio::async_read(socket_, asio::buffer(payload_),
                     [this, self](boost::system::error_code ec, size_t) {
                       if (ec) return close();
                       dispatch();
                     });
  }

  void fail(uint16_t op, uint32_t request_id, const Status& status, bool close_after) {
    ++server_.request_errors_;
    spdlog::warn("client {} (pid {}): {} request {}: {}", session_, peer_.pid,
                 proto::is_known_op(op) ? proto::op_name(static_cast<Op>(op)) : "unknown",
                 request_id, status.to_string());
    proto::error_frame(reply_, op, request_id, status);
    send_reply(close_after);
  }

  template <typename Reply>
  void reply(const Reply& msg) {
    proto::begin_frame(reply_, static_cast<Op>(hdr_.op), hdr_.request_id, StatusCode::kOk);
    wire::ByteWriter w(reply_);
    proto::encode(w, msg);
    if (Status s = proto::end_frame(reply_); !s.ok()) return fail(hdr_.op, hdr_.request_id, s, false);
    send_reply(false);
  }

  void send_reply(bool close_after) {
    auto self = shared_from_this();
    asio::async_write(socket_, asio::buffer(reply_),
                      [this, self, close_after](boost::system::error_code ec, size_t) {
                        if (ec || close_after) return close();
                        read_header();
                      });
  }

  void dispatch() {
    ++server_.requests_;
    if (!proto::is_known_op(hdr_.op)) {
      return fail(hdr_.op, hdr_.request_id,
                  Status::InvalidArgument("unknown opcode " + std::to_string(hdr_.op)), false);
    }
    const Op op = static_cast<Op>(hdr_.op);
    if (op != Op::kHello && !hello_done_) {
      return fail(hdr_.op, hdr_.request_id,
                  Status::ProtocolError("the first request must be hello (version handshake)"),
                  true);
    }
    wire::ByteReader r(payload_);
    Status s = proto::is_prefill_op(hdr_.op) ? handle_prefill(op, r)
               : is_gpu_op(op)               ? handle_gpu(op, r)
                                             : handle(op, r);
    if (!s.ok()) fail(hdr_.op, hdr_.request_id, s, op == Op::kHello);
  }

  // Decodes the request and answers it; a returned error is sent as the reply.
  Status handle(Op op, wire::ByteReader& r) {
    auto& engine = server_.engine_;
    switch (op) {
      case Op::kHello: return hello(r);
      case Op::kRegisterLayout: {
        TIERKV_RETURN_IF_ERROR(proto::decode(r, register_req_));
        auto ns = engine.register_namespace(register_req_.layout, register_req_.tenant,
                                            register_req_.salt);
        if (!ns.ok()) return ns.status();
        spdlog::debug("client {} registered namespace {:016x} ({}, tenant '{}')", session_,
                      ns->id, ns->layout.to_string(), ns->tenant);
        reply(proto::RegisterLayoutReply{ns->id, ns->layout});
        return Status::Ok();
      }
      case Op::kLookup:
        TIERKV_RETURN_IF_ERROR(proto::decode(r, keys_req_));
        TIERKV_RETURN_IF_ERROR(engine.lookup(keys_req_, lookup_reply_));
        reply(lookup_reply_);
        return Status::Ok();
      case Op::kLoad: {
        TIERKV_RETURN_IF_ERROR(proto::decode(r, keys_req_));
        // Answered at once from host RAM, or once the chunks read up from NVMe verify. The next
        // request is read only after the reply, so hdr_ is still this request's.
        auto self = shared_from_this();
        engine.load(session_, keys_req_, [this, self](Status st, const proto::LoadReply& rep) {
          if (closed_) return;
          if (!st.ok()) return fail(hdr_.op, hdr_.request_id, st, false);
          reply(rep);
        });
        return Status::Ok();
      }
      case Op::kPrefetch: {
        TIERKV_RETURN_IF_ERROR(proto::decode(r, keys_req_));
        proto::PrefetchReply rep;
        TIERKV_RETURN_IF_ERROR(engine.prefetch(keys_req_, rep));
        reply(rep);
        return Status::Ok();
      }
      case Op::kFlush: {
        TIERKV_RETURN_IF_ERROR(r.expect_end("flush"));
        proto::FlushReply rep;
        TIERKV_RETURN_IF_ERROR(engine.flush(rep));
        reply(rep);
        return Status::Ok();
      }
      case Op::kVerify: {
        proto::VerifyRequest req;
        TIERKV_RETURN_IF_ERROR(proto::decode(r, req));
        auto self = shared_from_this();
        engine.verify(req, [this, self](Status st, const proto::VerifyReply& rep) {
          if (closed_) return;
          if (!st.ok()) return fail(hdr_.op, hdr_.request_id, st, false);
          reply(rep);
        });
        return Status::Ok();
      }
      case Op::kPutBegin:
        TIERKV_RETURN_IF_ERROR(proto::decode(r, put_req_));
        TIERKV_RETURN_IF_ERROR(engine.put_begin(session_, put_req_, put_reply_));
        reply(put_reply_);
        return Status::Ok();
      case Op::kPutCommit:
      case Op::kPutAbort:
      case Op::kRelease: {
        TIERKV_RETURN_IF_ERROR(proto::decode(r, slots_req_));
        proto::CountReply count;
        if (op == Op::kPutCommit) {
          TIERKV_RETURN_IF_ERROR(engine.put_commit(session_, slots_req_.slots, &count.count));
        } else if (op == Op::kPutAbort) {
          TIERKV_RETURN_IF_ERROR(engine.put_abort(session_, slots_req_.slots, &count.count));
        } else {
          TIERKV_RETURN_IF_ERROR(engine.release(session_, slots_req_.slots, &count.count));
        }
        reply(count);
        return Status::Ok();
      }
      case Op::kEvict:
      case Op::kDelete: {
        // Evict drops chunks from host RAM (NVMe keeps its copies); delete drops them everywhere.
        TIERKV_RETURN_IF_ERROR(proto::decode(r, drop_req_));
        proto::CountReply count;
        TIERKV_RETURN_IF_ERROR(op == Op::kEvict ? engine.evict(drop_req_, &count.count)
                                                : engine.remove(drop_req_, &count.count));
        spdlog::info("client {} {} {} chunks of namespace {:016x}", session_,
                     op == Op::kEvict ? "evicted" : "deleted", count.count, drop_req_.ns);
        reply(count);
        return Status::Ok();
      }
      case Op::kStats: {
        TIERKV_RETURN_IF_ERROR(r.expect_end("stats"));
        proto::StatsReply stats;
        server_.fill_stats(stats);
        reply(stats);
        return Status::Ok();
      }
      case Op::kListNamespaces: {
        TIERKV_RETURN_IF_ERROR(r.expect_end("list_namespaces"));
        proto::ListNamespacesReply list;
        engine.list_namespaces(list);
        reply(list);
        return Status::Ok();
      }
      default:
        break;  // prefill ops: handle_prefill()
    }
    return Status::Internal("unhandled opcode");
  }

  Status hello(wire::ByteReader& r) {
    if (hello_done_) return Status::ProtocolError("hello sent twice");
    proto::HelloRequest req;
    TIERKV_RETURN_IF_ERROR(proto::decode(r, req));
    if (req.protocol_version != proto::kProtocolVersion) {
      return Status::ProtocolError("protocol version " + std::to_string(req.protocol_version) +
                                   " is not supported (this tierkvd speaks version " +
                                   std::to_string(proto::kProtocolVersion) + ")");
    }
    name_ = req.client_name;
    proto::HelloReply rep;
    rep.daemon_version = kVersion;
    rep.host_region_bytes = server_.engine_.host_region_bytes();
    rep.default_chunk_tokens = server_.engine_.default_chunk_tokens();
    proto::begin_frame(reply_, Op::kHello, hdr_.request_id, StatusCode::kOk);
    wire::ByteWriter w(reply_);
    proto::encode(w, rep);
    (void)proto::end_frame(reply_);
    TIERKV_RETURN_IF_ERROR(send_with_fd(server_.engine_.host_fd()));
    hello_done_ = true;
    spdlog::info("client {} is '{}' (pid {}, protocol {})", session_, name_, peer_.pid,
                 req.protocol_version);
    read_header();
    return Status::Ok();
  }

  // Sends reply_ with `fd` attached to its first byte (SCM_RIGHTS). The reply is a few dozen
  // bytes into an idle socket's empty buffer; a partial send finishes with an ordinary write.
  Status send_with_fd(int fd) {
    iovec iov{reply_.data(), reply_.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
    ssize_t n;
    do {
      n = ::sendmsg(socket_.native_handle(), &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return Status::FromErrno("send host pool fd", errno);
    if (static_cast<size_t>(n) < reply_.size()) {
      boost::system::error_code ec;
      asio::write(socket_, asio::buffer(reply_.data() + n, reply_.size() - n), ec);
      if (ec) return Status::IoError("send hello reply: " + ec.message());
    }
    return Status::Ok();
  }

  // GPU tier: gpu_attach, gpu_load, gpu_release (definitions at the end of this file).
  static bool is_gpu_op(Op op) {
    return op == Op::kGpuAttach || op == Op::kGpuLoad || op == Op::kGpuRelease;
  }
  Status handle_gpu(Op op, wire::ByteReader& r);

  // Co-scheduled prefill (definitions at the end of this file).
  Status handle_prefill(Op op, wire::ByteReader& r);
  void finish_wait(uint64_t prefill_session);
  void close_prefill();

  Server& server_;
  stream_protocol::socket socket_;
  ucred peer_;
  scheduler::SessionId session_ = 0;
  std::string name_;
  bool hello_done_ = false;
  bool closed_ = false;

  // Buffers and messages reused across requests: no allocation per request once warm.
  std::array<uint8_t, proto::kHeaderBytes> header_{};
  proto::FrameHeader hdr_;
  std::vector<uint8_t> payload_;
  std::vector<uint8_t> reply_;
  proto::RegisterLayoutRequest register_req_;
  proto::KeysRequest keys_req_;
  proto::PutBeginRequest put_req_;
  proto::SlotsRequest slots_req_;
  proto::DropRequest drop_req_;
  proto::LookupReply lookup_reply_;
  proto::PutBeginReply put_reply_;
  // Co-scheduled prefill: a prefill_poll that waits is answered by finish_wait(), when the session
  // has news or wait_timer_ fires; until then this connection reads nothing else.
  proto::PrefillBeginRequest prefill_begin_req_;
  proto::PrefillBeginReply prefill_begin_reply_;
  proto::PrefillComputedRequest prefill_computed_req_;
  proto::PrefillPollRequest prefill_poll_req_;
  proto::PrefillProgress prefill_progress_;
  boost::asio::steady_timer wait_timer_;
  bool waiting_ = false;
};

Server::Server(asio::io_context& io, const DaemonConfig& config, scheduler::CacheEngine& engine)
    : io_(io),
      config_(config),
      engine_(engine),
      clock_(std::make_unique<AsioClock>(io)),
      prefill_(std::make_unique<scheduler::PrefillService>(engine, *clock_, config.prefill)),
      acceptor_(io),
      io_watch_(io),
      gpu_watch_(io),
      started_(std::chrono::steady_clock::now()) {}

Server::~Server() { stop(); }

void Server::watch_io() {
  // NVMe completions: the engine's eventfd becomes readable; drain it and let the engine run
  // them, all on this thread.
  io_watch_.async_wait(asio::posix::stream_descriptor::wait_read,
                       [this](boost::system::error_code ec) {
                         if (ec) return;
                         uint64_t n = 0;
                         (void)!::read(io_watch_.native_handle(), &n, sizeof(n));
                         engine_.poll_io();
                         watch_io();
                       });
}

void Server::watch_gpu() {
  // GPU tier copies: a CUDA host function bumps the tier's eventfd when a copy lands; the engine
  // asks the copies' events, never waiting on the device.
  gpu_watch_.async_wait(asio::posix::stream_descriptor::wait_read,
                        [this](boost::system::error_code ec) {
                          if (ec) return;
                          uint64_t n = 0;
                          (void)!::read(gpu_watch_.native_handle(), &n, sizeof(n));
                          engine_.poll_gpu();
                          watch_gpu();
                        });
}

Status Server::listen() {
  namespace fs = std::filesystem;
  const fs::path path(config_.socket_path);
  std::error_code ec;
  if (path.has_parent_path()) {
    fs::create_directories(path.parent_path(), ec);
    if (ec) {
      return Status::IoError("cannot create the socket directory " +
                             path.parent_path().string() + ": " + ec.message() +
                             " (set server.socket_path or --socket to a writable place)");
    }
  }
  if (fs::exists(fs::symlink_status(path, ec))) {
    // Another daemon listening there? A connect tells; otherwise the file is stale.
    stream_protocol::socket probe(io_);
    boost::system::error_code cec;
    probe.connect(stream_protocol::endpoint(config_.socket_path), cec);
    if (!cec) {
      return Status::FailedPrecondition("another tierkvd is already serving " +
                                        config_.socket_path);
    }
    fs::remove(path, ec);
  }
  boost::system::error_code bec;
  acceptor_.open(stream_protocol(), bec);
  if (!bec) acceptor_.bind(stream_protocol::endpoint(config_.socket_path), bec);
  if (!bec) acceptor_.listen(asio::socket_base::max_listen_connections, bec);
  if (bec) return Status::IoError("cannot listen on " + config_.socket_path + ": " + bec.message());
  if (::chmod(config_.socket_path.c_str(), config_.socket_mode) != 0) {
    return Status::FromErrno("chmod " + config_.socket_path, errno);
  }
  listening_ = true;
  if (engine_.io_fd() >= 0) {
    const int fd = ::dup(engine_.io_fd());  // the descriptor object closes its own copy
    if (fd < 0) return Status::FromErrno("dup the NVMe completion fd", errno);
    io_watch_.assign(fd);
    watch_io();
  }
  if (engine_.gpu_fd() >= 0) {
    const int fd = ::dup(engine_.gpu_fd());
    if (fd < 0) return Status::FromErrno("dup the GPU completion fd", errno);
    gpu_watch_.assign(fd);
    watch_gpu();
  }
  accept_next();
  return Status::Ok();
}

void Server::stop() {
  if (!listening_) return;
  listening_ = false;
  boost::system::error_code ec;
  acceptor_.close(ec);
  io_watch_.close(ec);
  gpu_watch_.close(ec);
  for (auto& weak : live_) {
    if (auto c = weak.lock()) c->close();
  }
  live_.clear();
  std::error_code fec;
  std::filesystem::remove(config_.socket_path, fec);
}

bool Server::uid_allowed(uint32_t uid) const {
  if (uid == 0 || uid == ::geteuid()) return true;
  for (uint32_t allowed : config_.allowed_uids) {
    if (uid == allowed) return true;
  }
  return false;
}

void Server::accept_next() {
  acceptor_.async_accept([this](boost::system::error_code ec, stream_protocol::socket socket) {
    if (ec) {
      if (ec != asio::error::operation_aborted) {
        spdlog::error("accept failed: {}", ec.message());
        if (listening_) accept_next();
      }
      return;
    }
    ucred peer{};
    socklen_t len = sizeof(peer);
    if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0) {
      spdlog::warn("SO_PEERCRED failed: {}; refusing the connection", std::strerror(errno));
      accept_next();
      return;
    }
    // Refusals get one error frame, written best-effort before the socket closes.
    auto refuse = [&](const Status& status) {
      spdlog::warn("refused a client (pid {}, uid {}): {}", peer.pid, peer.uid, status.message());
      std::vector<uint8_t> frame;
      proto::error_frame(frame, static_cast<uint16_t>(Op::kHello), 0, status);
      boost::system::error_code wec;
      asio::write(socket, asio::buffer(frame), wec);
    };
    if (!uid_allowed(peer.uid)) {
      refuse(Status::PermissionDenied("uid " + std::to_string(peer.uid) +
                                      " is not allowed to use tierkvd (add it to "
                                      "server.allowed_uids)"));
    } else if (connections_ >= config_.max_clients) {
      refuse(Status::ResourceExhausted("tierkvd already serves " + std::to_string(connections_) +
                                       " clients (server.max_clients)"));
    } else {
      auto conn = std::make_shared<Connection>(*this, std::move(socket), peer);
      std::erase_if(live_, [](const std::weak_ptr<Connection>& w) { return w.expired(); });
      live_.push_back(conn);
      conn->start();
    }
    accept_next();
  });
}

void Server::fill_stats(proto::StatsReply& stats) const {
  engine_.fill_stats(stats);
  stats.daemon_version = kVersion;
  stats.pid = static_cast<uint32_t>(::getpid());
  stats.uptime_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                              std::chrono::steady_clock::now() - started_)
                                              .count());
  stats.sessions = static_cast<uint32_t>(connections_);
  stats.requests = requests_;
  stats.request_errors = request_errors_;
  prefill_->fill_stats(stats);
}

// --- co-scheduled prefill ------------------------------------------------------------------------

Status Connection::handle_prefill(Op op, wire::ByteReader& r) {
  scheduler::PrefillService& prefill = server_.prefill();
  switch (op) {
    case Op::kPrefillBegin:
      TIERKV_RETURN_IF_ERROR(proto::decode(r, prefill_begin_req_));
      TIERKV_RETURN_IF_ERROR(prefill.begin(session_, prefill_begin_req_, prefill_begin_reply_));
      spdlog::debug("client {} prefill session {}: {} of {} chunks cached, plan meets at {} ({} "
                    "reads, {:.1f} ms predicted, compute-only {:.1f} ms)",
                    session_, prefill_begin_reply_.session, prefill_begin_reply_.cached_chunks,
                    prefill_begin_reply_.total_chunks, prefill_begin_reply_.plan.meeting_point,
                    prefill_begin_reply_.plan.load_chunks, prefill_begin_reply_.plan.bidir_ms,
                    prefill_begin_reply_.plan.compute_only_ms);
      reply(prefill_begin_reply_);
      return Status::Ok();
    case Op::kPrefillProfile: {
      proto::PrefillProfileRequest req;
      TIERKV_RETURN_IF_ERROR(proto::decode(r, req));
      TIERKV_RETURN_IF_ERROR(prefill.set_profile(session_, req));
      reply(proto::CountReply{0});
      return Status::Ok();
    }
    case Op::kPrefillComputed:
      TIERKV_RETURN_IF_ERROR(proto::decode(r, prefill_computed_req_));
      TIERKV_RETURN_IF_ERROR(prefill.computed(session_, prefill_computed_req_, prefill_progress_));
      reply(prefill_progress_);
      return Status::Ok();
    case Op::kPrefillPoll: {
      TIERKV_RETURN_IF_ERROR(proto::decode(r, prefill_poll_req_));
      const uint64_t id = prefill_poll_req_.session;
      auto self = shared_from_this();
      auto now = prefill.poll(session_, prefill_poll_req_, prefill_progress_,
                              [this, self, id] { finish_wait(id); });
      if (!now.ok()) return now.status();
      if (*now) {
        reply(prefill_progress_);
        return Status::Ok();
      }
      waiting_ = true;
      wait_timer_.expires_after(std::chrono::microseconds(prefill_poll_req_.timeout_us));
      wait_timer_.async_wait([this, self, id](boost::system::error_code ec) {
        if (!ec) finish_wait(id);
      });
      return Status::Ok();
    }
    case Op::kPrefillEnd: {
      proto::PrefillEndRequest req;
      TIERKV_RETURN_IF_ERROR(proto::decode(r, req));
      proto::PrefillSummary summary;
      TIERKV_RETURN_IF_ERROR(prefill.end(session_, req, summary));
      spdlog::debug("client {} prefill session {} {}: {} handed over, {} loaded, {} computed, {} "
                    "failed; met at chunk {} (planned {}) after {} us",
                    session_, req.session, summary.cancelled ? "cancelled" : "ended",
                    summary.handed_over, summary.loaded, summary.computed, summary.failed,
                    summary.actual_meeting_point, summary.planned_meeting_point, summary.met_us);
      reply(summary);
      return Status::Ok();
    }
    default:
      return Status::Internal("unhandled prefill opcode");
  }
}

void Connection::finish_wait(uint64_t prefill_session) {
  if (!waiting_ || closed_) return;
  waiting_ = false;
  wait_timer_.cancel();
  Status s = server_.prefill().take(session_, prefill_session, prefill_progress_);
  if (!s.ok()) return fail(hdr_.op, hdr_.request_id, s, false);
  reply(prefill_progress_);
}

void Connection::close_prefill() {
  waiting_ = false;
  wait_timer_.cancel();
  const size_t cancelled = server_.prefill().close_client(session_);
  if (cancelled > 0) {
    spdlog::info("client {} (pid {}) left {} prefill sessions open; cancelled them", session_,
                 peer_.pid, cancelled);
  }
}

// --- GPU tier ------------------------------------------------------------------------------------

Status Connection::handle_gpu(Op op, wire::ByteReader& r) {
  auto& engine = server_.engine_;
  switch (op) {
    case Op::kGpuAttach: {
      TIERKV_RETURN_IF_ERROR(r.expect_end("gpu_attach"));
      proto::GpuAttachReply rep;
      TIERKV_RETURN_IF_ERROR(engine.gpu_attach(session_, rep));
      spdlog::info("client {} ({}, pid {}) opened the GPU pool", session_, name_, peer_.pid);
      reply(rep);
      return Status::Ok();
    }
    case Op::kGpuLoad: {
      TIERKV_RETURN_IF_ERROR(proto::decode(r, keys_req_));
      auto self = shared_from_this();
      engine.load_gpu(session_, keys_req_, [this, self](Status st, const proto::LoadReply& rep) {
        if (closed_) return;
        if (!st.ok()) return fail(hdr_.op, hdr_.request_id, st, false);
        reply(rep);
      });
      return Status::Ok();
    }
    case Op::kGpuRelease: {
      TIERKV_RETURN_IF_ERROR(proto::decode(r, slots_req_));
      proto::CountReply count;
      TIERKV_RETURN_IF_ERROR(engine.gpu_release(session_, slots_req_.slots, &count.count));
      reply(count);
      return Status::Ok();
    }
    default:
      return Status::Internal("unhandled GPU opcode");
  }
}

}  // namespace tierkv::daemon
