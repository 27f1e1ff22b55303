"""Build a ByteGPT training corpus. Two corpora:

``general`` (the general-text model, issue 15): at least 60 MB of text that the Debian and PyPI packages
installed on this machine ship, in nine kinds (prose, markup, man, info, python, c, shell, config,
licence). Every document is one file; its package, version and licence are recorded in
``manifest.json``. Held out by kind: a document is held out when the first byte of
SHA-256("kind:path") is < 26 (about 10%); duplicates (equal content) are kept once. Kept out of training
entirely, for evaluation: the documentation, man pages and changelogs of git, dpkg and Node.js and the
GNU licence texts (GPL, LGPL, AGPL, FDL, wherever a copy appears).

    python scripts/build_corpus.py general --out /work/corpus/general

The corpus is a function of the packages installed. To rebuild a released model's corpus on another
machine, first install what its model card's ``sources.json`` names (versions no longer in the
archive are reported, not installed)::

    python scripts/build_corpus.py missing \\
        --sources src/entropykit/models/bundled/bytegpt-general/sources.json

Writes ``train.bin`` (documents in hash order, each ending with a blank line), ``heldout/<kind>.bin``,
``eval/{git,dpkg,nodejs,gnu-licences}.bin``, ``manifest.json`` (per document: kind, path, package,
version, licence, bytes, split; and per package totals) and ``summary.json``.

``pydoc`` (the default, the corpus of ``bytegpt-6l`` and ``bytegpt-small``): the reStructuredText sources
of the Python 3.11 documentation.
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
import gzip
import hashlib
import html.parser
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

SOURCES = "usr/share/doc/python3.11/html/_sources"
HELDOUT_CUTOFF = 26  # first hash byte < 26 -> held out (26/256 ~ 10%)


def is_heldout(relpath: str) -> bool:
    return hashlib.sha256(relpath.encode()).digest()[0] < HELDOUT_CUTOFF


def extract(deb: Path, into: Path) -> Path:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return into / SOURCES


def pydoc_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deb", type=Path, help="path to python3.11-doc_*.deb (default: apt-get download)")
    ap.add_argument("--out", type=Path, default=Path("data/corpus"))
    args = ap.parse_args(argv)
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




# ------------------------------------------------------------------------------------------------
# The general corpus
# ------------------------------------------------------------------------------------------------
SITE = Path(sysconfig.get_paths()["purelib"])
KINDS = ("prose", "markup", "man", "info", "python", "c", "shell", "config", "licence")
# Megabytes per kind (train + held-out), so no kind drowns the rest (site-packages alone is 2 GB).
CAPS_MB = {"prose": 11, "markup": 12, "man": 10, "info": 4, "python": 20, "c": 13, "shell": 3,
           "config": 6, "licence": 4}
DOC_CAP = 200_000  # bytes per document (cut at a line end)
PACKAGE_SHARE = 0.15  # at most this share of a kind per package (16631 of 17904 man1 pages are gcloud's)
HELDOUT_CAP = 2_000_000  # bytes of held-out text kept per kind (the rest of the held-out docs is unused)
EVAL_CAP = 3_000_000
EXCLUDED_PKG = re.compile(r"^(git|git-.*|dpkg|dpkg-.*|libdpkg-perl|nodejs|nodejs-.*|libnode.*|node-.*|npm)$")
GNU_LICENCE = re.compile(
    rb"GNU (LESSER |LIBRARY |AFFERO )?GENERAL PUBLIC LICENSE\s+Version \d|GNU Free Documentation License\s+"
    rb"Version 1|The GNU General Public License is a free, copyleft license|The licenses for most "
    rb"software are designed to take away your\s+freedom",
    re.IGNORECASE,
)
PROSE_NAMES = re.compile(r"^(README|NEWS|CHANGES|CHANGELOG|changelog|HISTORY|AUTHORS|THANKS|TODO|FAQ|BUGS|"
                         r"NOTES|CREDITS|ACKS|INSTALL|USAGE)([._-].*)?$|\.txt$", re.IGNORECASE)
CONFIG_EXT = {".ini", ".cfg", ".conf", ".toml", ".yaml", ".yml", ".json", ".csv", ".tsv", ".properties"}


class Doc:
    """One document: its kind, path, bytes, provenance and split (a plain class, so that the script
    also loads through ``importlib`` without being registered in ``sys.modules``)."""

    def __init__(self, kind: str, path: str, data: bytes, package: str = "?", version: str = "?",
                 licence: str = "?", split: str = "train") -> None:
        self.kind, self.path, self.data = kind, path, data
        self.package, self.version, self.licence, self.split = package, version, licence, split


def _read(p: Path) -> bytes | None:
    try:
        raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    return _clean(raw)


def _clean(raw: bytes) -> bytes | None:
    if not raw.strip() or b"\0" in raw[:65536]:
        return None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(raw) > DOC_CAP:
        cut = raw.rfind(b"\n", 0, DOC_CAP)
        raw = raw[: cut + 1 if cut > 0 else DOC_CAP]
    return raw.rstrip(b"\n") + b"\n\n"


def _html_text(raw: bytes) -> bytes:
    class P(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.out: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag: str, attrs: object) -> None:
            self.skip += tag in ("script", "style")
            if tag in ("p", "br", "div", "li", "h1", "h2", "h3", "h4", "pre", "tr"):
                self.out.append("\n")

        def handle_endtag(self, tag: str) -> None:
            self.skip -= tag in ("script", "style") and self.skip > 0

        def handle_data(self, data: str) -> None:
            if not self.skip:
                self.out.append(data)

    p = P()
    p.feed(raw.decode("utf-8", "replace"))
    text = re.sub(r"\n\s*\n\s*\n+", "\n\n", "".join(p.out))
    return text.encode()


def _render_man(path: str) -> bytes | None:
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
    try:
        out = subprocess.run(["man", "-l", path], capture_output=True, env=env, timeout=60).stdout
    except subprocess.TimeoutExpired:
        return None
    return _clean(out)


def _dpkg_owners() -> tuple[dict[str, str], dict[str, str]]:
    """path -> Debian package, and package -> version (from dpkg's own database)."""
    owner: dict[str, str] = {}
    for lst in sorted(Path("/var/lib/dpkg/info").glob("*.list")):
        pkg = lst.stem.split(":")[0]
        for line in lst.read_text(errors="replace").splitlines():
            owner.setdefault(line, pkg)
    q = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\n"], capture_output=True, text=True)
    versions = dict(line.split(" ", 1) for line in q.stdout.splitlines() if " " in line)
    return owner, versions


_LICENCE_CACHE: dict[str, str] = {}


def _deb_licence(pkg: str) -> str:
    if pkg not in _LICENCE_CACHE:
        cp = Path("/usr/share/doc") / pkg / "copyright"
        names: list[str] = []
        if cp.is_file():
            for m in re.finditer(r"^License:\s*(\S.*)$", cp.read_text(errors="replace"), re.MULTILINE):
                if m.group(1).strip() not in names:
                    names.append(m.group(1).strip())
        _LICENCE_CACHE[pkg] = " | ".join(names[:6]) if names else f"see {cp}"
    return _LICENCE_CACHE[pkg]


def _pypi_owners() -> dict[str, tuple[str, str, str]]:
    """site-packages path -> (PyPI name, version, licence), from importlib.metadata."""
    out: dict[str, tuple[str, str, str]] = {}
    for dist in importlib.metadata.distributions(path=[str(SITE)]):
        meta = dist.metadata
        lic = meta.get("License-Expression") or ""
        if not lic and meta.get("License") and len(meta["License"]) < 80:
            lic = meta["License"]
        if not lic:
            lic = "; ".join(c.split("::")[-1].strip() for c in meta.get_all("Classifier") or []
                            if c.startswith("License ::")) or "see the distribution's LICENSE file"
        info = (meta["Name"], dist.version, lic)
        for f in dist.files or []:
            out[str((SITE / f).resolve())] = info
    return out


def _walk(root: Path, pattern: str = "*") -> list[Path]:
    if not root.exists():
        return []
    return sorted(p for p in root.rglob(pattern) if p.is_file() and not p.is_symlink())


def _candidates() -> dict[str, list[Path]]:
    """Every candidate file per kind (not yet read)."""
    doc = _walk(Path("/usr/share/doc"))
    site = _walk(SITE) + _walk(Path("/usr/lib/python3/dist-packages"))
    stdlib = [p for p in _walk(Path("/usr/lib/python3.11")) if "site-packages" not in p.parts
              and "dist-packages" not in p.parts]

    def name(p: Path) -> str:
        return p.name[:-3] if p.name.endswith(".gz") else p.name

    cand: dict[str, list[Path]] = {k: [] for k in KINDS}
    cand["prose"] = [p for p in doc if PROSE_NAMES.search(name(p))
                     and not name(p).endswith((".md", ".rst", ".html", ".htm"))]
    cand["markup"] = [p for p in doc + site if name(p).endswith((".md", ".rst", ".rst.txt", ".html", ".htm"))
                      or (p.name == "METADATA" and p.parent.name.endswith(".dist-info"))]
    cand["man"] = [p for s in range(1, 9) for p in _walk(Path(f"/usr/share/man/man{s}"))]
    cand["info"] = [p for p in _walk(Path("/usr/share/info")) if ".info" in p.name]
    cand["python"] = [p for p in stdlib + site if p.suffix == ".py"]
    cand["c"] = [p for p in _walk(Path("/usr/include")) if p.suffix in (".h", ".hpp", ".hh")]
    shell = []
    for p in _walk(Path("/usr/bin")) + _walk(Path("/usr/sbin")) + _walk(Path("/etc")) + doc:
        if p.suffix == ".sh":
            shell.append(p)
            continue
        try:
            with p.open("rb") as f:
                first = f.readline(100)
        except OSError:
            continue
        if re.match(rb"#!\s*\S*/(env\s+)?(ba|da|z|k)?sh\b", first):
            shell.append(p)
    cand["shell"] = shell
    cand["config"] = [p for p in _walk(Path("/etc")) + _walk(Path("/usr/share")) + site
                      if p.suffix.lower() in CONFIG_EXT and "/usr/share/doc/" not in str(p)]
    cand["licence"] = (
        [p for p in doc if p.name == "copyright"]
        + [p for p in site if re.match(r"^(LICEN[CS]E|COPYING|NOTICE)", p.name, re.IGNORECASE)]
        + _walk(Path("/usr/share/common-licenses"))
    )
    return cand


def _key(kind: str, path: str) -> bytes:
    return hashlib.sha256(f"{kind}:{path}".encode()).digest()


def general_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="build_corpus.py general", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/work/corpus/general"))
    ap.add_argument("--workers", type=int, default=2, help="processes that render man pages")
    args = ap.parse_args(argv)
    t0 = time.time()
    owner, versions = _dpkg_owners()
    pypi = _pypi_owners()
    cand = _candidates()
    print(f"candidates ({time.time() - t0:.0f}s):", {k: len(v) for k, v in cand.items()}, flush=True)

    def provenance(p: Path) -> tuple[str, str, str]:
        real = str(p.resolve())
        if real in pypi:
            return pypi[real]
        pkg = owner.get(str(p)) or owner.get(real)
        if pkg is None and str(p).startswith("/usr/share/doc/"):
            pkg = p.parts[4] if p.parts[4] in versions else None
        if pkg is None:
            return ("(no package)", "?", "?")
        return (pkg, versions.get(pkg, "?"), _deb_licence(pkg))

    def excluded(p: Path, pkg: str) -> str | None:
        if EXCLUDED_PKG.match(pkg) or "node_modules" in p.parts:
            return "nodejs" if "node" in pkg or "node_modules" in p.parts else pkg.split("-")[0]
        return None

    seen: set[bytes] = set()
    seen_paths: set[str] = set()
    docs: list[Doc] = []
    evals: dict[str, list[Doc]] = {k: [] for k in ("git", "dpkg", "nodejs", "gnu-licences")}
    for kind in KINDS:
        cap = CAPS_MB[kind] * 1_000_000
        total = 0
        per_pkg: dict[str, int] = {}
        # visiting order: another hash than the split's (visiting in split-hash order until the cap
        # would take the held-out documents first)
        order = sorted(cand[kind], key=lambda p: _key("order", f"{kind}:{p}"))
        batch: list[tuple[Path, tuple[str, str, str], str | None]] = []
        pos = 0
        while pos < len(order) and total < cap:
            # read in small batches (man pages are rendered by a process pool)
            chunk = order[pos : pos + 64]
            pos += 64
            batch = [(p, prov := provenance(p), excluded(p, prov[0])) for p in chunk]
            batch = [b for b in batch if per_pkg.get(b[1][0], 0) < PACKAGE_SHARE * cap and b[1][1] != "?"]
            if kind == "man":
                with ProcessPoolExecutor(args.workers) as pool:
                    datas = list(pool.map(_render_man, [str(p) for p, _, _ in batch]))
            else:
                datas = [_read(p) for p, _, _ in batch]
                if kind == "markup":
                    datas = [_clean(_html_text(d)) if d and p.suffix in (".html", ".htm") else d
                             for d, (p, _, _) in zip(datas, batch)]
            for (p, (pkg, ver, lic), excl), data in zip(batch, datas):
                if data is None or len(data) < 64:
                    continue
                h = hashlib.sha256(data).digest()
                if h in seen or str(p) in seen_paths:  # one copy of a content, one kind per file
                    continue
                seen.add(h)
                seen_paths.add(str(p))
                d = Doc(kind, str(p), data, pkg, ver, lic)
                if GNU_LICENCE.search(data[:20000]):
                    d.split = "eval"
                    evals["gnu-licences"].append(d)
                elif excl:
                    d.split = "eval"
                    evals[excl if excl in evals else "git"].append(d)
                else:
                    d.split = "heldout" if _key(kind, str(p))[0] < HELDOUT_CUTOFF else "train"
                    total += len(data)
                    per_pkg[pkg] = per_pkg.get(pkg, 0) + len(data)
                    docs.append(d)
        print(f"{kind}: {total / 1e6:.1f} MB ({time.time() - t0:.0f}s)", flush=True)

    # the excluded packages' files that were not candidates of any kind above still make the eval sets
    # only through the kinds (their man pages, docs, changelogs); nothing else is needed.
    out = args.out
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    (out / "eval").mkdir(parents=True, exist_ok=True)
    train = sorted((d for d in docs if d.split == "train"), key=lambda d: hashlib.sha256(d.data).digest())
    with (out / "train.bin").open("wb") as f:
        for d in train:
            f.write(d.data)
    for kind in KINDS:
        size = 0
        with (out / "heldout" / f"{kind}.bin").open("wb") as f:
            for d in sorted((d for d in docs if d.split == "heldout" and d.kind == kind),
                            key=lambda d: _key(kind, d.path)):
                if size + len(d.data) > HELDOUT_CAP:
                    d.split = "unused"
                    continue
                f.write(d.data)
                size += len(d.data)
    for name, ds in evals.items():
        size = 0
        with (out / "eval" / f"{name}.bin").open("wb") as f:
            for d in sorted(ds, key=lambda d: _key(d.kind, d.path)):
                if size + len(d.data) > EVAL_CAP:
                    continue
                f.write(d.data)
                size += len(d.data)
        docs.extend(ds)
    packages: dict[str, dict[str, object]] = {}
    for d in docs:
        e = packages.setdefault(d.package, {"version": d.version, "licence": d.licence, "bytes": {}})
        b = e["bytes"]
        assert isinstance(b, dict)
        b[d.split] = b.get(d.split, 0) + len(d.data)
    manifest = {
        "documents": [{"kind": d.kind, "path": d.path, "package": d.package, "version": d.version,
                       "licence": d.licence, "bytes": len(d.data), "split": d.split} for d in docs],
        "packages": dict(sorted(packages.items())),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=0) + "\n")
    summary: dict[str, dict[str, int]] = {}
    for d in docs:
        s = summary.setdefault(d.kind, {})
        s[d.split] = s.get(d.split, 0) + len(d.data)
        s["documents"] = s.get("documents", 0) + 1
    summary["eval-files"] = {f"{k}.bin": (out / "eval" / f"{k}.bin").stat().st_size for k in evals}
    summary["train-bytes"] = {"train.bin": (out / "train.bin").stat().st_size}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"done in {time.time() - t0:.0f}s")


