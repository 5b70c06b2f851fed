"""The README's command examples run as shown: same exit status, and every output line it prints appears
in the real output (numbers in scientific notation compared by shape only)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.xdist_group("readme")  # the examples write into out/

NUMBER = re.compile(r"-?\d+\.\d+e[-+]\d+")


def examples() -> list[tuple[str, list[str]]]:
    lines = (ROOT / "README.md").read_text().splitlines()
    found, k = [], 0
    while k < len(lines):
        line = lines[k]
        if line.startswith("    $ winml-dynify"):
            cmd = line[6:]
            while cmd.endswith("\\"):
                k += 1
                cmd = cmd[:-1] + " " + lines[k].strip()
            out = []
            k += 1
            while k < len(lines) and lines[k].startswith("    ") and not lines[k].startswith("    $ "):
                out.append(lines[k][4:])
                k += 1
            found.append((cmd, out))
            continue
        k += 1
    return found


def normalise(text: str) -> str:
    return NUMBER.sub("#", " ".join(text.split()))


@pytest.mark.parametrize(("cmd", "shown"), examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_readme_example(cmd, shown, tmp_path):
    (ROOT / "out").mkdir(exist_ok=True)
    (tmp_path / "axes.json").write_text(
        '{"dynamic_axes": {"input_ids": {"0": "batch", "1": "seq"}, "attention_mask": {"0": "batch", "1": "seq"},'
        ' "token_type_ids": {"0": "batch", "1": "seq"}, "last_hidden_state": {"0": "batch", "1": "tokens"}}}')
    if " fix out/gpt2.dynamic.onnx" in cmd:
        subprocess.run([sys.executable, "-m", "winml_dynify", "fixtures/gpt2/s0_batch1_seq16.onnx", "--dynamic-batch",
                        "--dynamic-seq", "-o", "out/gpt2.dynamic.onnx", "--no-check"], cwd=ROOT, check=True,
                       capture_output=True)
    args = [a if a != "axes.json" else str(tmp_path / "axes.json") for a in shlex.split(cmd)[1:]]
    p = subprocess.run([sys.executable, "-m", "winml_dynify", *args], cwd=ROOT, capture_output=True, text=True)
    assert (p.returncode != 0) == any(s.startswith("error:") for s in shown), p.stderr
    actual = [normalise(x) for x in (p.stdout + p.stderr).splitlines()]
    for s in shown:
        if s.strip() and s.strip() != "...":
            assert normalise(s) in actual, f"README line not printed: {s!r}"
