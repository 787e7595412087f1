// The real tierkvd process with real clients: concurrent client processes, malformed frames,
// clients killed mid-put, refused users.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "support/process.h"
#include "support/test_daemon.h"
#include "tierkv/client.h"
#include "tierkv/protocol.h"

namespace tierkv {
namespace {

using testing::TestDaemon;
using testing::wait_until;
using namespace std::chrono_literals;

// 16 MiB of host tier in 4 MiB slabs: small enough that the tests evict.
std::unique_ptr<TestDaemon> start_small_daemon() {
  testing::TestDaemonOptions o;
  o.host_capacity = "16MiB";
  o.extra_toml = "slab_size = \"4MiB\"\nprefault = false\n";
  auto d = TestDaemon::start(o);
  EXPECT_TRUE(d.ok()) << d.status().to_string();
  return d.ok() ? std::move(d).value() : nullptr;
}

std::string test_client() { return std::string(TIERKV_BINARY_DIR) + "/tests/daemon/tierkv_test_client"; }

// A hand-driven connection for sending frames the client library never would.
class RawConnection {
 public:
  explicit RawConnection(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~RawConnection() { ::close(fd_); }

  bool connected() const { return connected_; }
  void send_bytes(const std::vector<uint8_t>& b) {
    ASSERT_EQ(::send(fd_, b.data(), b.size(), MSG_NOSIGNAL), static_cast<ssize_t>(b.size()));
  }
  template <typename Msg>
  void send(proto::Op op, const Msg& msg, uint32_t id = 1) {
    std::vector<uint8_t> buf;
    proto::begin_frame(buf, op, id, StatusCode::kOk);
    wire::ByteWriter w(buf);
    proto::encode(w, msg);
    ASSERT_TRUE(proto::end_frame(buf).ok());
    send_bytes(buf);
  }
  // Reads one reply frame; a Status with the reply's code and message, or Unavailable on EOF.
  Status read_reply(std::vector<uint8_t>* payload = nullptr) {
    std::array<uint8_t, proto::kHeaderBytes> h{};
    if (!read_exact(h.data(), h.size())) return Status::Unavailable("connection closed");
    auto hdr = proto::parse_header(h);
    if (!hdr.ok()) return hdr.status();
    std::vector<uint8_t> body(hdr->payload_bytes);
    if (!read_exact(body.data(), body.size())) return Status::Unavailable("connection closed");
    if (hdr->status != 0) return proto::decode_error(static_cast<StatusCode>(hdr->status), body);
    if (payload != nullptr) *payload = std::move(body);
    return Status::Ok();
  }
  void hello() {
    send(proto::Op::kHello, proto::HelloRequest{proto::kProtocolVersion, "raw"});
    // The hello reply carries the pool's fd; recvmsg takes it (and we close it).
    std::array<uint8_t, 512> buf{};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    iovec iov{buf.data(), proto::kHeaderBytes};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof(control);
    ASSERT_EQ(::recvmsg(fd_, &m, MSG_WAITALL), static_cast<ssize_t>(proto::kHeaderBytes));
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    ASSERT_NE(c, nullptr) << "hello reply without a file descriptor";
    int fd = -1;
    std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
    ::close(fd);
    proto::FrameHeader h;
    std::memcpy(&h, buf.data(), sizeof(h));
    ASSERT_EQ(h.status, 0);
    std::vector<uint8_t> body(h.payload_bytes);
    ASSERT_TRUE(read_exact(body.data(), body.size()));
  }
  // True when the daemon has closed its end.
  bool closed_by_peer() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) return false;
    char c;
    return ::recv(fd_, &c, 1, 0) == 0;
  }

 private:
  bool read_exact(uint8_t* p, size_t n) {
    while (n > 0) {
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 10000) <= 0) return false;
      const ssize_t r = ::recv(fd_, p, n, 0);
      if (r <= 0) return false;
      p += r;
      n -= static_cast<size_t>(r);
    }
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
};

Layout small_layout() { return Layout{2, 2, 64, DType::kBFloat16, 64}; }  // 64 KiB chunks

