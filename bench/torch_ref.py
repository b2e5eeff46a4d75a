#!/usr/bin/env python3
"""PyTorch baselines for gpu_bench, run on the same GPU in the same call (docs/gpu.md).

1. decode: a Llama decode step in the gpt-fast style: BF16 weights, a static KV cache of
   ctx + 64 positions per sequence, attention over the whole cache with a mask, the whole
   step (forward, greedy argmax, the token fed back, the position advanced) captured once
   as a CUDA graph and replayed. Same shapes, batches and 1K contexts as gpu_bench's decode
   table. (gpu_bench draws each token at T = 0.8, top-p 0.95; this draws by argmax, which is
   cheaper, so the comparison leans PyTorch's way.)
2. sdpa: F.scaled_dot_product_attention for one decode query per sequence over S sequences
   of P shared + 256 own positions, each sequence holding its own copy of the prefix, as
   gpu_bench's shared-prefix table (Llama-3.1-8B heads: 32 query, 8 KV heads of 128). Every
   SDPA backend that accepts the call is timed; the fastest is reported.

Usage: torch_ref.py [--json FILE] [--quick] [--only decode|sdpa]
"""
import argparse
import json
import math
import sys

import torch
import torch.nn.functional as F

SHAPES = {
    "smollm2-135m": dict(dim=576, layers=30, heads=9, kv=3, hd=64, ffn=1536, vocab=49152, tied=True),
    "llama-3.2-1b": dict(dim=2048, layers=16, heads=32, kv=8, hd=64, ffn=8192, vocab=128256, tied=True),
    "llama-3.1-8b": dict(dim=4096, layers=32, heads=32, kv=8, hd=128, ffn=14336, vocab=128256, tied=False),
    "tiny": dict(dim=128, layers=2, heads=4, kv=2, hd=64, ffn=256, vocab=300, tied=True),
}


def time_ms(fn, reps, device):
    """Median over 3 rounds of the mean milliseconds of `reps` calls, timed with events."""
    if device.type != "cuda":
        import time
        rounds = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            rounds.append((time.perf_counter() - t0) * 1e3 / reps)
        return sorted(rounds)[1]
    rounds = []
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        rounds.append(start.elapsed_time(end) / reps)
    return sorted(rounds)[1]


def copy_bandwidth(device):
    """Bytes per second of a large device-to-device copy, read plus written."""
    n = (1 << 30) if device.type == "cuda" else (1 << 24)
    a = torch.randint(0, 255, (n,), dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    ms = time_ms(lambda: b.copy_(a), 10, device)
    return 2 * n / (ms / 1e3)


class Decoder:
    """One decode step of a random-weight Llama of shape `s` over `batch` static caches."""

    def __init__(self, s, batch, ctx, device):
        bf = torch.bfloat16
        self.s, self.batch, self.ctx = s, batch, ctx
        self.lmax = ctx + 64
        g = torch.Generator(device=device)
        g.manual_seed(1)

        def rnd(*shape, scale=0.02):
            return torch.randn(*shape, generator=g, device=device, dtype=bf) * scale

        d, hd, nh, nkv = s["dim"], s["hd"], s["heads"], s["kv"]
        self.emb = rnd(s["vocab"], d)
        self.out = self.emb if s["tied"] else rnd(s["vocab"], d)
        self.layers = []
        for _ in range(s["layers"]):
            self.layers.append(dict(
                wqkv=rnd((nh + 2 * nkv) * hd, d), wo=rnd(d, nh * hd), w13=rnd(2 * s["ffn"], d),
                w2=rnd(d, s["ffn"]), n1=torch.ones(d, device=device, dtype=bf),
                n2=torch.ones(d, device=device, dtype=bf),
                k=rnd(batch, nkv, self.lmax, hd, scale=1.0), v=rnd(batch, nkv, self.lmax, hd, scale=1.0)))
        self.norm = torch.ones(d, device=device, dtype=bf)
        inv = 1.0 / (500000.0 ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
        ang = torch.outer(torch.arange(self.lmax, device=device, dtype=torch.float32), inv)
        self.cos, self.sin = ang.cos(), ang.sin()
        self.tok = torch.randint(0, s["vocab"], (batch,), device=device)
        self.pos = torch.full((1,), ctx, device=device, dtype=torch.long)
        self.positions = torch.arange(self.lmax, device=device)
        self.weight_bytes = sum(t.numel() * 2 for L in self.layers for k, t in L.items() if k not in ("k", "v"))
        self.weight_bytes += self.out.numel() * 2 + self.norm.numel() * 2

    @staticmethod
    def rmsnorm(x, w):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype) * w

    def rope(self, x):  # x: [B, H, hd], rotate-half style
        cos, sin = self.cos[self.pos], self.sin[self.pos]  # [1, hd/2]
        x1, x2 = x.float().chunk(2, dim=-1)
        c, s = cos[:, None, :], sin[:, None, :]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)

    def step(self):
        s, B = self.s, self.batch
        nh, nkv, hd = s["heads"], s["kv"], s["hd"]
        grp = nh // nkv
        x = self.emb[self.tok]  # [B, d]
        mask = (self.positions <= self.pos)  # [lmax]
        bias = torch.where(mask, 0.0, float("-inf")).to(torch.float32)
        for L in self.layers:
            qkv = self.rmsnorm(x, L["n1"]) @ L["wqkv"].t()
            q, k, v = qkv.split([nh * hd, nkv * hd, nkv * hd], dim=-1)
            q = self.rope(q.view(B, nh, hd))
            k = self.rope(k.view(B, nkv, hd))
            L["k"].index_copy_(2, self.pos, k.view(B, nkv, 1, hd))
            L["v"].index_copy_(2, self.pos, v.view(B, nkv, 1, hd))
            qg = q.view(B, nkv, grp, hd)
            scores = (qg @ L["k"].transpose(-1, -2)).float() * (1.0 / math.sqrt(hd)) + bias
            p = torch.softmax(scores, dim=-1).to(q.dtype)
            o = (p @ L["v"]).reshape(B, nh * hd)
            x = x + o @ L["wo"].t()
            gu = self.rmsnorm(x, L["n2"]) @ L["w13"].t()
            gate, up = gu.chunk(2, dim=-1)
            x = x + (F.silu(gate) * up) @ L["w2"].t()
        logits = self.rmsnorm(x, self.norm) @ self.out.t()
        self.tok.copy_(logits.argmax(dim=-1))
        self.pos.add_(1)


