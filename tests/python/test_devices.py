"""The tierkv Python module with torch tensors and CUDA memory, where they exist; skipped with the
reason elsewhere. The CUDA tests need no torch: they allocate device memory through the CUDA
runtime (ctypes) and hand it over with __cuda_array_interface__."""

import ctypes
import ctypes.util

import numpy as np
import pytest

import tierkv
from conftest import LAYOUT

CHUNK_TOKENS = LAYOUT["chunk_tokens"]


def prompt(n_tokens, seed):
    return np.random.default_rng(seed).integers(0, 50_000, size=n_tokens, dtype=np.uint32)


# --- torch (CPU) ---------------------------------------------------------------------------------


def test_torch_cpu_tensors(client, ns):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    tokens = torch.from_numpy(prompt(2 * CHUNK_TOKENS + 3, seed=1).astype(np.int64))
    kv = torch.randn(2, LAYOUT["layers"], 2, CHUNK_TOKENS, LAYOUT["kv_heads"], LAYOUT["head_dim"],
                     dtype=torch.float16)
    assert client.store(ns, tokens, kv).written == 2
    assert client.lookup(ns, tokens).cached_chunks == 2
    into = torch.zeros_like(kv)
    assert client.load(ns, tokens, into) == 2
    assert torch.equal(into, kv)
    with client.load_lease(ns, tokens) as lease:
        view = torch.frombuffer(bytearray(lease.chunk(1)), dtype=torch.float16)
        assert torch.equal(view, kv[1].flatten())
    with pytest.raises(tierkv.InvalidArgument, match="contiguous"):
        client.load(ns, tokens, torch.zeros(2, 2, 2, 16, 2, 8, dtype=torch.float16).transpose(0, 1))


# --- CUDA through __cuda_array_interface__ ---------------------------------------------------------


class FakeDeviceArray:
    """Claims device memory at an address nobody may touch: for builds that must refuse it."""

    def __init__(self, nbytes):
        self.__cuda_array_interface__ = {
            "data": (0x10000, False), "shape": (nbytes,), "typestr": "|u1", "version": 3,
            "strides": None, "stream": None}


@pytest.mark.skipif(tierkv.CUDA_BUILT, reason="this module has the CUDA path (tested below)")
def test_cuda_arrays_without_cuda_build_raise_clearly(client, ns):
    tokens = prompt(2 * CHUNK_TOKENS, seed=2)
    with pytest.raises(tierkv.FailedPrecondition) as e:
        client.store(ns, tokens, FakeDeviceArray(2 * ns.chunk_bytes))
    assert "CUDA" in e.value.message or "GPU" in e.value.message
    client.store(ns, tokens, np.zeros(2 * ns.chunk_bytes, dtype=np.uint8))
    with pytest.raises(tierkv.FailedPrecondition):
        client.load(ns, tokens, FakeDeviceArray(2 * ns.chunk_bytes))
    with pytest.raises(tierkv.FailedPrecondition):
        tierkv.GpuTransfer.paged(client, ns, [], [], 16)


def cuda_runtime():
    """The CUDA runtime through ctypes and a device, or None with the reason."""
    if not tierkv.CUDA_BUILT:
        return None, "this tierkv module was built without CUDA"
    for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12", ctypes.util.find_library("cudart")):
        if not name:
            continue
        try:
            rt = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return None, "no libcudart to allocate device memory with"
    count = ctypes.c_int(0)
    if rt.cudaGetDeviceCount(ctypes.byref(count)) != 0 or count.value == 0:
        return None, "no CUDA device"
    return rt, ""


