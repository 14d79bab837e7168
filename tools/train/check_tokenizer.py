#!/usr/bin/env python3
"""Verify the exported tokenizer with the JS library the runtime uses (@huggingface/tokenizers):
JS encode -> decode round-trips on held-out text and JS token ids == Python encoder ids.

  /usr/bin/python3 tools/train/check_tokenizer.py [tokenizer dir] [heldout.jsonl]
(run from the repo root; needs node and the project's node_modules)
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_tokenizer import BPETokenizer  # noqa: E402


def main():
    tdir = sys.argv[1] if len(sys.argv) > 1 else "public/models/webmoe-tiny"
    held = sys.argv[2] if len(sys.argv) > 2 else "/work/train-data/heldout.jsonl"
    out = "/tmp/webmoe_tok_js_ids.json"
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run(["node", os.path.join(here, "check_tokenizer.mjs"), tdir, held, out], check=True)
    js = json.load(open(out))
    tok = BPETokenizer.load(os.path.join(tdir, "tokenizer.json"))
    bad = 0
    ntok = 0
    for t, j in zip(js["texts"], js["ids"]):
        p = tok.encode(t)
        ntok += len(p)
        if p != j:
            bad += 1
            print("MISMATCH", repr(t[:60]), p[:16], j[:16])
        if "<|" not in t and tok.decode(p) != t:
            bad += 1
            print("python round-trip mismatch", repr(t[:60]))
    print(f"{len(js['texts'])} texts, {ntok} tokens: {'OK, ids identical' if bad == 0 else f'{bad} mismatches'}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
