"""Held-out evaluation of a general-text ByteGPT checkpoint vs the bundled bytegpt-6l, xz -9e and zstd -19.

Claims checked (issue 15): on every held-out kind of text, the new model's bits/byte is below the old
default's (``bytegpt-6l``, trained on the Python docs' reST only), and ``entropykit compress`` with it
is <= 1.0x ``xz -9e`` (<= 0.75x on prose/Markdown). Data: the first ``--kb`` KB of each held-out kind
of ``scripts/build_corpus.py general`` (``heldout/<kind>.bin``: documents never trained on) and of the
evaluation-only sets (``eval/{git,dpkg,nodejs,gnu-licences}.bin``: packages kept out of training
altogether). Rerun it on any later checkpoint.

Columns: bits/byte of ``entropykit.lm.score`` (float32; strided windows, stride C/2, for both models;
and the sliding KV cache, ``slide=True``, for a rotary model), then sizes as bits/byte of the input:
``xz -9e`` and ``zstd -19`` (whole slice, their CLIs' formats; the stdlib ``lzma`` stands in for xz
when the binary is missing) and ``entropykit compress`` (default options: 4 KB chunks, window 768 for a
sliding KV cache (rotary models), 512 re-primed windows otherwise,
precision "auto", LZMA2 fallback per chunk, the match model mixed in) on the first ``--compress-kb``
KB with each model, and with the new model alone (``match=False``: what the match model adds),
against xz on the same bytes. KB = 1000 bytes.

Run:  python benchmarks/heldout.py --new /work/train/general [--kb 32] [--compress-kb 12] [--no-record]
      (``--new`` is a model directory, a bundled name, or a run directory holding checkpoint.pt)
"""

from __future__ import annotations

import argparse
import lzma
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep (a shared machine)

import torch

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from _common import markdown_table, record  # noqa: E402
from entropykit.codec import compress, decompress  # noqa: E402
from entropykit.lm import score  # noqa: E402
from entropykit.models import ByteModel, LanguageModel, load_model  # noqa: E402
from entropykit.models.bytegpt import ByteGPT, ByteGPTConfig  # noqa: E402

CORPUS = Path("/work/corpus/general")
PROSE = ("prose", "markup", "nodejs", "git")  # English prose / Markdown / reST kinds (the 0.75x goal)


def load_new(spec: str) -> LanguageModel:
    p = Path(spec)
    if (p / "checkpoint.pt").exists():
        ck = torch.load(p / "checkpoint.pt", weights_only=False, map_location="cpu")
        model = ByteGPT(ByteGPTConfig(**ck["config"]))
        model.load_state_dict(ck["model"])
        return ByteModel(model.eval(), f"general-step{ck['step']}")
    return load_model(spec)


def cli_size(argv: list[str], data: bytes) -> int | None:
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    return len(subprocess.run([exe, *argv[1:]], input=data, capture_output=True, check=True).stdout)