def bench_decode(device, quick, bw, out):
    shapes = ["tiny"] if quick else ["smollm2-135m", "llama-3.2-1b", "llama-3.1-8b"]
    batches = [1, 4] if quick else [1, 16, 64, 256]
    ctx = 40 if quick else 1024
    print(f"{'shape':<14} {'batch':>6} {'tokens/s':>12} {'roofline':>12} {'of roof':>8} {'step ms':>10}")
    for name in shapes:
        for batch in batches:
            s = SHAPES[name]
            dec = Decoder(s, batch, ctx, device)
            steps = 4 if quick else 30
            if device.type == "cuda":
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        dec.step()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    dec.step()
                dec.pos.fill_(ctx)
                run = graph.replay
            else:
                run, graph = dec.step, None
            # Each timed round advances the position by `steps`; keep inside the cache.
            ms = time_ms(run, min(steps, (dec.lmax - ctx - 8) // 3), device)
            kv_bytes = 2 * s["layers"] * batch * s["kv"] * s["hd"] * 2 * (ctx + 32)
            roof = batch / ((dec.weight_bytes + kv_bytes) / bw)
            tps = batch / (ms / 1e3)
            print(f"{name:<14} {batch:>6} {tps:>12.0f} {roof:>12.0f} {100 * tps / roof:>7.1f}% {ms:>10.3f}")
            out["decode"].append(dict(shape=name, batch=batch, context=ctx, tokens_per_s=tps,
                                      roofline_tokens_per_s=roof, step_ms=ms, cache_positions=dec.lmax))
            del dec, run
            graph = None
            if device.type == "cuda":
                torch.cuda.empty_cache()


def bench_sdpa(device, quick, out):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    S, own = (4, 20) if quick else (256, 256)
    nh, nkv, hd = 32, 8, 128
    prefixes = [32] if quick else [16, 64, 128, 512, 2048]
    print(f"\n{'prefix':<10} {'seqs':>8} {'sdpa (ms)':>12} {'backend':>16}")
    for P in prefixes:
        L = P + own
        q = torch.randn(S, nh, 1, hd, device=device, dtype=torch.bfloat16)
        k = torch.randn(S, nkv, L, hd, device=device, dtype=torch.bfloat16)
        v = torch.randn(S, nkv, L, hd, device=device, dtype=torch.bfloat16)
        best, best_name, times = None, None, {}
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                        SDPBackend.MATH):
            try:
                with sdpa_kernel(backend):
                    fn = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
                    fn()
                    ms = time_ms(fn, 2 if quick else 50, device)
            except Exception as e:  # a backend that refuses these shapes
                times[backend.name] = str(e).splitlines()[0][:120]
                continue
            times[backend.name] = ms
            if best is None or ms < best:
                best, best_name = ms, backend.name
        if best is None:
            print(f"{P:<10} {S:>8} {'none ran':>12}")
            continue
        print(f"{P:<10} {S:>8} {best:>12.4f} {best_name:>16}")
        out["sdpa"].append(dict(prefix_tokens=P, unique_tokens=own, sequences=S, heads=nh, kv_heads=nkv,
                                head_dim=hd, best_ms=best, best_backend=best_name, backends=times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["decode", "sdpa"])
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not a.quick:
        sys.exit("torch_ref.py: no GPU visible (use --quick for a CPU smoke run)")
    torch.manual_seed(0)
    out = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "decode": [], "sdpa": []}
    bw = copy_bandwidth(device)
    out["copy_bytes_per_s"] = bw
    print(f"copy bandwidth (read + write): {bw / 1e9:.0f} GB/s")
    with torch.inference_mode():
        if a.only in (None, "sdpa"):
            bench_sdpa(device, a.quick, out)
            if a.json:
                json.dump(out, open(a.json, "w"), indent=1)
        if a.only in (None, "decode"):
            print()
            bench_decode(device, a.quick, bw, out)
    if a.json:
        json.dump(out, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
