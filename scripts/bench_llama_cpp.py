#!/usr/bin/env python3
"""llama.cpp reference numbers for bench/engine_bench.cc, through llama-cpp-python.

Same GGUF, same thread count (n_threads = n_threads_batch = --threads), same prompt text and
the same measurements as engine_bench:

  prefill   tokens/s of a fresh --prompt-tokens prompt (one llama_decode, logits of the last
            token only, KV cleared before each run)
  decode bB B sequences continuing one ~64-token prompt (decoded once, shared by all B seq
            ids in a unified KV cache), --decode-tokens each, temperature 0.8 (llama.cpp
            sampler chain temp + dist), one llama_decode of B tokens per step. Timed: the
            --decode-tokens - 1 decode steps (the first token is sampled from the prompt's
            logits), as in engine_bench, which counts the same B * (N - 1) computed tokens.

Times are the best of --reps runs after one warm-up run. Writes JSON.

  python3 scripts/bench_llama_cpp.py --threads 2 --json out/bench/llama_cpp.json
"""
import argparse
import ctypes
import json
import os
import sys
import time

import llama_cpp as L

# Keep identical to kText in bench/engine_bench.cc.
TEXT = (
    "The history of mathematics is a long story of people trying to understand patterns. "
    "Early civilizations counted goods, measured fields and tracked the stars, and from these "
    "practical needs grew arithmetic, geometry and astronomy. Later, scholars began to ask why "
    "their methods worked, and proofs were born. Each generation built on the last, turning "
    "questions about numbers, shapes and change into theories that now describe everything "
    "from the motion of planets to the behaviour of markets. "
)


def default_model():
    here = os.path.dirname(os.path.abspath(__file__))
    d = os.environ.get("CANOPY_MODELS_DIR", os.path.join(here, "..", "models"))
    return os.path.normpath(os.path.join(d, "SmolLM2-135M-Instruct.Q4_1.gguf"))


def tokenize(vocab, text):
    raw = text.encode()
    buf = (L.llama_token * (len(raw) + 16))()
    n = L.llama_tokenize(vocab, raw, len(raw), buf, len(buf), False, False)
    if n < 0:
        raise RuntimeError("tokenize failed")
    return list(buf[:n])


def prompt_tokens(vocab, n):
    text, ids = "", []
    while len(ids) < n:
        text += TEXT
        ids = tokenize(vocab, text)
    return ids[:n]


def variant(tokens, v, n_vocab):
    t = list(tokens)
    t[0] = (t[0] + 1000 + 7 * v) % n_vocab
    return t