Result<proto::TierStats> host_stats(Client& c) {
  auto s = c.stats();
  if (!s.ok()) return s.status();
  for (const auto& t : s->tiers) {
    if (t.tier == proto::Tier::kHost) return t;
  }
  return Status::NotFound("no host tier");
}

TEST(DaemonIntegrationTest, FourClientProcessesShareOverlappingPromptsAndEveryByteVerifies) {
  auto daemon = start_small_daemon();
  ASSERT_NE(daemon, nullptr);
  std::vector<testing::ProcessResult> results(4);
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&, i] {
      results[i] = testing::run_process(
          {test_client(), "stress", daemon->socket_path(), std::to_string(100 + i), "150"}, 120s);
    });
  }
  for (auto& t : clients) t.join();
  size_t total_verified = 0;
  for (const auto& r : results) {
    EXPECT_TRUE(r.ok()) << r.describe();
    size_t verified = 0, wrote = 0;
    ASSERT_EQ(std::sscanf(r.out.c_str(), "verified %zu chunks, wrote %zu", &verified, &wrote), 2)
        << r.describe();
    total_verified += verified;
  }
  // The clients' prompts overlap, so most chunks are found and loaded rather than rewritten; the
  // small pool also forces eviction while others hold leases.
  EXPECT_GT(total_verified, 1000u);
  auto c = Client::connect({daemon->socket_path(), "checker", false});
  ASSERT_TRUE(c.ok());
  auto st = (*c)->stats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->read_leases, 0u);
  EXPECT_EQ(st->pending_writes, 0u);
  auto host = host_stats(**c);
  ASSERT_TRUE(host.ok());
  EXPECT_GT(host->evictions, 0u) << "the test meant to exercise eviction";
  EXPECT_GT(host->hits, 0u);
}

