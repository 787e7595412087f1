// Co-scheduled prefill ("Cake") from Python: tierkv.PrefillSession over tierkv/prefill.h.
//
//   with client.begin_prefill(ns, tokens) as s:          # plan + first grant
//       while True:
//           for i in s.take_ready():                       # chunks the daemon loaded
//               scatter(i, s.array(i)); s.release(i)
//           action, i = s.next()
//           if action == "done": break                     # the fronts met
//           if action == "compute":
//               compute_chunk(i); s.computed(i)
//           else:
//               s.wait(0.005)                              # loads still coming
//   summary = s.summary                                    # set when the block ends the session
//
// Views of delivered chunks (chunk(i), array(i)) keep the session alive; release(i) and end()
// refuse (BufferError) while views of those chunks are alive, since the slots would go back to
// the daemon under them. Built only where libtierkv has tierkv/prefill.h.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "binding.h"

#if TIERKV_PYTHON_PREFILL

#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "tierkv/prefill.h"
#include "tierkv/prefill_protocol.h"

namespace tierkv::python {

namespace {

struct SessionBox {
  std::shared_ptr<PyClient> owner;
  Namespace ns;
  std::unique_ptr<PrefillSession> session;
  std::vector<uint32_t> live_views;  // per chunk: views alive (counted by ChunkBuffer)
  std::mutex mu;
};

struct PySession {
  std::shared_ptr<SessionBox> box;
  bool ended = false;
  py::object summary = py::none();