class Bench:
    def __init__(self, model_path, threads, n_ctx, n_seq_max):
        L.llama_backend_init()
        self._log_cb = L.llama_log_callback(lambda level, text, data: None)  # keep alive
        L.llama_log_set(self._log_cb, ctypes.c_void_p(0))
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = L.llama_model_load_from_file(model_path.encode(), mp)
        if not self.model:
            raise RuntimeError("cannot load " + model_path)
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = 512
        cp.n_ubatch = 512
        cp.n_seq_max = n_seq_max
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.kv_unified = True
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("cannot create context")
        self.mem = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(512, 0, n_seq_max)
        self.n_seq_max = n_seq_max
        chain = L.llama_sampler_chain_default_params()
        self.smpl = L.llama_sampler_chain_init(chain)
        L.llama_sampler_chain_add(self.smpl, L.llama_sampler_init_temp(0.8))
        L.llama_sampler_chain_add(self.smpl, L.llama_sampler_init_dist(1234))

    def fill(self, entries):
        """entries: (token, pos, [seq ids], want_logits)."""
        b = self.batch
        b.n_tokens = len(entries)
        for i, (tok, pos, seqs, logits) in enumerate(entries):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = len(seqs)
            for k, s in enumerate(seqs):
                b.seq_id[i][k] = s
            b.logits[i] = 1 if logits else 0

    def decode(self):
        rc = L.llama_decode(self.ctx, self.batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def prefill(self, prompt, reps):
        best = None
        for r in range(reps + 1):
            toks = variant(prompt, r, self.n_vocab)
            L.llama_memory_clear(self.mem, True)
            n = len(toks)
            self.fill([(t, i, [0], i == n - 1) for i, t in enumerate(toks)])
            t0 = time.perf_counter()
            self.decode()
            L.llama_synchronize(self.ctx)
            s = time.perf_counter() - t0
            if r > 0:
                best = s if best is None else min(best, s)
        return {"prompt_tokens": len(prompt), "seconds": best, "tokens_per_s": len(prompt) / best}

    def decode_run(self, prompt, batch, n, v):
        toks = variant(prompt, v, self.n_vocab)
        L.llama_memory_clear(self.mem, True)
        seqs = list(range(batch))
        P = len(toks)
        self.fill([(t, i, seqs, i == P - 1) for i, t in enumerate(toks)])
        self.decode()
        first = [L.llama_sampler_sample(self.smpl, self.ctx, -1) for _ in seqs]
        t0 = time.perf_counter()
        cur = first
        for step in range(n - 1):
            self.fill([(cur[s], P + step, [s], True) for s in seqs])
            self.decode()
            cur = [L.llama_sampler_sample(self.smpl, self.ctx, i) for i in range(batch)]
        s = time.perf_counter() - t0
        return s, batch * (n - 1)

    def decode_bench(self, prompt, batch, n, reps, v0):
        self.decode_run(prompt, batch, min(n, 4), v0)  # warm-up
        best, tokens = None, 0
        for r in range(reps):
            s, tokens = self.decode_run(prompt, batch, n, v0 + 1 + r)
            best = s if best is None else min(best, s)
        return {"batch": batch, "decode_tokens": tokens, "seconds": best,
                "aggregate_tokens_per_s": tokens / best,
                "per_sequence_tokens_per_s": tokens / best / batch, "batch_invariant": False}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="")
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-prompt-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--quick", action="store_true", help="16 decode tokens, 1 rep")
    a = ap.parse_args()
    if a.quick:
        a.decode_tokens = min(a.decode_tokens, 16)
        a.reps = 1
    batches = [int(x) for x in a.batches.split(",")]
    n_ctx = max(a.prompt_tokens, a.decode_prompt_tokens + max(batches) * a.decode_tokens) + 64
    b = Bench(a.model, a.threads, n_ctx, max(batches))
    prompt = prompt_tokens(b.vocab, a.prompt_tokens)
    dprompt = prompt_tokens(b.vocab, a.decode_prompt_tokens)
    out = {
        "engine": "llama.cpp",
        "llama_cpp_python": L.__version__,
        "model": os.path.basename(a.model),
        "threads": a.threads,
        "decode_tokens_per_child": a.decode_tokens,
        "reps": a.reps,
        "kv_unified": True,
    }
    print("prefill ...", file=sys.stderr)
    out["prefill"] = b.prefill(prompt, a.reps)
    out["decode"] = []
    for i, bs in enumerate(batches):
        print(f"decode batch {bs} ...", file=sys.stderr)
        out["decode"].append(b.decode_bench(dprompt, bs, a.decode_tokens, a.reps, 100 + 10 * i))

    print(f"\nllama.cpp (llama-cpp-python {L.__version__})  model={out['model']}  threads={a.threads}"
          f"  decode_tokens={a.decode_tokens}  reps={a.reps} (best)")
    print(f"{'measurement':<30} {'aggregate t/s':>14} {'per-seq t/s':>14} {'seconds':>10}")
    p = out["prefill"]
    print(f"{'prefill %d tok' % a.prompt_tokens:<30} {p['tokens_per_s']:>14.1f} {'-':>14} {p['seconds']:>10.3f}")
    for d in out["decode"]:
        print(f"{'decode b%d' % d['batch']:<30} {d['aggregate_tokens_per_s']:>14.1f}"
              f" {d['per_sequence_tokens_per_s']:>14.1f} {d['seconds']:>10.3f}")
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
