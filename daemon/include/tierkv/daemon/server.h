// Server: tierkvd's Unix-socket front end. Accepts clients, checks their uid (SO_PEERCRED),
// performs the version handshake (passing the host pool's memfd), and turns each request frame
// into a CacheEngine call and one reply frame.
//
// Threads: runs on the io_context's single thread, which also owns the CacheEngine; no locks.
// Each connection is a session that reads a frame, answers it, and reads the next. Bad input gets
// an error reply naming what was wrong; only a frame that cannot be delimited (oversized or
// malformed header) closes the connection. A connection that closes for any reason has its leases
// reclaimed and its uncommitted chunks discarded.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <chrono>
#include <cstdint>
#include <memory>

#include "tierkv/daemon/config.h"
#include "tierkv/scheduler/cache_engine.h"
#include "tierkv/scheduler/prefill_service.h"

namespace tierkv::daemon {

class Connection;
class AsioClock;

class Server {
 public:
  Server(boost::asio::io_context& io, const DaemonConfig& config, scheduler::CacheEngine& engine);
  ~Server();

  // Creates the socket's directory if needed, refuses to start if another daemon serves the path,
  // removes a stale socket file, binds and listens.
  Status listen();
  // Stops accepting, closes every connection (reclaiming their leases), removes the socket file.
  void stop();

  uint64_t requests() const { return requests_; }
  uint64_t request_errors() const { return request_errors_; }
  size_t connections() const { return connections_; }
  scheduler::PrefillService& prefill() { return *prefill_; }

 private:
  friend class Connection;
  void accept_next();
  void watch_io();
  void watch_gpu();
  bool uid_allowed(uint32_t uid) const;
  void fill_stats(proto::StatsReply& stats) const;

  boost::asio::io_context& io_;
  const DaemonConfig& config_;
  scheduler::CacheEngine& engine_;
  // Co-scheduled prefill sessions, on timers of the server thread (declared in this order: the
  // service goes before the clock it runs on).
  std::unique_ptr<AsioClock> clock_;
  std::unique_ptr<scheduler::PrefillService> prefill_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  boost::asio::posix::stream_descriptor io_watch_;
  boost::asio::posix::stream_descriptor gpu_watch_;  // GPU tier copy completions
  std::chrono::steady_clock::time_point started_;
  std::vector<std::weak_ptr<Connection>> live_;
  bool listening_ = false;
  size_t connections_ = 0;
  uint64_t requests_ = 0;
  uint64_t request_errors_ = 0;
};

}  // namespace tierkv::daemon
