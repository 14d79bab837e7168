#!/usr/bin/env python3
"""Byte-level BPE tokenizer trainer (GPT-2 style), written from scratch.

* bytes are mapped to printable unicode characters with GPT-2's `bytes_to_unicode` table;
* text is pre-tokenised with GPT-2's regex (the same one the Hugging Face `ByteLevel`
  pre-tokenizer uses with `use_regex: true`);
* merges are learned on the *counts* of distinct pre-tokenised words with incremental
  pair-count updates, so training on the ~6 MB Brown corpus takes well under a minute.

Output: a standard Hugging Face `tokenizer.json` (model BPE, ByteLevel pre-tokenizer/decoder, a
`<|bos|> $A` post-processor) and `tokenizer_config.json` (bos/eos, `add_bos_token: true`,
model_max_length, chat template), plus the tokenised
splits `train.bin` / `heldout.bin` (uint16, each document = <|bos|> text <|eos|>).

Usage:
  python3 train_tokenizer.py /work/train-data [--vocab 3072]
(reads <data>/train.jsonl, <data>/heldout.jsonl written by prepare_data.py; writes
<data>/tokenizer/{tokenizer.json,tokenizer_config.json} and <data>/{train,heldout}.bin)
"""
import argparse
import collections
import json
import os
import re
import sys
import time

SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>"]

# GPT-2 pre-tokenisation pattern. The original uses \p{L} / \p{N}; Python's `re` has no \p{..},
# so letters are [^\W\d_] and numbers \d -- identical on the (pure ASCII) corpus.
GPT2_PATTERN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>' + message['content'] + eos_token }}"
    "{% else %}{{ message['content'] }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {v: k for k, v in BYTE_ENCODER.items()}


def pretokenize(text):
    return GPT2_PATTERN.findall(text)


def to_byte_symbols(word):
    return "".join(BYTE_ENCODER[b] for b in word.encode("utf-8"))


def train_bpe(texts, vocab_size, min_freq=2, log=print):
    """Returns (vocab: token string -> id, merges: list of (a, b) token strings)."""
    t0 = time.time()
    word_counts = collections.Counter()
    for t in texts:
        word_counts.update(pretokenize(t))
    log(f"[bpe] {len(word_counts)} distinct pre-tokens ({sum(word_counts.values())} total) in {time.time()-t0:.1f}s")

    id_to_tok = list(SPECIAL_TOKENS) + [BYTE_ENCODER[b] for b in range(256)]
    tok_to_id = {t: i for i, t in enumerate(id_to_tok)}
    words = []   # list of symbol-id lists
    counts = []
    for w, c in word_counts.items():
        words.append([tok_to_id[ch] for ch in to_byte_symbols(w)])
        counts.append(c)

    pair_counts = collections.defaultdict(int)
    where = collections.defaultdict(set)
    for wi, (syms, c) in enumerate(zip(words, counts)):
        for a, b in zip(syms, syms[1:]):
            pair_counts[(a, b)] += c
            where[(a, b)].add(wi)

    merges = []
    while len(id_to_tok) < vocab_size:
        if not pair_counts:
            break
        # most frequent pair; ties broken deterministically by the smaller ids
        (a, b), c = max(pair_counts.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))
        if c < min_freq:
            break
        new_id = len(id_to_tok)
        new_tok = id_to_tok[a] + id_to_tok[b]
        id_to_tok.append(new_tok)
        tok_to_id[new_tok] = new_id
        merges.append((id_to_tok[a], id_to_tok[b]))
        for wi in list(where[(a, b)]):
            syms, wc = words[wi], counts[wi]
            # remove old pair contributions of this word
            for p in zip(syms, syms[1:]):
                pair_counts[p] -= wc
                if pair_counts[p] <= 0:
                    del pair_counts[p]
                where[p].discard(wi)
            out = []
            i = 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[wi] = out
            for p in zip(out, out[1:]):
                pair_counts[p] += wc
                where[p].add(wi)
        where.pop((a, b), None)
        if len(merges) % 500 == 0:
            log(f"[bpe] {len(merges)} merges, vocab {len(id_to_tok)}, last {new_tok!r} x{c}, {time.time()-t0:.1f}s")
    vocab = {t: i for i, t in enumerate(id_to_tok)}
    return vocab, merges