TEST(DaemonIntegrationTest, MalformedFramesGetClearErrorsWhileAnotherClientIsServed) {
  auto daemon = start_small_daemon();
  ASSERT_NE(daemon, nullptr);

  // A well-behaved client stores and loads in a loop the whole time.
  std::atomic<bool> stop{false};
  std::atomic<int> good_rounds{0};
  std::atomic<bool> good_failed{false};
  std::thread good([&] {
    auto c = Client::connect({daemon->socket_path(), "good", false});
    if (!c.ok()) {
      good_failed = true;
      return;
    }
    auto ns = (*c)->register_layout(small_layout(), "good");
    std::vector<TokenId> tokens(256);
    std::vector<std::byte> kv(4 * ns->chunk_bytes());
    for (uint32_t r = 0; !stop || good_rounds < 20; ++r) {
      for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = r * 1000 + i;
      for (size_t i = 0; i < kv.size(); ++i) kv[i] = std::byte(r + i);
      auto p = (*c)->put(*ns, tokens, kv);
      auto l = (*c)->load(*ns, tokens);
      if (!p.ok() || !l.ok() || l->chunks() != 4 ||
          std::memcmp(l->chunk(3).data(), kv.data() + 3 * ns->chunk_bytes(), ns->chunk_bytes()) != 0) {
        good_failed = true;
        return;
      }
      ++good_rounds;
    }
  });

  auto registered = [&](RawConnection& raw) {
    raw.send(proto::Op::kRegisterLayout, proto::RegisterLayoutRequest{small_layout(), "bad", ""});
    std::vector<uint8_t> payload;
    EXPECT_TRUE(raw.read_reply(&payload).ok());
    wire::ByteReader r(payload);
    proto::RegisterLayoutReply rep;
    EXPECT_TRUE(proto::decode(r, rep).ok());
    return rep;
  };

  {
    RawConnection raw(daemon->socket_path());
    ASSERT_TRUE(raw.connected());
    // A request before the handshake.
    raw.send(proto::Op::kStats, proto::CountReply{});
    Status s = raw.read_reply();
    EXPECT_EQ(s.code(), StatusCode::kProtocolError);
    EXPECT_NE(s.message().find("hello"), std::string::npos) << s.message();
  }
  {
    RawConnection raw(daemon->socket_path());
    raw.send(proto::Op::kHello, proto::HelloRequest{99, "future"});
    Status s = raw.read_reply();
    EXPECT_EQ(s.code(), StatusCode::kProtocolError);
    EXPECT_NE(s.message().find("version 99"), std::string::npos) << s.message();
  }

  RawConnection raw(daemon->socket_path());
  raw.hello();
  const proto::RegisterLayoutReply ns = registered(raw);
  const uint64_t chunk_bytes = ns.layout.chunk_bytes();

  // Unknown opcode: an error, and the connection stays usable.
  {
    std::vector<uint8_t> buf;
    proto::begin_frame(buf, static_cast<proto::Op>(4242), 5, StatusCode::kOk);
    ASSERT_TRUE(proto::end_frame(buf).ok());
    raw.send_bytes(buf);
    Status s = raw.read_reply();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("unknown opcode 4242"), std::string::npos) << s.message();
  }
  // Truncated payload: a lookup whose key array claims more keys than the frame holds.
  {
    std::vector<uint8_t> buf;
    proto::begin_frame(buf, proto::Op::kLookup, 6, StatusCode::kOk);
    wire::ByteWriter w(buf);
    w.put<uint64_t>(ns.ns);
    w.put<uint32_t>(10);  // ten keys announced, one sent
    w.put(ChunkKey{1, 2});
    ASSERT_TRUE(proto::end_frame(buf).ok());
    raw.send_bytes(buf);
    Status s = raw.read_reply();
    EXPECT_EQ(s.code(), StatusCode::kProtocolError);
    EXPECT_NE(s.message().find("truncated payload: field 'keys'"), std::string::npos) << s.message();
  }
  // Wrong layout sizes.
  {
    raw.send(proto::Op::kPutBegin, proto::PutBeginRequest{ns.ns, kRootKey, chunk_bytes / 2, {ChunkKey{1, 1}}});
    Status s = raw.read_reply();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("chunk_bytes = " + std::to_string(chunk_bytes / 2)), std::string::npos)
        << s.message();
    raw.send(proto::Op::kRegisterLayout,
             proto::RegisterLayoutRequest{Layout{2, 0, 64, DType::kBFloat16, 64}, "bad", ""});
    s = raw.read_reply();
    EXPECT_NE(s.message().find("num_kv_heads"), std::string::npos) << s.message();
  }
  // Out-of-range slot index.
  {
    raw.send(proto::Op::kRelease, proto::SlotsRequest{{0x7fffffff}});
    Status s = raw.read_reply();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("slots[0] = 2147483647 is out of range"), std::string::npos) << s.message();
  }
  // Commit of a slot this client never leased (another client's slot).
  {
    auto other = Client::connect({daemon->socket_path(), "other", false});
    ASSERT_TRUE(other.ok());
    auto other_ns = (*other)->register_layout(small_layout(), "bad");
    ASSERT_TRUE(other_ns.ok());
    std::vector<TokenId> t(64, 5);
    auto lease = (*other)->begin_put(*other_ns, t);
    ASSERT_TRUE(lease.ok());
    ASSERT_TRUE(lease->needs_write(0));
    proto::PutBeginRequest probe{ns.ns, kRootKey, chunk_bytes, Client::keys(*other_ns, t)};
    raw.send(proto::Op::kPutBegin, probe);
    std::vector<uint8_t> payload;
    ASSERT_TRUE(raw.read_reply(&payload).ok());
    wire::ByteReader r(payload);
    proto::PutBeginReply rep;
    ASSERT_TRUE(proto::decode(r, rep).ok());
    EXPECT_EQ(rep.slots[0].disposition, proto::PutDisposition::kInProgress);
    // Guess the other client's slot: try every slot id the tiny pool has.
    int refused = 0;
    for (uint32_t slot = 0; slot < 256; ++slot) {
      raw.send(proto::Op::kPutCommit, proto::SlotsRequest{{slot}});
      Status s = raw.read_reply();
      if (s.code() == StatusCode::kFailedPrecondition) ++refused;
      EXPECT_FALSE(s.ok()) << "slot " << slot << " was committed by a client that never leased it";
    }
    EXPECT_EQ(refused, 256);
    ASSERT_TRUE(lease->abort().ok());
  }
  // Oversized length: an error, then the daemon hangs up (the stream cannot be resynchronized).
  {
    proto::FrameHeader h;
    h.payload_bytes = proto::kMaxPayloadBytes + 1;
    h.op = static_cast<uint16_t>(proto::Op::kLookup);
    std::vector<uint8_t> buf(sizeof(h));
    std::memcpy(buf.data(), &h, sizeof(h));
    raw.send_bytes(buf);
    Status s = raw.read_reply();
    EXPECT_EQ(s.code(), StatusCode::kProtocolError);
    EXPECT_NE(s.message().find("exceeds the limit"), std::string::npos) << s.message();
    EXPECT_TRUE(raw.closed_by_peer());
  }
  // A frame cut off in the middle, then the client vanishes.
  {
    RawConnection cut(daemon->socket_path());
    cut.hello();
    proto::FrameHeader h;
    h.payload_bytes = 100;
    h.op = static_cast<uint16_t>(proto::Op::kLookup);
    std::vector<uint8_t> buf(sizeof(h) + 10);
    std::memcpy(buf.data(), &h, sizeof(h));
    cut.send_bytes(buf);
  }

  stop = true;
  good.join();
  EXPECT_FALSE(good_failed) << "the well-behaved client was disturbed";
  EXPECT_GE(good_rounds.load(), 20);
  // The daemon is still alive and serving.
  auto c = Client::connect({daemon->socket_path(), "after", false});
  ASSERT_TRUE(c.ok());
  auto st = (*c)->stats();
  ASSERT_TRUE(st.ok());
  EXPECT_GE(st->request_errors, 260u);
  EXPECT_EQ(::kill(daemon->pid(), 0), 0);
}