def missing_main(argv: list[str]) -> None:
    """Print the commands that install, on this machine, the packages a model card's sources.json names
    and this machine lacks (the corpus is built from what is installed, so rebuilding it elsewhere
    needs them: ``python scripts/build_corpus.py missing --sources DIR/sources.json``)."""
    ap = argparse.ArgumentParser(prog="build_corpus.py missing", description=missing_main.__doc__)
    ap.add_argument("--sources", type=Path,
                    default=Path(__file__).resolve().parents[1]
                    / "src/entropykit/models/bundled/bytegpt-general/sources.json")
    args = ap.parse_args(argv)
    wanted: dict[str, dict[str, object]] = json.loads(args.sources.read_text())
    _, debs = _dpkg_owners()
    def key(name: str) -> str:  # one spelling of a distribution name ("Foo_Bar" and "foo-bar")
        return name.lower().replace("_", "-")

    pypi = {key(d.metadata["Name"]): d.version for d in importlib.metadata.distributions(path=[str(SITE)])}
    apt, pip, other = [], [], []
    for name, entry in sorted(wanted.items()):
        version = str(entry["version"])
        if debs.get(name) == version or pypi.get(key(name)) == version:
            continue
        if key(name) in pypi or not re.search(r"[-~:]", version):  # a PEP 440 version: a PyPI distribution
            pip.append(f"{name}=={version}")
            continue
        q = subprocess.run(["apt-cache", "policy", name], capture_output=True, text=True).stdout
        match = re.search(r"Candidate:\s*(\S+)", q)
        candidate = match.group(1) if match else "none"
        if candidate == version:
            apt.append(name)
        else:
            other.append(f"{name} (want {version}, Debian has {candidate})")
    if apt:
        print("apt-get install -y " + " ".join(apt))
    if pip:
        print("pip install torch==2.13.0 " + " ".join(pip))
    for line in other:
        print(f"# not installable at the recorded version: {line}")
    if not (apt or pip or other):
        print("# every package is installed at its recorded version")


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["missing"]:
        missing_main(argv[1:])
    elif argv[:1] == ["general"]:
        general_main(argv[1:])
    else:
        pydoc_main(argv[1:] if argv[:1] == ["pydoc"] else argv)


if __name__ == "__main__":
    main()
