"""The README's Python example runs as written and does what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def _python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) == 1, "the README has one Python example"
    return blocks[0]


def test_the_python_example_registers_its_drr(shared_data, capsys):
    code = _python_example().replace('"../shared/data/', f'"{shared_data.as_posix()}/')
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    printed = capsys.readouterr().out
    assert re.fullmatch(r"similarity 0\.\d{3}; the source is \d+\.\d\d mm from the truth\n", printed)
    assert float(scope["error"]) < 1.0  # the start was 7° off, the source 87 mm away
    assert scope["result"].similarity > 0.9