TEST(DaemonIntegrationTest, ClientKilledMidPutLeavesNoPartialChunkAndItsLeasesAreReclaimed) {
  auto daemon = start_small_daemon();
  ASSERT_NE(daemon, nullptr);
  testing::TempDir logs;
  auto victim = testing::Subprocess::spawn({test_client(), "hang-in-put", daemon->socket_path()},
                                           logs.file("victim.log"));
  ASSERT_TRUE(victim.ok()) << victim.status().to_string();
  ASSERT_TRUE(wait_until([&] { return testing::read_file(logs.file("victim.log")) == "READY\n"; }, 30s))
      << testing::read_file(logs.file("victim.log"));

  auto c = Client::connect({daemon->socket_path(), "observer", false});
  ASSERT_TRUE(c.ok());
  auto before = (*c)->stats();
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before->read_leases, 4u);
  EXPECT_EQ(before->pending_writes, 4u);
  const uint64_t used_before = host_stats(**c)->used_bytes;

  ASSERT_EQ(::kill(victim->pid(), SIGKILL), 0);
  ASSERT_TRUE(victim->wait_exit(10s));
  EXPECT_TRUE(WIFSIGNALED(victim->wait_status()) && WTERMSIG(victim->wait_status()) == SIGKILL);
  ASSERT_TRUE(wait_until([&] {
    auto s = (*c)->stats();
    return s.ok() && s->read_leases == 0 && s->pending_writes == 0;
  }, 20s)) << daemon->log();

  auto ns = (*c)->register_layout(small_layout(), "integration");
  ASSERT_TRUE(ns.ok());
  std::vector<TokenId> pending(4 * 64), stored(4 * 64);
  for (size_t i = 0; i < pending.size(); ++i) pending[i] = 8000 + i;
  for (size_t i = 0; i < stored.size(); ++i) stored[i] = 7000 + i;
  EXPECT_EQ((*c)->lookup(*ns, pending)->cached_chunks, 0u) << "a half-written chunk is visible";
  EXPECT_EQ((*c)->lookup(*ns, stored)->cached_chunks, 4u) << "committed chunks must survive";
  EXPECT_EQ(host_stats(**c)->used_bytes, used_before - 4 * ns->chunk_bytes());
  EXPECT_NE(daemon->log().find("reclaimed 4 read leases, discarded 4 uncommitted chunks"),
            std::string::npos)
      << daemon->log();
  // The victim's slots are usable again: the same prompt can now be stored by someone else.
  std::vector<std::byte> kv(4 * ns->chunk_bytes(), std::byte{3});
  auto put = (*c)->put(*ns, pending, kv);
  ASSERT_TRUE(put.ok());
  EXPECT_EQ(put->written, 4u);
}

