"""Build the bundled model's corpus: the reStructuredText sources of the Python 3.11 documentation.

Source: Debian's ``python3.11-doc`` package (PSF License Version 2), files
``usr/share/doc/python3.11/html/_sources/**/*.rst.txt``. The split is by document and deterministic:
a document is held out when the first byte of SHA-256(relative path) is < 26 (about 10%). The held-out
documents are never trained on.

    python scripts/build_corpus.py --out data/corpus      # fetches the .deb with apt-get download
    python scripts/build_corpus.py --deb python3.11-doc_*.deb --out data/corpus

Writes ``train.bin`` / ``heldout.bin`` (documents concatenated, each ending with a blank line),
``split.json`` (the document lists with their sizes) and ``train-sample.bin`` (the first train
documents in hash order, up to 512 KB: member passages for membership-inference evaluations).
The repository ships ``heldout.bin``, ``train-sample.bin`` and ``split.json`` in ``data/corpus``;
``train.bin`` (10 MB) is rebuilt by this script when training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

SOURCES = "usr/share/doc/python3.11/html/_sources"
HELDOUT_CUTOFF = 26  # first hash byte < 26 -> held out (26/256 ~ 10%)


def is_heldout(relpath: str) -> bool:
    return hashlib.sha256(relpath.encode()).digest()[0] < HELDOUT_CUTOFF


def extract(deb: Path, into: Path) -> Path:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return into / SOURCES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deb", type=Path, help="path to python3.11-doc_*.deb (default: apt-get download)")
    ap.add_argument("--out", type=Path, default=Path("data/corpus"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        deb = args.deb
        if deb is None:
            subprocess.run(["apt-get", "download", "python3.11-doc"], cwd=tmp, check=True)
            deb = next(Path(tmp).glob("python3.11-doc_*.deb"))
        root = extract(deb, Path(tmp) / "x")
        docs = sorted(p for p in root.rglob("*.rst.txt"))
        split: dict[str, list[tuple[str, int]]] = {"train": [], "heldout": []}
        blobs: dict[str, list[bytes]] = {"train": [], "heldout": []}
        for p in docs:
            rel = str(p.relative_to(root))
            data = p.read_bytes().rstrip(b"\n") + b"\n\n"
            part = "heldout" if is_heldout(rel) else "train"
            split[part].append((rel, len(data)))
            blobs[part].append(data)
    args.out.mkdir(parents=True, exist_ok=True)
    for part in ("train", "heldout"):
        (args.out / f"{part}.bin").write_bytes(b"".join(blobs[part]))
    by_hash = sorted(
        zip(split["train"], blobs["train"]), key=lambda d: hashlib.sha256(d[0][0].encode()).digest()
    )
    sample, size = [], 0
    for (_, n), data in by_hash:
        if size + n > 512 * 1024:
            continue
        sample.append(data)
        size += n
    (args.out / "train-sample.bin").write_bytes(b"".join(sample))
    (args.out / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    for part in ("train", "heldout"):
        print(f"{part}: {len(split[part])} documents, {sum(n for _, n in split[part])} bytes")


if __name__ == "__main__":
    main()
