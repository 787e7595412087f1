"""The daemon's GPU tier from Python: tierkv.DaemonGpuPool and GpuTransfer.use_gpu_tier().

Without a GPU: attaching to a daemon whose GPU tier is off raises with the daemon's reason (and a
module built without CUDA says so), host leases report no GPU chunks, and arguments are checked.
With a GPU (and torch): a tierkvd with [gpu] capacity set promotes a prompt, Python attaches, and a
load into a torch paged cache, from the GPU tier alone and from GPU and host chunks mixed, writes
exactly what was stored (checked against a reference built in torch on the CPU, over a poisoned
cache, so a byte written wrongly or not at all fails). Skipped, saying why, without a GPU.
"""

import time

import numpy as np
import pytest

import tierkv
from conftest import Daemon

PROMOTE_DEADLINE_S = 30.0


def prompt(n_tokens, seed):
    return np.random.default_rng(seed).integers(0, 50_000, size=n_tokens, dtype=np.uint32)


# --- without a GPU -------------------------------------------------------------------------------


@pytest.mark.skipif(not tierkv.CUDA_BUILT, reason="this module has no CUDA (tested below)")
def test_attach_when_the_daemons_gpu_tier_is_off_raises_its_reason(client, ns):
    # conftest's daemon has no [gpu] section: capacity 0, the tier is off.
    status = client.stats()["gpu"]["status"]
    assert status.startswith("off ("), status
    with pytest.raises(tierkv.FailedPrecondition) as e:
        tierkv.DaemonGpuPool.attach(client)
    assert e.value.code == "FailedPrecondition"
    assert "the GPU tier is " + status in e.value.message
    assert client.stats()["gpu"]["attached_clients"] == 0
    # The client is as good as before.
    tokens = prompt(2 * ns.chunk_tokens, seed=1)
    assert client.store(ns, tokens, np.zeros(2 * ns.chunk_bytes, dtype=np.uint8)).written == 2
    assert client.lookup(ns, tokens).cached_chunks == 2


@pytest.mark.skipif(tierkv.CUDA_BUILT, reason="this module has the CUDA path (tested above)")
def test_attach_without_cuda_build_raises_clearly(client):
    with pytest.raises(tierkv.FailedPrecondition) as e:
        tierkv.DaemonGpuPool.attach(client)
    assert "CUDA" in e.value.message or "GPU transfer path" in e.value.message
    assert client.stats()["gpu"]["attached_clients"] == 0  # never asked the daemon


def test_argument_checks(client, ns):
    with pytest.raises(TypeError):
        tierkv.DaemonGpuPool.attach(None)
    with pytest.raises(TypeError):
        tierkv.DaemonGpuPool.attach("/run/tierkv/tierkvd.sock")
    tokens = prompt(2 * ns.chunk_tokens, seed=2)
    client.store(ns, tokens, np.ones(2 * ns.chunk_bytes, dtype=np.uint8))
    with client.load_lease(ns, tokens) as lease:  # a host lease: nothing on the GPU
        assert lease.gpu_chunks == 0
        assert not lease.on_gpu(0) and not lease.on_gpu(1)
        with pytest.raises(IndexError, match="chunk 2 out of range"):
            lease.on_gpu(2)
        assert bytes(lease.chunk(1)) == b"\x01" * ns.chunk_bytes
    with pytest.raises(tierkv.FailedPrecondition, match="released"):
        lease.on_gpu(0)
    stats = client.stats()["gpu"]
    assert stats["device"] == -1 and stats["leases"] == 0


# --- with a GPU ----------------------------------------------------------------------------------

# 4 layers x 2 kv heads x 64 dim fp16, 32 tokens a chunk: 64 KiB chunks, as the C++ GPU-tier test.
GPU_LAYOUT = dict(layers=4, kv_heads=2, head_dim=64, dtype="fp16", chunk_tokens=32)
GPU_TOML = ('[gpu]\ndevice = 0\ncapacity = "64MiB"\nslab_size = "16MiB"\n'
            "promote_after_loads = 2\n")