class BPETokenizer:
    """Minimal encoder/decoder equivalent to the Hugging Face BPE + ByteLevel pipeline we export."""

    def __init__(self, vocab, merges):
        self.vocab = vocab
        self.id_to_tok = {i: t for t, i in vocab.items()}
        self.ranks = {tuple(m): r for r, m in enumerate(merges)}
        self.special = {t: vocab[t] for t in SPECIAL_TOKENS if t in vocab}
        self.cache = {}

    @classmethod
    def load(cls, path):
        with open(path) as f:
            tj = json.load(f)
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in tj["model"]["merges"]]
        return cls(tj["model"]["vocab"], merges)

    def _bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        syms = list(to_byte_symbols(word))
        while len(syms) > 1:
            best = None
            for i in range(len(syms) - 1):
                r = self.ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            a, b = syms[best[1]], syms[best[1] + 1]
            out = []
            i = 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            syms = out
        ids = [self.vocab[s] for s in syms]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        """Plain text (special-token strings in the text are recognised, as HF added_tokens are)."""
        ids = []
        pat = "(" + "|".join(re.escape(s) for s in self.special) + ")"
        for part in re.split(pat, text):
            if not part:
                continue
            if part in self.special:
                ids.append(self.special[part])
                continue
            for w in pretokenize(part):
                ids.extend(self._bpe(w))
        return ids

    def decode(self, ids, skip_special=True):
        out = []
        buf = []
        for i in ids:
            t = self.id_to_tok[int(i)]
            if t in self.special:
                if buf:
                    out.append(bytes(buf).decode("utf-8", errors="replace")); buf = []
                if not skip_special:
                    out.append(t)
                continue
            buf.extend(BYTE_DECODER[ch] for ch in t)
        if buf:
            out.append(bytes(buf).decode("utf-8", errors="replace"))
        return "".join(out)


def bos_post_processor(vocab):
    """`<|bos|> $A` for one text (and `<|bos|> $A <|bos|> $B` for a pair), the post-processor that
    transformers' fast tokenizers build from `add_bos_token: true`: the model was trained on documents
    that start with <|bos|>, so every encoded text must start with it too."""
    bos = "<|bos|>"
    return {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [vocab[bos]], "tokens": [bos]}},
    }


def tokenizer_json(vocab, merges):
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for t in SPECIAL_TOKENS
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": bos_post_processor(vocab),
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": vocab,
            "merges": [f"{a} {b}" for a, b in merges],
        },
    }


def tokenizer_config(max_len=256):
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|bos|>",
        "eos_token": "<|eos|>",
        "pad_token": "<|eos|>",
        "unk_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len,
        "additional_special_tokens": ["<|user|>", "<|assistant|>"],
        "chat_template": CHAT_TEMPLATE,
    }


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default="/work/train-data")
    ap.add_argument("--vocab", type=int, default=3072)
    ap.add_argument("--max-len", type=int, default=256)
    args = ap.parse_args()
    import numpy as np

    train = read_jsonl(os.path.join(args.data, "train.jsonl"))
    held = read_jsonl(os.path.join(args.data, "heldout.jsonl"))
    vocab, merges = train_bpe([d["text"] for d in train], args.vocab)
    tdir = os.path.join(args.data, "tokenizer")
    os.makedirs(tdir, exist_ok=True)
    with open(os.path.join(tdir, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(vocab, merges), f, ensure_ascii=False)
    with open(os.path.join(tdir, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(args.max_len), f, indent=2)
    print(f"vocab {len(vocab)} ({len(merges)} merges) -> {tdir}")

    tok = BPETokenizer.load(os.path.join(tdir, "tokenizer.json"))
    bos, eos = vocab["<|bos|>"], vocab["<|eos|>"]
    for name, docs in (("train", train), ("heldout", held)):
        ids = []
        nbytes = 0
        for d in docs:
            e = tok.encode(d["text"])
            assert tok.decode(e) == d["text"], d["id"]
            ids += [bos] + e + [eos]
            nbytes += len(d["text"].encode())
        np.asarray(ids, dtype=np.uint16).tofile(os.path.join(args.data, f"{name}.bin"))
        print(f"{name}: {len(docs)} docs, {len(ids)} tokens, {nbytes/len(ids):.2f} bytes/token")


if __name__ == "__main__":
    main()