class DeviceBuffer:
    """Device memory from cudaMalloc, exported with __cuda_array_interface__."""

    def __init__(self, rt, nbytes):
        self.rt = rt
        self.nbytes = nbytes
        self.ptr = ctypes.c_void_p()
        assert rt.cudaMalloc(ctypes.byref(self.ptr), ctypes.c_size_t(nbytes)) == 0
        self.__cuda_array_interface__ = {
            "data": (self.ptr.value, False), "shape": (nbytes,), "typestr": "|u1", "version": 3,
            "strides": None, "stream": 1}

    def upload(self, host):
        assert self.rt.cudaMemcpy(self.ptr, host.ctypes.data_as(ctypes.c_void_p),
                                  ctypes.c_size_t(host.nbytes), 1) == 0  # host to device

    def download(self):
        out = np.empty(self.nbytes, dtype=np.uint8)
        assert self.rt.cudaMemcpy(out.ctypes.data_as(ctypes.c_void_p), self.ptr,
                                  ctypes.c_size_t(self.nbytes), 2) == 0  # device to host
        return out

    def free(self):
        self.rt.cudaFree(self.ptr)


@pytest.fixture(scope="module")
def cuda():
    rt, reason = cuda_runtime()
    if rt is None:
        pytest.skip(reason)
    return rt


def test_cuda_store_and_load_round_trip(cuda, client, ns):
    tokens = prompt(3 * CHUNK_TOKENS + 1, seed=3)
    host = np.random.default_rng(3).integers(0, 256, size=3 * ns.chunk_bytes, dtype=np.uint8)
    src = DeviceBuffer(cuda, host.nbytes)
    dst = DeviceBuffer(cuda, host.nbytes)
    try:
        src.upload(host)
        assert client.store(ns, tokens, src).written == 3
        into = np.zeros_like(host)
        assert client.load(ns, tokens, into) == 3  # stored from the GPU, read on the host
        assert into.tobytes() == host.tobytes()
        assert client.load(ns, tokens, dst) == 3
        assert dst.download().tobytes() == host.tobytes()
        with client.load_lease(ns, tokens) as lease:
            dst.upload(np.zeros_like(host))
            assert lease.copy_into(dst) == 3
            assert dst.download().tobytes() == host.tobytes()
        with pytest.raises(tierkv.InvalidArgument, match="into holds"):
            small = DeviceBuffer(cuda, ns.chunk_bytes)
            try:
                client.load(ns, tokens, small)
            finally:
                small.free()
    finally:
        src.free()
        dst.free()


def test_cuda_put_lease_write(cuda, client, ns):
    tokens = prompt(2 * CHUNK_TOKENS, seed=4)
    host = np.random.default_rng(4).integers(0, 256, size=2 * ns.chunk_bytes, dtype=np.uint8)
    chunks = [DeviceBuffer(cuda, ns.chunk_bytes) for _ in range(2)]
    try:
        for i, c in enumerate(chunks):
            c.upload(host[i * ns.chunk_bytes:(i + 1) * ns.chunk_bytes])
        with client.put_lease(ns, tokens) as lease:
            for i, c in enumerate(chunks):
                lease.write(i, c)
        into = np.zeros_like(host)
        assert client.load(ns, tokens, into) == 2
        assert into.tobytes() == host.tobytes()
    finally:
        for c in chunks:
            c.free()


