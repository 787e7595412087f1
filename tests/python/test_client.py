"""The tierkv Python module against a real tierkvd: store / lookup / load round trips with numpy
arrays (bytes verified), zero-copy views of shared memory, lease lifetimes, errors."""

import array
import threading

import numpy as np
import pytest

import tierkv
from conftest import LAYOUT

CHUNK_TOKENS = LAYOUT["chunk_tokens"]
CHUNK_SHAPE = (LAYOUT["layers"], 2, CHUNK_TOKENS, LAYOUT["kv_heads"], LAYOUT["head_dim"])


def prompt(n_tokens, seed):
    return np.random.default_rng(seed).integers(0, 50_000, size=n_tokens, dtype=np.uint32)


def kv_for(n_chunks, seed):
    """A prompt's KV in the chunk layout: [chunks, layers, 2, chunk_tokens, kv_heads, head_dim]."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_chunks,) + CHUNK_SHAPE).astype(np.float16)


def read_leases(client):
    return client.stats()["read_leases"]


# --- connect and namespaces -----------------------------------------------------------------------


def test_connect_to_missing_daemon_raises_unavailable(tmp_path):
    with pytest.raises(tierkv.Unavailable) as e:
        tierkv.connect(str(tmp_path / "nobody.sock"))
    assert e.value.code == "Unavailable"
    assert "nobody.sock" in e.value.message
    assert isinstance(e.value, tierkv.Error) and isinstance(e.value, ConnectionError)


def test_client_properties(client, daemon):
    assert client.socket_path == daemon.socket_path
    assert client.default_chunk_tokens == CHUNK_TOKENS
    assert client.daemon_version
    assert tierkv.__version__


def test_register_layout_resolves_chunk_tokens(client):
    ns = client.register_layout(layers=4, kv_heads=2, head_dim=64, dtype="bf16", tenant="a")
    assert ns.chunk_tokens == CHUNK_TOKENS  # the daemon's default
    assert (ns.layers, ns.kv_heads, ns.head_dim, ns.dtype) == (4, 2, 64, "bf16")
    assert ns.bytes_per_token == 2 * 4 * 2 * 64 * 2
    assert ns.chunk_bytes == ns.bytes_per_token * CHUNK_TOKENS
    assert ns.chunk_shape == (4, 2, CHUNK_TOKENS, 2, 64)
    assert ns.numpy_dtype == "uint16"
    assert ns.tenant == "a"
    # Registering again finds the same namespace; another tenant or salt is another one.
    assert client.register_layout(layers=4, kv_heads=2, head_dim=64, dtype="bf16", tenant="a") == ns
    other = client.register_layout(layers=4, kv_heads=2, head_dim=64, dtype="bf16", tenant="b")
    salted = client.register_layout(layers=4, kv_heads=2, head_dim=64, dtype="bf16", tenant="a",
                                    salt="s")
    assert len({ns.id, other.id, salted.id}) == 3


def test_bad_layouts_raise_invalid_argument(client):
    with pytest.raises(tierkv.InvalidArgument) as e:
        client.register_layout(layers=2, kv_heads=2, head_dim=8, dtype="fp64")
    assert "fp64" in str(e.value) and e.value.code == "InvalidArgument"
    with pytest.raises(ValueError, match="num_layers"):  # InvalidArgument is a ValueError
        client.register_layout(layers=0, kv_heads=2, head_dim=8)
    with pytest.raises(tierkv.InvalidArgument, match="head_dim"):
        client.register_layout(layers=2, kv_heads=2, head_dim=-1)
    with pytest.raises(tierkv.InvalidArgument, match="kv_heads"):
        client.register_layout(layers=2, kv_heads=100_000, head_dim=8)


def test_namespaces_lists_registered(client, ns):
    tokens = prompt(2 * CHUNK_TOKENS, seed=1)
    client.store(ns, tokens, kv_for(2, seed=1))
    found = [n for n in client.namespaces() if n["namespace"] == ns]
    assert len(found) == 1
    assert found[0]["chunks"] == 2 and found[0]["bytes"] == 2 * ns.chunk_bytes


# --- keys and tokens --------------------------------------------------------------------------------


def test_keys_name_prefixes(client, ns):
    tokens = prompt(3 * CHUNK_TOKENS + 5, seed=2)
    keys = ns.keys(tokens)
    assert len(keys) == 3 and ns.chunks(tokens) == 3  # the partial chunk gets no key
    assert all(len(k) == 32 and int(k, 16) >= 0 for k in keys)
    assert client.keys(ns, tokens) == keys
    assert ns.keys(tokens[: 2 * CHUNK_TOKENS]) == keys[:2]  # a key names its whole prefix
    changed = tokens.copy()
    changed[CHUNK_TOKENS] += 1  # chunk 1 differs: keys 1 and 2 change, key 0 does not
    k2 = ns.keys(changed)
    assert k2[0] == keys[0] and k2[1] != keys[1] and k2[2] != keys[2]
    other = client.register_layout(**dict(LAYOUT, tenant="someone-else"))
    assert other.keys(tokens)[0] != keys[0]


def test_token_containers_agree(ns):
    tokens = prompt(2 * CHUNK_TOKENS, seed=3)
    want = ns.keys(tokens)
    as_list = [int(t) for t in tokens]
    for variant in (as_list, tuple(as_list), tokens.astype(np.int32), tokens.astype(np.int64),
                    tokens.astype(np.uint64), array.array("I", as_list), array.array("q", as_list),
                    tokens[::-1][::-1]):
        assert ns.keys(variant) == want, type(variant)
    # Strided views are read element by element.
    doubled = np.repeat(tokens, 2)[::2]
    assert ns.keys(doubled) == want


def test_bad_tokens(ns):
    with pytest.raises(tierkv.InvalidArgument, match=r"tokens\[1\] = -5"):
        ns.keys([1, -5, 3])
    with pytest.raises(tierkv.InvalidArgument, match=r"tokens\[0\]"):
        ns.keys(np.array([2**32], dtype=np.int64))
    with pytest.raises(tierkv.InvalidArgument, match=r"tokens\[2\] = -1"):
        ns.keys(np.array([1, 2, -1], dtype=np.int32))
    with pytest.raises(TypeError, match="tokens"):
        ns.keys(np.zeros(4, dtype=np.float32))
    with pytest.raises(TypeError, match="not an int"):
        ns.keys([1, 2.5])
    with pytest.raises(TypeError):
        ns.keys("hello")


# --- store / lookup / load ------------------------------------------------------------------------


def test_store_lookup_load_round_trip(client, ns):
    tokens = prompt(4 * CHUNK_TOKENS + 5, seed=4)  # 4 full chunks and a partial one
    kv = kv_for(4, seed=4)
    assert client.lookup(ns, tokens) == (0, [])

    r = client.store(ns, tokens, kv)
    assert (r.total_chunks, r.written, r.already_cached, r.in_progress, r.no_space) == (4, 4, 0, 0, 0)

    cached, tiers = client.lookup(ns, tokens)
    assert cached == 4 and tiers == ["host"] * 4
    assert client.lookup(ns, tokens).cached_chunks == 4

    into = np.full_like(kv, np.float16(7))
    assert client.load(ns, tokens, into) == 4
    assert into.tobytes() == kv.tobytes()

    # Storing again writes nothing.
    again = client.store(ns, tokens, kv)
    assert (again.written, again.already_cached) == (0, 4)


def test_load_stops_at_first_missing_chunk(client, ns):
    tokens = prompt(4 * CHUNK_TOKENS, seed=5)
    kv = kv_for(4, seed=5)
    client.store(ns, tokens[: 2 * CHUNK_TOKENS], kv[:2])
    assert client.lookup(ns, tokens).cached_chunks == 2
    into = np.zeros_like(kv)
    assert client.load(ns, tokens, into) == 2
    assert into[:2].tobytes() == kv[:2].tobytes()
    assert not into[2:].any()  # untouched
    # max_chunks limits the load, and then `into` needs room for that many chunks only.
    small = np.zeros_like(kv[:1])
    assert client.load(ns, tokens, small, max_chunks=1) == 1
    assert small.tobytes() == kv[:1].tobytes()


def test_kv_as_raw_bytes_and_other_buffers(client, ns):
    tokens = prompt(2 * CHUNK_TOKENS, seed=6)
    kv = kv_for(2, seed=6)
    raw = bytearray(kv.tobytes())  # any buffer of bytes: taken as raw chunk bytes
    assert client.store(ns, tokens, raw).written == 2
    into = bytearray(len(raw))
    assert client.load(ns, tokens, into) == 2
    assert into == raw
    as_u8 = np.zeros(len(raw), dtype=np.uint8)
    assert client.load(ns, tokens, memoryview(as_u8)) == 2
    assert as_u8.tobytes() == raw


def test_array_interface_objects(client, ns):
    class Wrapped:  # only __array_interface__, no buffer protocol
        def __init__(self, a):
            self.a = a
            self.__array_interface__ = a.__array_interface__

    tokens = prompt(2 * CHUNK_TOKENS, seed=7)
    kv = kv_for(2, seed=7)
    assert client.store(ns, tokens, Wrapped(kv)).written == 2
    into = np.zeros_like(kv)
    assert client.load(ns, tokens, Wrapped(into)) == 2
    assert into.tobytes() == kv.tobytes()
    ro = np.zeros_like(kv)
    ro.flags.writeable = False
    with pytest.raises(tierkv.InvalidArgument, match="read-only"):
        client.load(ns, tokens, Wrapped(ro))


def test_size_and_type_errors(client, ns):
    tokens = prompt(3 * CHUNK_TOKENS, seed=8)
    kv = kv_for(3, seed=8)
    with pytest.raises(tierkv.InvalidArgument) as e:
        client.store(ns, tokens, kv[:2])
    msg = str(e.value)
    assert "kv holds 4096 bytes" in msg and "3 full chunks of 2048 bytes" in msg and "6144" in msg
    with pytest.raises(tierkv.InvalidArgument, match="4-byte elements.*fp16 has 2-byte"):
        client.store(ns, tokens, kv.astype(np.float32))
    with pytest.raises(tierkv.InvalidArgument, match="C-contiguous"):
        client.store(ns, tokens, np.asfortranarray(kv.reshape(3 * 2 * 2 * 16, -1)))
    with pytest.raises(TypeError, match="expected an array"):
        client.store(ns, tokens, object())
    with pytest.raises(tierkv.InvalidArgument, match="into holds 2048 bytes"):
        client.load(ns, tokens, np.zeros_like(kv[:1]))
    ro = np.zeros_like(kv)
    ro.flags.writeable = False
    with pytest.raises(tierkv.InvalidArgument, match="into is read-only"):
        client.load(ns, tokens, ro)
    with pytest.raises(tierkv.InvalidArgument, match="into is read-only"):
        client.load(ns, tokens, bytes(kv.nbytes))
    with pytest.raises(tierkv.InvalidArgument, match="max_chunks"):
        client.load(ns, tokens, np.zeros_like(kv), max_chunks=-1)
    # Nothing was stored by the failed calls.
    assert client.lookup(ns, tokens).cached_chunks == 0


def test_concurrent_stores_and_loads_share_one_client(client, ns):
    prompts = [prompt(3 * CHUNK_TOKENS, seed=100 + i) for i in range(8)]
    kvs = [kv_for(3, seed=100 + i) for i in range(8)]
    errors = []

    def worker(i):
        try:
            for _ in range(5):
                client.store(ns, prompts[i], kvs[i])
                into = np.zeros_like(kvs[i])
                assert client.load(ns, prompts[i], into) == 3
                assert into.tobytes() == kvs[i].tobytes()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --- zero-copy leases ------------------------------------------------------------------------------


def test_load_lease_views_are_zero_copy_and_read_only(client, ns):
    tokens = prompt(3 * CHUNK_TOKENS, seed=9)
    kv = kv_for(3, seed=9)
    client.store(ns, tokens, kv)
    with client.load_lease(ns, tokens) as lease:
        assert len(lease) == 3 and lease.chunks == 3
        view = lease.chunk(1)
        assert isinstance(view, memoryview) and view.readonly
        assert view.nbytes == ns.chunk_bytes and view.tobytes() == kv[1].tobytes()
        arr = lease.array(2)
        assert arr.shape == CHUNK_SHAPE and arr.dtype == np.float16
        assert not arr.flags.writeable
        np.testing.assert_array_equal(arr, kv[2])
        with pytest.raises(ValueError):
            arr[0, 0, 0, 0, 0] = 1
        with pytest.raises(TypeError):
            view[0] = 1
        with pytest.raises(IndexError):
            lease.chunk(3)
        # Zero copy: a second lease on the same chunk shows the very same shared memory.
        with client.load_lease(ns, tokens, max_chunks=1) as other:
            assert len(other) == 1
            a0 = np.frombuffer(lease.chunk(0), dtype=np.uint8)
            b0 = np.frombuffer(other.chunk(0), dtype=np.uint8)
            assert a0.ctypes.data == b0.ctypes.data
        del view, arr, a0, b0
        out = np.zeros_like(kv)
        assert lease.copy_into(out) == 3
        assert out.tobytes() == kv.tobytes()
        assert lease.copy_into(out[:1], first_chunk=2) == 1
        assert out[0].tobytes() == kv[2].tobytes()
    assert lease.released
    with pytest.raises(tierkv.FailedPrecondition, match="released"):
        lease.chunk(0)


def test_views_keep_the_lease_until_they_go(client, ns):
    tokens = prompt(2 * CHUNK_TOKENS, seed=10)
    kv = kv_for(2, seed=10)
    client.store(ns, tokens, kv)
    before = read_leases(client)
    with client.load_lease(ns, tokens) as lease:
        arr = lease.array(0)
        assert read_leases(client) == before + 2
    # Leaving the block released the lease object, but a view of it is alive: still leased, and
    # neither evict nor delete can take the chunk from under the view.
    assert lease.released
    assert read_leases(client) == before + 2
    client.delete(ns, tokens)
    np.testing.assert_array_equal(arr, kv[0])
    del arr
    assert read_leases(client) == before
    assert client.lookup(ns, tokens).cached_chunks == 0


def test_lease_released_when_garbage_collected(client, ns):
    tokens = prompt(2 * CHUNK_TOKENS, seed=11)
    client.store(ns, tokens, kv_for(2, seed=11))
    before = read_leases(client)
    lease = client.load_lease(ns, tokens)
    assert read_leases(client) == before + 2
    del lease
    assert read_leases(client) == before


def test_put_lease_writes_in_place(client, ns):
    tokens = prompt(3 * CHUNK_TOKENS, seed=12)
    kv = kv_for(3, seed=12)
    client.store(ns, tokens[:CHUNK_TOKENS], kv[:1])  # chunk 0 is cached already
    with client.put_lease(ns, tokens) as lease:
        assert len(lease) == 3
        assert [lease.disposition(i) for i in range(3)] == ["cached", "write", "write"]
        assert not lease.needs_write(0) and lease.slot(0) is None and lease.array(0) is None
        np.copyto(lease.array(1), kv[1])  # in place; the temporary view is gone at once
        lease.write(2, kv[2])
        with pytest.raises(tierkv.FailedPrecondition, match="needs no write"):
            lease.write(0, kv[0])
        with pytest.raises(tierkv.InvalidArgument, match="src holds 1024 bytes"):
            lease.write(2, kv[2].reshape(-1)[:512])
    assert lease.closed
    into = np.zeros_like(kv)
    assert client.load(ns, tokens, into) == 3
    assert into.tobytes() == kv.tobytes()


def test_put_lease_refuses_commit_while_viewed_and_aborts_on_error(client, ns):
    tokens = prompt(2 * CHUNK_TOKENS, seed=13)
    kv = kv_for(2, seed=13)
    lease = client.put_lease(ns, tokens)
    view = lease.slot(0)
    assert not view.readonly
    view[:] = kv[0].tobytes()
    with pytest.raises(BufferError, match="views"):
        lease.commit()
    view.release()
    lease.write(1, kv[1])
    assert lease.commit() == 2
    assert client.lookup(ns, tokens).cached_chunks == 2

    other = prompt(2 * CHUNK_TOKENS, seed=14)
    with pytest.raises(RuntimeError, match="engine failed"):
        with client.put_lease(ns, other) as lease2:
            lease2.write(0, kv[0])
            raise RuntimeError("engine failed")
    assert lease2.closed
    assert client.lookup(ns, other).cached_chunks == 0
    assert client.stats()["pending_writes"] == 0


# --- the rest of the API ---------------------------------------------------------------------------


def test_evict_delete_prefetch_stats(client, ns):
    tokens = prompt(3 * CHUNK_TOKENS, seed=15)
    client.store(ns, tokens, kv_for(3, seed=15))
    assert client.prefetch(ns, tokens) == (3, 0)  # already in host RAM
    assert client.prefetch(ns, tokens).in_host == 3
    stats = client.stats()
    host = stats["tiers"]["host"]
    assert host["enabled"] and host["chunks"] >= 3 and host["capacity_bytes"] > 0
    assert stats["pid"] > 0 and "nvme" in stats
    assert client.evict(ns, tokens[: CHUNK_TOKENS]) == 1
    assert client.lookup(ns, tokens).cached_chunks == 0
    assert client.delete(ns) == 2  # the whole namespace
    assert client.evict(ns) == 0


def test_dtypes_map_to_numpy(client):
    for dtype, np_dtype, size in (("fp16", np.float16, 2), ("bf16", np.uint16, 2),
                                  ("fp32", np.float32, 4), ("fp8_e4m3", np.uint8, 1),
                                  ("int8", np.int8, 1)):
        ns = client.register_layout(layers=1, kv_heads=1, head_dim=4, dtype=dtype, tenant="dt")
        assert ns.chunk_bytes == 2 * CHUNK_TOKENS * 4 * size
        tokens = list(range(CHUNK_TOKENS))
        kv = np.arange(ns.chunk_bytes, dtype=np.uint8) ^ size
        client.store(ns, tokens, kv)
        with client.load_lease(ns, tokens) as lease:
            arr = lease.array(0)
            assert arr.dtype == np_dtype and arr.shape == ns.chunk_shape
            assert arr.tobytes() == kv.tobytes()
            del arr