  SessionBox& open() {
    if (ended) throw StatusError(Status::FailedPrecondition("the prefill session has ended"));
    return *box;
  }
};

py::dict plan_dict(const proto::PrefillPlanInfo& p) {
  py::dict d;
  d["meeting_point"] = p.meeting_point;
  d["load_chunks"] = p.load_chunks;
  d["resident_chunks"] = p.resident_chunks;
  d["queue_depth"] = p.queue_depth;
  d["loading_helps"] = p.loading_helps != 0;
  d["compute_only_ms"] = p.compute_only_ms;
  d["load_only_ms"] = p.load_only_ms;
  d["bidir_ms"] = p.bidir_ms;
  return d;
}

py::dict summary_dict(const proto::PrefillSummary& s) {
  py::dict d;
  d["chunks"] = s.chunks;
  d["handed_over"] = s.handed_over;
  d["loaded"] = s.loaded;
  d["computed"] = s.computed;
  d["failed"] = s.failed;
  d["planned_meeting_point"] = s.planned_meeting_point;
  d["actual_meeting_point"] = s.actual_meeting_point;
  d["met"] = s.met != 0;
  d["cancelled"] = s.cancelled != 0;
  d["elapsed_us"] = s.elapsed_us;
  d["met_us"] = s.met_us;
  return d;
}

size_t live_total(const SessionBox& box) {
  size_t n = 0;
  for (uint32_t v : box.live_views) n += v;
  return n;
}

// Runs a session call that talks to the daemon with the GIL released.
template <typename Fn>
auto unlocked(SessionBox& box, Fn fn) {
  py::gil_scoped_release nogil;
  std::lock_guard lock(box.mu);
  return fn(*box.session);
}

void end_session(PySession& self, bool cancel) {
  if (self.ended) return;
  SessionBox& box = *self.box;
  if (const size_t live = live_total(box); live > 0) {
    throw py::buffer_error(std::to_string(live) +
                           " views of this session's chunks are still alive: drop them (del, "
                           "memoryview.release()) before end() or cancel()");
  }
  if (cancel) {
    const Status st = unlocked(box, [](PrefillSession& s) { return s.cancel(); });
    self.ended = true;
    check(st);
    return;
  }
  Result<proto::PrefillSummary> r = unlocked(box, [](PrefillSession& s) { return s.end(); });
  self.ended = true;
  self.summary = summary_dict(take(std::move(r)));
}

py::memoryview view_of(PySession& self, uint32_t i) {
  SessionBox& box = self.open();
  const std::span<const std::byte> c = box.session->chunk(i);
  if (c.empty()) {
    invalid_argument("chunk " + std::to_string(i) +
                     " is not delivered (not loaded yet, computed by the engine, or released)");
  }
  return chunk_view(self.box, const_cast<std::byte*>(c.data()), c.size(), false,
                    &box.live_views[i]);
}

}  // namespace

void bind_prefill(py::module_& m) {
  m.attr("HAS_PREFILL") = true;

  py::class_<PySession>(
      m, "PrefillSession",
      "A co-scheduled prefill of one prompt's cached prefix: the engine computes chunks from the "
      "front while tierkvd loads them from the back (see tierkv/prefill.h). Drive it from one "
      "thread with next() / computed() / wait() / take_ready(); as a context manager it ends the "
      "session (cancels it on an exception), and the end's summary is in .summary.")
      .def_property_readonly("total_chunks",
                             [](PySession& s) { return s.box->session->total_chunks(); })
      .def_property_readonly("cached_chunks",
                             [](PySession& s) { return s.box->session->cached_chunks(); })
      .def_property_readonly("tiers",
                             [](PySession& s) {
                               py::list out;
                               for (Tier t : s.box->session->tiers()) {
                                 out.append(std::string(proto::tier_name(t)));
                               }
                               return out;
                             })
      .def_property_readonly("plan", [](PySession& s) { return plan_dict(s.box->session->plan()); })
      .def_property_readonly(
          "meeting_point", [](PySession& s) { return s.box->session->meeting_point(); },
          "The planned meeting point: the engine computes [0, m), tierkvd "
          "loads [m, cached_chunks).")
      .def_property_readonly("met", [](PySession& s) { return s.box->session->met(); })
      .def_property_readonly("ended", [](PySession& s) { return s.ended; })
      .def_readonly("summary", &PySession::summary,
                    "The end()'s summary as a dict (None until the session ended).")
      .def(
          "next",
          [](PySession& s) -> py::tuple {
            const PrefillSession::Next n = s.open().session->next();
            switch (n.action) {
              case PrefillSession::Action::kCompute:
                return py::make_tuple("compute", n.chunk);
              case PrefillSession::Action::kWait:
                return py::make_tuple("wait", n.chunk);
              case PrefillSession::Action::kDone:
                break;
            }
            return py::make_tuple("done", py::none());
          },
          "What to do next: ('compute', i), ('wait', i) or ('done', None).")
      .def(
          "computed",
          [](PySession& s, uint32_t chunk) {
            SessionBox& box = s.open();
            check(unlocked(box, [chunk](PrefillSession& p) { return p.computed(chunk); }));
          },
          py::arg("chunk"), "Reports chunk `chunk` computed by the engine; applies the news.")
      .def(
          "poll",
          [](PySession& s) {
            SessionBox& box = s.open();
            check(unlocked(box, [](PrefillSession& p) { return p.poll(); }));
          },
          "Fetches news without waiting.")
      .def(
          "wait",
          [](PySession& s, double timeout) {
            SessionBox& box = s.open();
            if (!(timeout >= 0)) invalid_argument("timeout must be >= 0 seconds");
            const auto us = std::chrono::microseconds(
                static_cast<int64_t>(std::min(timeout * 1e6, double{proto::kMaxPrefillWaitUs})));
            check(unlocked(box, [us](PrefillSession& p) { return p.wait_ready(us); }));
          },
          py::arg("timeout") = 0.005,
          "Waits up to `timeout` seconds (at most 1) for news; the GIL is released meanwhile.")
      .def(
          "take_ready",
          [](PySession& s) {
            SessionBox& box = s.open();
            const std::span<const uint32_t> ready = box.session->take_ready();
            return std::vector<uint32_t>(ready.begin(), ready.end());
          },
          "Chunks delivered since the last call, in arrival order.")
      .def("chunk", &view_of, py::arg("i"),
           "A delivered chunk's bytes: a read-only memoryview of shared memory (no copy).")
      .def(
          "array",
          [](PySession& s, uint32_t i) { return chunk_array(view_of(s, i), s.box->ns.layout); },
          py::arg("i"), "A delivered chunk as a read-only numpy array in the chunk shape.")
      .def(
          "ready_info",
          [](PySession& s, uint32_t i) -> py::object {
            const proto::PrefillReady* r = s.open().session->ready_info(i);
            if (r == nullptr) return py::none();
            py::dict d;
            d["submitted_us"] = r->submitted_us;
            d["completed_us"] = r->completed_us;
            return d;
          },
          py::arg("i"), "When the daemon submitted and finished chunk i's read (us since begin).")
      .def(
          "load_failed", [](PySession& s, uint32_t i) { return s.open().session->load_failed(i); },
          py::arg("i"))
      .def(
          "release",
          [](PySession& s, uint32_t i) {
            SessionBox& box = s.open();
            if (i < box.live_views.size() && box.live_views[i] > 0) {
              throw py::buffer_error(std::to_string(box.live_views[i]) + " views of chunk " +
                                     std::to_string(i) +
                                     " are still alive: drop them before release()");
            }
            box.session->release(i);
          },
          py::arg("i"), "Done reading chunk i: its slot goes back with the next request.")
      .def(
          "end",
          [](PySession& s) {
            end_session(s, false);
            return s.summary;
          },
          "Ends the session (cancelled if the prefix is not covered), releases every chunk, and "
          "returns the summary dict.")
      .def("cancel", [](PySession& s) { end_session(s, true); })
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__",
           [](PySession& s, py::handle type, py::handle, py::handle) {
             // With views still alive the session is cancelled when the last one goes.
             if (s.ended || live_total(*s.box) > 0) return false;
             end_session(s, !type.is_none());
             return false;
           })
      .def("__repr__", [](PySession& s) {
        return "<tierkv.PrefillSession " + std::to_string(s.box->session->cached_chunks()) + "/" +
               std::to_string(s.box->session->total_chunks()) + " chunks cached" +
               (s.ended ? ", ended>" : ">");
      });

