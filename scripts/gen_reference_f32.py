#!/usr/bin/env python3
"""A float32 reference forward pass of a GGUF Llama model, in numpy.

It reads the GGUF the way Hugging Face transformers does (`from_pretrained(gguf_file=...)`):
dequantizes every tensor to float32 with the `gguf` package, undoes llama.cpp's Q/K row
permutation, and runs the Hugging Face Llama forward (rotate-half RoPE) in float32 with no
KV cache. Independent of canopy's code; its logits differ from canopy's only by float32
summation order, so tests compare with a tight tolerance and require identical greedy
continuations. Writes the same JSON layout as gen_reference_logits.py.

    pip install numpy gguf
    python3 scripts/gen_reference_f32.py models/SmolLM2-135M-Instruct.Q4_1.gguf \
        tests/data/reference_logits_smollm2.json tests/data/reference_f32_smollm2.json
"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def load(path):
    r = GGUFReader(path)
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("tokenizer.")}
    arch = f["general.architecture"]
    cfg = dict(
        layers=f[f"{arch}.block_count"], heads=f[f"{arch}.attention.head_count"],
        kv_heads=f[f"{arch}.attention.head_count_kv"], eps=f[f"{arch}.attention.layer_norm_rms_epsilon"],
        theta=f[f"{arch}.rope.freq_base"], arch=arch)
    w = {}
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).astype(np.float32)
        w[t.name] = a.reshape([int(d) for d in reversed(t.shape)]) if a.ndim == 1 and len(t.shape) > 1 else a
    return cfg, w


def unpermute(w, n_head):
    # Inverse of convert_hf_to_gguf's permute: rows [n_head, head_dim/2, 2] -> [n_head, 2, head_dim/2].
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def forward(cfg, w, ids):
    H, KV = cfg["heads"], cfg["kv_heads"]
    x = w["token_embd.weight"][ids].astype(np.float32)
    T, hidden = x.shape
    D = hidden // H
    inv = 1.0 / (cfg["theta"] ** (np.arange(0, D, 2, dtype=np.float32) / D))
    ang = np.arange(T, dtype=np.float32)[:, None] * inv[None, :].astype(np.float32)
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))

    def rope(v):  # v: [n, T, D], HF rotate_half
        rot = np.concatenate([-v[..., D // 2:], v[..., :D // 2]], -1)
        return v * cos + rot * sin

    def norm(v, g):
        return (v / np.sqrt((v.astype(np.float64) ** 2).mean(-1, keepdims=True) + cfg["eps"])).astype(np.float32) * g

    mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
    for l in range(cfg["layers"]):
        p = f"blk.{l}."
        h = norm(x, w[p + "attn_norm.weight"])
        wq, wk = w[p + "attn_q.weight"], w[p + "attn_k.weight"]
        if cfg["arch"] == "llama":
            wq, wk = unpermute(wq, H), unpermute(wk, KV)
        q = (h @ wq.T).reshape(T, H, D).transpose(1, 0, 2)
        k = (h @ wk.T).reshape(T, KV, D).transpose(1, 0, 2)
        v = (h @ w[p + "attn_v.weight"].T).reshape(T, KV, D).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, H // KV, 0), np.repeat(v, H // KV, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(D) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(T, hidden)
        x = x + o @ w[p + "attn_output.weight"].T
        h = norm(x, w[p + "ffn_norm.weight"])
        g = h @ w[p + "ffn_gate.weight"].T
        u = h @ w[p + "ffn_up.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ w[p + "ffn_down.weight"].T
    out = w.get("output.weight", w["token_embd.weight"])
    return norm(x[-1:], w["output_norm.weight"]) @ out.T


def main():
    model, prompts_from, out_path = sys.argv[1:4]
    cfg, w = load(model)
    cases = []
    for c in json.load(open(prompts_from))["cases"]:
        ids = list(c["ids"])
        logits = forward(cfg, w, ids)[0]
        top = np.argsort(-logits)[:64]
        greedy, seq, cur = [], list(ids), logits
        for _ in range(32):
            nxt = int(np.argmax(cur))
            greedy.append(nxt)
            seq.append(nxt)
            cur = forward(cfg, w, seq)[0]
        cases.append({"text": c["text"], "ids": ids, "top_ids": [int(i) for i in top],
                      "top_logits": [float(logits[i]) for i in top], "stride": 97,
                      "stride_logits": [float(v) for v in logits[::97]], "greedy": greedy})
    json.dump({"model": model.split("/")[-1], "generator": "scripts/gen_reference_f32.py (numpy)",
               "cases": cases}, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    main()
