"""Co-scheduled prefill from Python (tierkv.PrefillSession) against a real tierkvd whose host reads
go through an emulated slow tier, so that the engine computes the front while the daemon loads the
back: every prefix chunk is covered exactly once and every delivered byte is verified."""

import numpy as np
import pytest

import tierkv
from conftest import LAYOUT, Daemon

pytestmark = pytest.mark.skipif(not tierkv.HAS_PREFILL,
                                reason="this libtierkv has no co-scheduled prefill (tierkv/prefill.h)")

CHUNK_TOKENS = LAYOUT["chunk_tokens"]
CHUNKS = 12


@pytest.fixture(scope="module")
def slow_daemon():
    # Host reads at 0.01 GB/s: about 0.2 ms per 2 KiB chunk, so loads are still in flight while
    # the engine computes.
    d = Daemon(extra_toml="[prefill]\nhost_read_throttle_GBps = 0.01\n"
                          "host_read_throttle_latency_us = 200.0\nqueue_depth = 2\n")
    yield d
    d.close()


@pytest.fixture(scope="module")
def pclient(slow_daemon):
    return tierkv.connect(slow_daemon.socket_path, name="pytest-prefill")


def cached_prompt(client, ns, seed):
    tokens = np.random.default_rng(seed).integers(0, 50_000, size=CHUNKS * CHUNK_TOKENS + 7,
                                                  dtype=np.uint32)
    kv = np.random.default_rng(seed).standard_normal(
        (CHUNKS, LAYOUT["layers"], 2, CHUNK_TOKENS, LAYOUT["kv_heads"], LAYOUT["head_dim"])
    ).astype(np.float16)
    assert client.store(ns, tokens, kv).written == CHUNKS
    return tokens, kv


def run_engine(session, kv):
    """The engine's loop, as prefill.h shows it; returns (loaded, computed) counts per chunk."""
    n = session.cached_chunks
    loaded, computed = [0] * n, [0] * n
    for _ in range(100_000):
        for i in session.take_ready():
            loaded[i] += 1
            np.testing.assert_array_equal(session.array(i), kv[i])  # zero-copy view, verified
            session.release(i)
        action, i = session.next()
        if action == "done":
            break
        if action == "compute":
            computed[i] += 1
            session.computed(i)
        else:
            assert action == "wait"
            session.wait(0.05)
    return loaded, computed


@pytest.mark.parametrize("meeting_point", [0, 5, CHUNKS, None])
def test_engine_loop_covers_the_prefix_exactly_once(pclient, meeting_point):
    ns = pclient.register_layout(**LAYOUT, tenant="prefill-%s" % meeting_point)
    tokens, kv = cached_prompt(pclient, ns, seed=CHUNKS + (meeting_point or 99))
    with pclient.begin_prefill(ns, tokens, meeting_point=meeting_point) as s:
        assert s.total_chunks == CHUNKS and s.cached_chunks == CHUNKS
        assert s.tiers == ["host"] * CHUNKS
        assert set(s.plan) >= {"meeting_point", "load_chunks", "compute_only_ms", "bidir_ms"}
        loaded, computed = run_engine(s, kv)
        assert s.met
    assert s.ended
    assert [a + b for a, b in zip(loaded, computed)] == [1] * CHUNKS
    if meeting_point is not None:
        assert loaded == [0] * meeting_point + [1] * (CHUNKS - meeting_point)
    summary = s.summary
    assert summary["met"] and not summary["cancelled"]
    assert summary["loaded"] + summary["handed_over"] + summary["computed"] == CHUNKS
    assert summary["computed"] == sum(computed)
    stats = pclient.stats()
    assert stats["prefill"]["sessions_met"] >= 1 and stats["prefill"]["wasted_loads"] == 0


def test_nothing_cached_is_done_at_once(pclient):
    ns = pclient.register_layout(**LAYOUT, tenant="prefill-empty")
    s = pclient.begin_prefill(ns, list(range(3 * CHUNK_TOKENS)))
    assert s.cached_chunks == 0 and s.total_chunks == 3
    assert s.next() == ("done", None)
    assert s.end()["chunks"] == 0


def test_views_hold_the_session_and_errors_are_clear(pclient):
    ns = pclient.register_layout(**LAYOUT, tenant="prefill-views")
    tokens, kv = cached_prompt(pclient, ns, seed=7)
    s = pclient.begin_prefill(ns, tokens, meeting_point=CHUNKS - 1)
    # Compute the front, then wait for the one loaded chunk.
    for i in range(CHUNKS - 1):
        assert s.next() == ("compute", i)
        s.computed(i)
    ready = []
    while not ready:
        ready = s.take_ready()
        if not ready:
            s.wait(0.05)
    assert ready == [CHUNKS - 1]
    with pytest.raises(tierkv.InvalidArgument, match="chunk 0 is not delivered"):
        s.chunk(0)
    view = s.chunk(CHUNKS - 1)
    assert view.readonly and view.tobytes() == kv[CHUNKS - 1].tobytes()
    with pytest.raises(BufferError, match="views of chunk"):
        s.release(CHUNKS - 1)
    with pytest.raises(BufferError, match="views"):
        s.end()
    del view
    s.release(CHUNKS - 1)
    assert s.next() == ("done", None)
    summary = s.end()
    assert summary["met"] and summary["computed"] == CHUNKS - 1
    with pytest.raises(tierkv.FailedPrecondition, match="ended"):
        s.poll()


def test_a_cancelled_session_says_so(pclient):
    ns = pclient.register_layout(**LAYOUT, tenant="prefill-cancel")
    tokens, _ = cached_prompt(pclient, ns, seed=8)
    with pytest.raises(RuntimeError, match="engine failed"):
        with pclient.begin_prefill(ns, tokens, meeting_point=4) as s:
            raise RuntimeError("engine failed")
    assert s.ended and s.summary is None
    assert pclient.stats()["prefill"]["sessions_cancelled"] >= 1
    assert pclient.stats()["read_leases"] == 0


def test_compute_profiles(pclient):
    ns = pclient.register_layout(**LAYOUT, tenant="prefill-profile")
    pclient.set_compute_profile(ns, 0.01, 1e-6)
    pclient.set_compute_profile_table(ns, CHUNK_TOKENS, [(0, 0.5), (1024, 0.7)])
    pclient.learn_compute_profile(ns)
    with pytest.raises(tierkv.InvalidArgument):
        pclient.set_compute_profile(ns, -1.0, 0.0)
