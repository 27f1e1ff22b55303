"""Containers of earlier versions still decode (fixtures written by the version-2, -3 and -4 writers).

A fixture's model-coded chunks hold the float32 arithmetic of the machine that wrote it, and a CPU
of another family may round a logit to the other side of the 1/32-nat grid (the portability rule of
``docs/container-format.md``). So each fixture is checked in two ways that hold on any machine:
its layout is read and its arithmetic-free records (stored, LZMA2) decode to the original bytes; and
the same input, coded here with that version's options and labelled with that version, decodes
(the decoder takes the version's coding procedure: no match model before version 5, no sliding cache
before version 4). Where this machine codes the fixture to the very same bytes, the fixture itself
is decoded too.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from test_compression import parse, rewrite_header

from entropykit.codec import ContainerError, compress, container_info, decompress
from entropykit.codec.container import Record, read_header, read_record

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# version: (chunk modes: 0 model-coded, 1 stored, 2 LZMA2; length; what the writer had)
CASES = {
    2: ([0, 1], 440, "before the LZMA2 record"),
    3: ([0, 2, 2], None, "the LZMA2 record, before the slide flag"),
    4: ([0, 0, 0], 1500, "the slide flag, before the match model"),
}


@pytest.mark.parametrize("version", sorted(CASES))
def test_an_older_container_still_decodes(version: int) -> None:
    modes, length, _ = CASES[version]
    blob = (FIXTURES / f"v{version}-bytegpt-small.ekz").read_bytes()
    want = (FIXTURES / f"v{version}-bytegpt-small.bin").read_bytes()
    info = parse(blob)
    assert info["version"] == version and [c["mode"] for c in info["chunks"]] == modes
    meta = container_info(blob)
    assert meta["version"] == version and not meta["match"] and not meta["slide"]
    assert meta["original_length"] == len(want) == (length or len(want))
    # the layout: every record reads; stored and LZMA2 records decode without a model
    src = io.BytesIO(blob)
    _, p = read_header(src)
    pos = 0
    for i in range(len(modes)):
        record = read_record(src, p, i)
        assert isinstance(record, Record)
        if record.stored:
            assert record.raw() == want[pos : pos + record.raw_len]
        pos += record.raw_len
    assert pos == len(want)
    # the coding procedure of that version, in this machine's arithmetic
    here = compress(want, "bytegpt-small", precision="float32", chunk_size=p.chunk_size, group=p.group,
                    window=p.window, prime=p.prime, match=False, fallback="lzma" if version >= 3 else None,
                    workers=1)
    old = rewrite_header(here, version=version)
    assert [c["mode"] for c in parse(old)["chunks"]][:1] == [0]  # a model-coded chunk is exercised
    assert decompress(old) == want
    if old == blob:  # this machine's arithmetic is the writer's: the fixture itself decodes
        assert decompress(blob) == want


def test_an_older_version_cannot_carry_a_newer_flag() -> None:
    blob = compress(b"hello there, hello there", "bytegpt-small", precision="float32", workers=1)
    assert container_info(blob)["match"]
    with pytest.raises(ContainerError, match="invalid coding parameters"):
        decompress(rewrite_header(blob, version=4))  # flag bit 3 is version 5's