  py::class_<PyClient, std::shared_ptr<PyClient>> client =
      py::reinterpret_borrow<py::class_<PyClient, std::shared_ptr<PyClient>>>(m.attr("Client"));
  client
      .def(
          "begin_prefill",
          [](PyClient& c, const Namespace& ns, py::handle tokens_obj, uint32_t compute_lookahead,
             py::object meeting_point, py::object prompt_tokens) {
            Tokens tokens(tokens_obj);
            PrefillOptions options;
            options.compute_lookahead = compute_lookahead;
            if (!meeting_point.is_none()) options.meeting_point = meeting_point.cast<uint32_t>();
            if (!prompt_tokens.is_none()) options.prompt_tokens = prompt_tokens.cast<uint64_t>();
            Result<std::unique_ptr<PrefillSession>> r = Status::Internal("not run");
            {
              py::gil_scoped_release nogil;
              r = PrefillSession::begin(c.client, ns, tokens.span(), options);
            }
            std::unique_ptr<PrefillSession> session = take(std::move(r));
            auto box = std::unique_ptr<SessionBox>(
                new SessionBox{c.shared_from_this(), ns, nullptr, {}, {}});
            box->live_views.assign(session->cached_chunks(), 0);
            box->session = std::move(session);
            PySession out;
            out.box = make_box(std::move(box));
            return out;
          },
          py::arg("ns"), py::arg("tokens"), py::arg("compute_lookahead") = 1,
          py::arg("meeting_point") = py::none(), py::arg("prompt_tokens") = py::none(),
          "Starts a co-scheduled prefill of the prompt's cached prefix: a PrefillSession. "
          "compute_lookahead: chunks the engine may hold granted at once; meeting_point: None "
          "lets the daemon plan, an index fixes it (the daemon loads from there on).")
      .def(
          "set_compute_profile",
          [](PyClient& c, const Namespace& ns, double a_ms_per_token, double b_ms_per_token2) {
            Status st;
            {
              py::gil_scoped_release nogil;
              st = set_compute_profile(*c.client, ns.id, a_ms_per_token, b_ms_per_token2);
            }
            check(st);
          },
          py::arg("ns"), py::arg("a_ms_per_token"), py::arg("b_ms_per_token2"),
          "Tells the planner this engine's prefill cost: c tokens after a prefix of L take "
          "a*c + b*c*(L + c/2) ms.")
      .def(
          "set_compute_profile_table",
          [](PyClient& c, const Namespace& ns, uint32_t table_chunk_tokens,
             const std::vector<std::pair<double, double>>& points) {
            std::vector<proto::ProfilePoint> table;
            table.reserve(points.size());
            for (const auto& [prefix, ms] : points) table.push_back({prefix, ms});
            Status st;
            {
              py::gil_scoped_release nogil;
              st = set_compute_profile_table(*c.client, ns.id, table_chunk_tokens, table);
            }
            check(st);
          },
          py::arg("ns"), py::arg("table_chunk_tokens"), py::arg("points"),
          "Measured profile: [(prefix_tokens, chunk_ms), ...] for chunks of table_chunk_tokens.")
      .def(
          "learn_compute_profile",
          [](PyClient& c, const Namespace& ns) {
            Status st;
            {
              py::gil_scoped_release nogil;
              st = learn_compute_profile(*c.client, ns.id);
            }
            check(st);
          },
          py::arg("ns"), "Forgets any registered profile; the planner learns from computed().");
}

}  // namespace tierkv::python

#else  // !TIERKV_PYTHON_PREFILL

namespace tierkv::python {
void bind_prefill(py::module_& m) { m.attr("HAS_PREFILL") = false; }
}  // namespace tierkv::python

#endif
