#!/usr/bin/env python3
"""Writes tests/data/tokenizer_golden_<flavour>.json: token ids of a varied corpus under
the vocabulary of a GGUF model, computed by Hugging Face `tokenizers` (an implementation
independent of canopy's), for each pre-tokenizer flavour canopy supports.

The BPE model (vocab + merges) is read from the GGUF with the `gguf` package; the
pre-tokenizer is set per flavour exactly as the HF tokenizer.json of the model family
does it, so one vocabulary exercises all four regex sets:

  smollm     Sequence[Digits(individual_digits), ByteLevel(use_regex)]   (SmolLM2)
  gpt2       ByteLevel(use_regex)                                        (GPT-2)
  llama-bpe  Sequence[Split(llama3 regex, isolated), ByteLevel(no regex)], ignore_merges
  qwen2      Sequence[Split(qwen2 regex, isolated), ByteLevel(no regex)]

Control tokens are added as special AddedTokens, so "<|im_start|>" in the corpus encodes
as one id (canopy's Encode(text, parse_special=true)).

Usage: scripts/gen_tokenizer_golden.py [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
           [--gsm8k data/gsm8k.jsonl] [--out tests/data] [--num-gsm8k 40]
"""

import argparse
import json
import os

import gguf
import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

# The Split regexes of Llama 3's and Qwen 2's tokenizer.json.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

FLAVOURS = ["smollm", "gpt2", "llama-bpe", "qwen2"]

HANDWRITTEN = [
    "Hello world",
    "Hello, world! How are you today?",
    " leading space and trailing space ",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you'll see they've said it's what we'd do. I'M SURE YOU'LL SEE THEY'VE",
    "don't won't can't shouldn't 'tis 'S 'Re 'VE 'Ll 'D",
    "1 12 123 1234 12345 123456 1234567 3.14159 -42 +7 1,000,000 2^64=18446744073709551616",
    "Phone: 555-0199, year 2024, 0x1F, 1e-9, 007",
    "Numbers in other scripts: ٣٤٥ ४५६ ²³ ½ Ⅻ 〇",
    "def f(x):\n    if x > 0:\n        return x * 2\n    return -x\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
    "#include <vector>\nint main() { std::vector<int> v{1, 2, 3}; return v.size(); }\n",
    "    indented\n        more\n\t\ttabs\n",
    "\\frac{a}{b} + \\sqrt{x^2 + y^2} = \\int_0^1 f(t)\\,dt \\quad \\text{and} \\; $\\alpha$",
    "$$\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}$$",
    "中文测试：你好，世界！机器学习很有趣。",
    "日本語のテキストです。カタカナとひらがな。",
    "한국어 문장입니다.",
    "Ελληνικά και Русский текст, עברית, العربية",
    "Emoji: 😀😃🎉👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ✨",
    "Mixed: naïve café résumé Ångström façade",
    "multiple   spaces    here     and\ttabs\t\there",
    "newlines\n\nand\n\n\nmore\r\nwindows\r\n\r\nlines\n",
    "trailing whitespace   \n   \n",
    "   ",
    "\n",
    "\n\n\n",
    " \t \n \r\n ",
    "a\u00a0non-breaking\u2009thin\u3000ideographic\u2028line\u2029para space",
    "punctuation!!! ??? ... --- ___ *** ### @@@ $$$ %%% ^^^ &&& ((())) [[[ ]]] {{{ }}}",
    "email@example.com https://example.org/path?q=1&r=2#frag",
    "CamelCaseWord snake_case_word kebab-case-word SCREAMING_CASE",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after<|endoftext|><|im_end|>",
    "<|im_start|system not quite a special token <|im_end",
    "x" * 300,
    " " * 100 + "end",
    "1" * 50,
    "ab" * 100,
    "'s's's'''ss''",
    "Ünïcödé ÀÉÎÕÜ ßẞ ﬁ ﬂ",
    # Bytes SmolLM2 has no token for (0x04, 0x06, 0x13, 0xF1 ...): HF drops them.
    "ctrl\x04chars\x06 here.\x13. and\x1d\x14 \U00050000 \U00090000!",
    "\x00\x01\x07\x08\x0b\x0c\x1b[0m bell and escape",
    "next\u0085line and zero\u200bwidth and bom\ufeff",
]


def read_gguf(path):
    reader = gguf.GGUFReader(path)

    def strings(key):
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    field = reader.fields["tokenizer.ggml.token_type"]
    types = [int(field.parts[i][0]) for i in field.data]
    return strings("tokenizer.ggml.tokens"), types, strings("tokenizer.ggml.merges")


def byte_decoder():
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) +
          list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


BYTE_DECODER = byte_decoder()


def token_bytes(token, token_type):
    if token_type in (3, 4):
        return token.encode("utf-8")
    return bytes(BYTE_DECODER[c] for c in token)


def build(tokens, types, merges, flavour):
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    pairs = []
    for m in merges:
        space = m.index(" ", 1)
        pairs.append((m[:space], m[space + 1:]))
    bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=(flavour == "llama-bpe"))
    tok = Tokenizer(bpe)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if flavour == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif flavour == "gpt2":
        tok.pre_tokenizer = byte_level
    else:
        regex = LLAMA3_SPLIT if flavour == "llama-bpe" else QWEN2_SPLIT
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    specials = [t for t, ty in zip(tokens, types) if ty in (3, 4)]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok


def corpus(gsm8k_path, num_gsm8k):
    texts = list(HANDWRITTEN)
    if gsm8k_path and os.path.exists(gsm8k_path):
        with open(gsm8k_path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= num_gsm8k:
                    break
                row = json.loads(line)
                texts.append(row["question"] + "\n\n" + row["answer"])
    # Everything at once too: pieces meet across case boundaries.
    texts.append("\n".join(texts))
    return texts


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.path.join(root, "models",
                                                        "SmolLM2-135M-Instruct.Q4_1.gguf"))
    parser.add_argument("--gsm8k", default=os.path.join(root, "data", "gsm8k.jsonl"))
    parser.add_argument("--num-gsm8k", type=int, default=40)
    parser.add_argument("--out", default=os.path.join(root, "tests", "data"))
    args = parser.parse_args()

    tokens, types, merges = read_gguf(args.model)
    texts = corpus(args.gsm8k, args.num_gsm8k)
    for flavour in FLAVOURS:
        tok = build(tokens, types, merges, flavour)
        cases = []
        for text in texts:
            ids = tok.encode(text, add_special_tokens=False).ids
            case = {"text": text, "ids": ids}
            # Raw bytes of the ids; differs from the text where a byte had no token.
            decoded = b"".join(token_bytes(tokens[i], types[i]) for i in ids)
            if decoded != text.encode("utf-8"):
                case["decoded_hex"] = decoded.hex()
            cases.append(case)
        path = os.path.join(args.out, f"tokenizer_golden_{flavour}.json")
        with open(path, "w", encoding="utf-8") as f:
            f.write("{\n")
            f.write(f'"model": {json.dumps(os.path.basename(args.model))},\n')
            f.write(f'"flavour": {json.dumps(flavour)},\n')
            f.write(f'"generator": "scripts/gen_tokenizer_golden.py, tokenizers '
                    f'{tokenizers.__version__}",\n')
            f.write('"cases": [\n')
            f.write(",\n".join(json.dumps(c, ensure_ascii=True, separators=(",", ":"))
                               for c in cases))
            f.write("\n]\n}\n")
        print(f"{path}: {len(cases)} cases, {sum(len(c['ids']) for c in cases)} ids")


if __name__ == "__main__":
    main()