TEST(DaemonIntegrationTest, UsersNotAllowedAreRefusedWithAReason) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another uid";
  auto daemon = start_small_daemon();
  ASSERT_NE(daemon, nullptr);
  ASSERT_EQ(::chmod(daemon->dir().c_str(), 0755), 0);  // let the other user reach the socket
  const pid_t pid = ::fork();
  if (pid == 0) {
    // As uid 65534 (nobody): connect must fail with a permission error naming the uid.
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
    auto c = Client::connect({daemon->socket_path(), "nobody", false});
    if (c.ok()) ::_exit(1);
    const bool named = c.status().code() == StatusCode::kPermissionDenied &&
                       c.status().message().find("uid 65534") != std::string::npos;
    ::_exit(named ? 0 : 2);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << daemon->log();
}

TEST(DaemonIntegrationTest, SecondDaemonOnTheSameSocketRefusesToStart) {
  auto daemon = start_small_daemon();
  ASSERT_NE(daemon, nullptr);
  const auto second = testing::run_process(
      {TestDaemon::binary(), "--socket", daemon->socket_path(), "--config", daemon->dir() + "/c.toml"},
      30s);
  EXPECT_EQ(second.exit_code, 1) << second.describe();
  EXPECT_NE((second.out + second.err).find("already serving"), std::string::npos) << second.describe();
}

TEST(DaemonIntegrationTest, PutLeaseWriteCopiesWholeChunksAndRejectsBadCalls) {
  auto daemon = start_small_daemon();
  ASSERT_NE(daemon, nullptr);
  auto c = Client::connect({daemon->socket_path(), "write-test", false});
  ASSERT_TRUE(c.ok());
  auto ns = (*c)->register_layout(Layout{2, 2, 64, DType::kBFloat16, 64}, "write");
  ASSERT_TRUE(ns.ok());
  std::vector<TokenId> tokens(3 * 64);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = 500 + i;
  std::vector<std::byte> kv(3 * ns->chunk_bytes());
  for (size_t i = 0; i < kv.size(); ++i) kv[i] = static_cast<std::byte>(i * 7 + 3);
  auto put = (*c)->begin_put(*ns, tokens);
  ASSERT_TRUE(put.ok());
  const auto cb = ns->chunk_bytes();
  EXPECT_EQ(put->write(0, std::span(kv).first(cb - 1)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(put->write(3, std::span(kv).first(cb)).code(), StatusCode::kInvalidArgument);
  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(put->write(i, std::span(kv).subspan(i * cb, cb)).ok());
  ASSERT_TRUE(put->commit().ok());
  auto load = (*c)->load(*ns, tokens);
  ASSERT_TRUE(load.ok());
  ASSERT_EQ(load->chunks(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(std::memcmp(load->chunk(i).data(), kv.data() + i * cb, cb), 0) << "chunk " << i;
  }
  // A second put of the same prompt has nothing to write: write() says so.
  auto again = (*c)->begin_put(*ns, tokens);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->write(0, std::span(kv).first(cb)).code(), StatusCode::kFailedPrecondition);
}

TEST(DaemonIntegrationTest, SigtermStopsCleanlyAndRemovesTheSocket) {
  auto daemon = start_small_daemon();
  ASSERT_NE(daemon, nullptr);
  const std::string socket = daemon->socket_path();
  const int status = daemon->stop();  // SIGTERM, then waits
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << daemon->log();
  EXPECT_NE(::access(socket.c_str(), F_OK), 0) << "socket file left behind";
  EXPECT_NE(daemon->log().find("stopped after"), std::string::npos) << daemon->log();
}

}  // namespace
}  // namespace tierkv