def test_gpu_transfer_paged_round_trip(cuda, client, ns):
    """The client library's engine path: store from and load into a paged cache on the GPU."""
    block_size = 4
    layers, heads, dim = LAYOUT["layers"], LAYOUT["kv_heads"], LAYOUT["head_dim"]
    num_blocks = 16
    layer_bytes = num_blocks * block_size * heads * dim * 2
    rng = np.random.default_rng(5)
    k = [DeviceBuffer(cuda, layer_bytes) for _ in range(layers)]
    v = [DeviceBuffer(cuda, layer_bytes) for _ in range(layers)]
    host_k = [rng.integers(0, 256, size=layer_bytes, dtype=np.uint8) for _ in range(layers)]
    host_v = [rng.integers(0, 256, size=layer_bytes, dtype=np.uint8) for _ in range(layers)]
    try:
        for b, h in zip(k + v, host_k + host_v):
            b.upload(h)
        xfer = tierkv.GpuTransfer.paged(client, ns, k, v, block_size, staging_bytes=1 << 20,
                                        staging_slots=2)
        tokens = prompt(2 * CHUNK_TOKENS, seed=5)
        table = np.array([3, 1, 4, 0, 5, 9, 2, 6], dtype=np.int32)  # 8 blocks of 4 = 32 tokens
        lease = client.put_lease(ns, tokens)
        xfer.store(lease, table)
        xfer.synchronize()
        assert lease.commit() == 2

        # Expected chunk 0, layer 0, K: tokens 0..15 from blocks 3, 1, 4, 0 of host_k[0].
        row = heads * dim * 2
        want = b"".join(host_k[0][(blk * block_size) * row:(blk + 1) * block_size * row].tobytes()
                        for blk in table[:4])
        with client.load_lease(ns, tokens) as ll:
            got = np.frombuffer(ll.chunk(0), dtype=np.uint8)[: CHUNK_TOKENS * row].tobytes()
            assert got == want
            del got
            # Load into other blocks and compare with what was stored.
            table2 = np.array([10, 11, 12, 13, 14, 15, 7, 8], dtype=np.int32)
            xfer.load(ll, block_table=table2)
            xfer.synchronize()
        after = k[0].download()
        for j, blk in enumerate(table2[:4]):
            src_blk = table[j]
            assert (after[blk * block_size * row:(blk + 1) * block_size * row].tobytes()
                    == host_k[0][src_blk * block_size * row:(src_blk + 1) * block_size * row].tobytes())
        xfer.close()
    finally:
        for b in k + v:
            b.free()


# --- torch CUDA tensors ------------------------------------------------------------------------------


def test_torch_cuda_tensors(client, ns):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not tierkv.CUDA_BUILT:
        pytest.skip("this tierkv module was built without CUDA")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    tokens = torch.from_numpy(prompt(3 * CHUNK_TOKENS, seed=6).astype(np.int64))
    shape = (3, LAYOUT["layers"], 2, CHUNK_TOKENS, LAYOUT["kv_heads"], LAYOUT["head_dim"])
    kv = torch.randn(shape, dtype=torch.float16, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        kv2 = kv * 2  # produced on `stream`: store() must order after it
        assert client.store(ns, tokens, kv2, stream=stream).written == 3
    into = torch.zeros_like(kv)
    assert client.load(ns, tokens, into) == 3
    assert torch.equal(into, kv * 2)

    # GpuTransfer with torch tensors: a flat per-layer cache [capacity, kv_heads, head_dim].
    cap = 4 * CHUNK_TOKENS
    k = [torch.zeros(cap, LAYOUT["kv_heads"], LAYOUT["head_dim"], dtype=torch.float16, device="cuda")
         for _ in range(LAYOUT["layers"])]
    v = [torch.zeros_like(t) for t in k]
    xfer = tierkv.GpuTransfer.flat(client, ns, k, v, staging_bytes=1 << 20, staging_slots=2)
    with client.load_lease(ns, tokens) as lease:
        xfer.load(lease, stream=torch.cuda.current_stream())
        for layer in range(LAYOUT["layers"]):
            xfer.wait_layer(layer, torch.cuda.current_stream())
        xfer.synchronize()
    want = (kv * 2).cpu()
    for layer in range(LAYOUT["layers"]):
        got_k = k[layer][: 3 * CHUNK_TOKENS].cpu().reshape(3, CHUNK_TOKENS, LAYOUT["kv_heads"], LAYOUT["head_dim"])
        got_v = v[layer][: 3 * CHUNK_TOKENS].cpu().reshape(3, CHUNK_TOKENS, LAYOUT["kv_heads"], LAYOUT["head_dim"])
        assert torch.equal(got_k, want[:, layer, 0])
        assert torch.equal(got_v, want[:, layer, 1])
    xfer.close()