def xz_size(data: bytes) -> int:
    n = cli_size(["xz", "-9e", "-c", "-q"], data)
    return n if n is not None else len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new", required=True, help="model dir, bundled name or run dir with checkpoint.pt")
    ap.add_argument("--old", default="bytegpt-6l")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--kb", type=float, default=32.0, help="KB of each set scored")
    ap.add_argument("--compress-kb", type=float, default=12.0, help="KB of each set compressed (0: skip)")
    ap.add_argument("--verify", action="store_true", help="also decompress and compare")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    new, old = load_new(args.new), load_model(args.old)
    rope = isinstance(new, ByteModel) and new.module.wpe is None
    sets = [(p.stem, p) for p in sorted((args.corpus / "heldout").glob("*.bin"))]
    sets += [(f"eval:{p.stem}", p) for p in sorted((args.corpus / "eval").glob("*.bin"))]
    rows = []
    sums = {"old": 0.0, "new": 0.0, "slide": 0.0, "xz": 0.0, "n": 0}
    t_score = {"old": 0.0, "new": 0.0, "slide": 0.0}
    t_comp = {"old": 0.0, "new": 0.0}
    n_comp = 0
    for name, path in sets:
        data = path.read_bytes()[: int(args.kb * 1000)]
        row: list[object] = [name, len(data)]
        bpb = {}
        for key, lm, kw in (("old", old, {}), ("new", new, {}), ("slide", new, {"slide": True})):
            if key == "slide" and not rope:
                bpb[key] = float("nan")
                continue
            t = time.perf_counter()
            bpb[key] = score(data, lm, precision="float32", progress=False, **kw).summary["bits_per_byte"]
            t_score[key] += time.perf_counter() - t
        xz = 8 * xz_size(data) / len(data)
        zs = cli_size(["zstd", "-19", "-q", "-c"], data)
        zstd = 8 * zs / len(data) if zs is not None else float("nan")
        row += [bpb["old"], bpb["new"], bpb["slide"], xz, zstd]
        sums["n"] += len(data)
        for k in ("old", "new", "slide"):
            sums[k] += bpb[k] * len(data)
        sums["xz"] += xz * len(data)
        if args.compress_kb > 0:
            part = data[: int(args.compress_kb * 1000)]
            xz_part = xz_size(part)
            sizes = {}
            for key, lm, match in (("old", old, True), ("new", new, True), ("alone", new, False)):
                t = time.perf_counter()
                blob = compress(part, lm, workers=1, match=match)
                if key in t_comp:
                    t_comp[key] += time.perf_counter() - t
                if args.verify:
                    assert decompress(blob, lm) == part, f"round trip failed: {name} {key}"
                sizes[key] = len(blob)
            n_comp += len(part)
            row += [sizes["old"] / xz_part, sizes["alone"] / xz_part, sizes["new"] / xz_part]
        rows.append(row)
        columns = ["set", "bytes", "old", "new", "new sliding", "xz -9e", "zstd -19", "old compress / xz",
                   "new, no match / xz", "new compress / xz"]
        print(markdown_table(columns[: len(row)], [row]), flush=True)
    n = sums["n"]
    total = ["all (byte-weighted)", n, *(sums[k] / n for k in ("old", "new", "slide", "xz")), "", "", "", ""]
    rows.append(total[: len(rows[0])])
    header = ["set", "bytes", f"{old.name} bits/byte", f"{new.name} bits/byte", "new, sliding cache",
              "xz -9e", "zstd -19", "compress old / xz", "compress new, no match / xz",
              "compress new / xz"][: len(rows[0])]
    table = markdown_table(header, rows)
    slide = f", new sliding {n / t_score['slide']:.0f}" if rope else ""
    speed = (f"Scoring speed (float32, bytes/s, summed over the sets): old {n / t_score['old']:.0f}, new "
             f"{n / t_score['new']:.0f}{slide}. ")
    if n_comp:
        old_kb, new_kb = n_comp / t_comp["old"] / 1000, n_comp / t_comp["new"] / 1000
        speed += f'Compression ("auto" precision, 1 worker): old {old_kb:.1f} KB/s, new {new_kb:.1f} KB/s.'

    print(table)
    print(speed)
    load = os.getloadavg()
    body = (
        f"New model: `{new.identity}` ({args.new}); old: `{old.identity}`. First {args.kb:g} KB of each "
        f"held-out kind (scored) and first {args.compress_kb:g} KB (compressed).\n\n{table}\n\n{speed}\n\n"
        f"Shared machine: load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} during the run; "
        "speeds are indicative only."
    )
    if not args.no_record:
        record("heldout_general", "Held-out kinds: general ByteGPT vs bytegpt-6l, xz -9e, zstd -19",
               "python " + " ".join(["benchmarks/heldout.py", *sys.argv[1:]]), body)


if __name__ == "__main__":
    main()