BLOCK_SIZE = 16
NUM_BLOCKS = 64  # 1024 tokens: 32 chunks
POISON = -12851  # 0xCDCD


@pytest.fixture(scope="module")
def torch_cuda():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not tierkv.CUDA_BUILT:
        pytest.skip("this tierkv module was built without CUDA")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch


@pytest.fixture(scope="module")
def gpu_daemon(torch_cuda):
    d = Daemon(extra_toml=GPU_TOML)
    yield d
    d.close()


class PagedCache:
    """Per layer one K and one V tensor [NUM_BLOCKS, BLOCK_SIZE, kv_heads, head_dim] on the GPU,
    fp16 as vLLM's, filled with POISON; compared as int16 so every bit counts."""

    def __init__(self, torch):
        shape = (NUM_BLOCKS, BLOCK_SIZE, GPU_LAYOUT["kv_heads"], GPU_LAYOUT["head_dim"])
        self.raw_k = [torch.full(shape, POISON, dtype=torch.int16, device="cuda")
                      for _ in range(GPU_LAYOUT["layers"])]
        self.raw_v = [torch.full_like(t, POISON) for t in self.raw_k]
        self.k = [t.view(torch.float16) for t in self.raw_k]
        self.v = [t.view(torch.float16) for t in self.raw_v]

    def expect_matches(self, torch, kv, table):
        """kv: int16 [chunks, layers, 2, chunk_tokens, kv_heads, head_dim] as stored, loaded into
        the sequence's blocks `table` from token 0; every other row must still be POISON."""
        chunks, layers, _, chunk_tokens, heads, dim = kv.shape
        n_tokens = chunks * chunk_tokens
        t = torch.arange(n_tokens)
        blocks, rows = table.long()[t // BLOCK_SIZE], t % BLOCK_SIZE
        for layer in range(layers):
            for kind, got in ((0, self.raw_k[layer]), (1, self.raw_v[layer])):
                want = torch.full((NUM_BLOCKS, BLOCK_SIZE, heads, dim), POISON, dtype=torch.int16)
                want[blocks, rows] = kv[:, layer, kind].reshape(n_tokens, heads, dim)
                got = got.cpu()
                if not torch.equal(got, want):
                    bad = (got != want).nonzero()[0].tolist()
                    pytest.fail("layer %d %s differs first at [block, row, head, dim] %s"
                                % (layer, "KV"[kind], bad))


def shuffled_blocks(torch, used, seed):
    return torch.randperm(NUM_BLOCKS, generator=torch.Generator().manual_seed(seed))[:used].to(
        torch.int32)


def random_kv(torch, chunks, seed):
    shape = (chunks, GPU_LAYOUT["layers"], 2, GPU_LAYOUT["chunk_tokens"], GPU_LAYOUT["kv_heads"],
             GPU_LAYOUT["head_dim"])
    return torch.from_numpy(
        np.random.default_rng(seed).integers(-32768, 32768, size=shape, dtype=np.int16))


def wait_for_tiers(client, ns, tokens, want, daemon):
    deadline = time.monotonic() + PROMOTE_DEADLINE_S
    while True:
        tiers = client.lookup(ns, tokens).tiers
        if tiers == want:
            return
        if time.monotonic() > deadline:
            pytest.fail("lookup shows %s, not %s; gpu: %s; daemon log:\n%s"
                        % (tiers, want, client.stats()["gpu"], daemon.log()))
        time.sleep(0.01)


def test_torch_paged_cache_loads_from_the_gpu_tier_and_host(torch_cuda, gpu_daemon):
    torch = torch_cuda
    client = tierkv.connect(gpu_daemon.socket_path, name="pytest-gpu-tier")
    gpu_status = client.stats()["gpu"]["status"]
    assert gpu_status.startswith("on: "), gpu_status
    ns = client.register_layout(**GPU_LAYOUT, tenant="gpu-tier")
    assert ns.chunk_bytes == 64 * 1024

    # A prompt of 8 chunks, stored and loaded twice from host RAM: promoted to the GPU tier.
    n = 8
    tokens = prompt(n * ns.chunk_tokens, seed=11)
    kv = random_kv(torch, n, seed=11)
    assert client.store(ns, tokens, kv.numpy()).written == n
    assert client.lookup(ns, tokens).tiers == ["host"] * n
    for _ in range(2):
        with client.load_lease(ns, tokens):
            pass
    wait_for_tiers(client, ns, tokens, ["gpu"] * n, gpu_daemon)
    assert client.stats()["gpu"]["promotions"] == n

    with tierkv.DaemonGpuPool.attach(client) as gpu:
        assert gpu.size == 64 << 20
        assert 0 <= gpu.device < torch.cuda.device_count()
        assert client.stats()["gpu"]["attached_clients"] == 1
        with torch.cuda.device(gpu.device):
            # 1. All 8 chunks from the GPU tier, device to device.
            cache = PagedCache(torch)
            table = shuffled_blocks(torch, n * ns.chunk_tokens // BLOCK_SIZE, seed=5)
            xfer = tierkv.GpuTransfer.paged(client, ns, cache.k, cache.v, BLOCK_SIZE,
                                            device=gpu.device, staging_bytes=1 << 20,
                                            staging_slots=2)
            lease = gpu.load_lease(ns, tokens)
            assert len(lease) == n and lease.gpu_chunks == n and lease.on_gpu(0)
            with pytest.raises(tierkv.FailedPrecondition, match="chunk 0 lies in the daemon's GPU"):
                lease.chunk(0)
            with pytest.raises(tierkv.FailedPrecondition, match="GPU pool"):
                lease.copy_into(torch.empty(n * ns.chunk_bytes, dtype=torch.uint8, device="cuda"))
            # Without the pool the transfer cannot read those chunks, and says so.
            with pytest.raises(tierkv.FailedPrecondition, match="use_gpu_tier"):
                xfer.load(lease, block_table=table)
            xfer.use_gpu_tier(gpu)
            stream = torch.cuda.current_stream()
            xfer.load(lease, block_table=table, stream=stream)
            xfer.synchronize()
            assert client.stats()["gpu"]["leases"] == n
            lease.release()
            assert client.stats()["gpu"]["leases"] == 0
            cache.expect_matches(torch, kv, table)

            # 2. The prompt grows by 4 chunks only in host RAM: one lease, both pools, one load.
            longer = np.concatenate([tokens, prompt(4 * ns.chunk_tokens, seed=12)])
            kv2 = torch.cat([kv, random_kv(torch, 4, seed=12)])
            assert client.store(ns, longer, kv2.numpy()).written == 4
            assert client.lookup(ns, longer).tiers == ["gpu"] * n + ["host"] * 4
            cache2 = PagedCache(torch)
            table2 = shuffled_blocks(torch, (n + 4) * ns.chunk_tokens // BLOCK_SIZE, seed=6)
            with gpu.load_lease(ns, longer) as lease2:
                assert len(lease2) == n + 4 and lease2.gpu_chunks == n
                assert not lease2.on_gpu(n)
                assert np.array_equal(lease2.array(n).view(np.int16), kv2[n].numpy())
                assert "8 on the GPU" in repr(lease2)
                xfer2 = tierkv.GpuTransfer.paged(client, ns, cache2.k, cache2.v, BLOCK_SIZE,
                                                 staging_bytes=1 << 20, staging_slots=2)
                xfer2.use_gpu_tier(gpu)
                xfer2.load(lease2, block_table=table2, stream=stream)
                xfer2.synchronize()
            cache2.expect_matches(torch, kv2, table2)

            # max_chunks holds a GPU lease to the prompt's first chunks.
            with gpu.load_lease(ns, longer, max_chunks=3) as lease3:
                assert len(lease3) == 3 and lease3.gpu_chunks == 3
            xfer.close()
            xfer2.close()
    assert gpu.closed and repr(gpu) == "<tierkv.DaemonGpuPool closed>"
    with pytest.raises(tierkv.FailedPrecondition, match="closed"):
        gpu.load_lease(ns, tokens)
    assert client.stats()["gpu"]["leases"] == 0
