#!/usr/bin/env python3
"""Reference logits and greedy continuations for the default model, from llama.cpp.

Runs the GGUF through llama-cpp-python (an independent implementation: llama.cpp's own
tokenizer, kernels and forward pass) and writes, per prompt, the prompt's token ids, the
last position's logits (the top 64 and a fixed stride sample of the vocabulary), and the
32-token greedy continuation. tests/model/reference_logits_test.cc checks canopy against it.

    pip install llama-cpp-python==0.3.36
    python3 scripts/gen_reference_logits.py models/SmolLM2-135M-Instruct.Q4_1.gguf \
        tests/data/reference_logits_smollm2.json
"""
import json
import sys

import numpy as np
from llama_cpp import Llama

PROMPTS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is 12 plus 30?<|im_end|>\n<|im_start|>assistant\n",
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "<|im_start|>user\nJanet has 3 apples and buys 5 more. Solve step by step."
    "<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village by the sea, there lived",
]
STRIDE = 97
GREEDY = 32


def main() -> None:
    model_path, out_path = sys.argv[1], sys.argv[2]
    llm = Llama(model_path=model_path, n_ctx=1024, n_threads=2, n_batch=512, logits_all=True,
                verbose=False)
    cases = []
    for text in PROMPTS:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[len(ids) - 1], dtype=np.float32)
        top = np.argsort(-logits)[:64]
        greedy = []
        cur = logits
        for _ in range(GREEDY):
            nxt = int(np.argmax(cur))
            greedy.append(nxt)
            llm.eval([nxt])
            cur = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        cases.append({
            "text": text,
            "ids": [int(i) for i in ids],
            "top_ids": [int(i) for i in top],
            "top_logits": [float(logits[i]) for i in top],
            "stride": STRIDE,
            "stride_logits": [float(v) for v in logits[::STRIDE]],
            "greedy": greedy,
        })
    with open(out_path, "w") as f:
        json.dump({"model": model_path.split("/")[-1], "generator": "llama-cpp-python "
                   + __import__("llama_cpp").__version__, "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
