"""Fixtures too large to commit (real weights: PaddleOCR), written to fixtures/large by ``make fixtures``;
run by ``make test-large``. Skipped when they have not been generated."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES
from test_fixtures import assert_parity

MANIFEST = FIXTURES / "large" / "manifest.json"
CASES = ([{**c, "root": MANIFEST.parent} for c in json.loads(MANIFEST.read_text())["cases"]]
         if MANIFEST.is_file() else [])

pytestmark = pytest.mark.large


@pytest.mark.skipif(not CASES, reason="fixtures/large not generated (make fixtures)")
@pytest.mark.parametrize("case", CASES or [None], ids=[c["name"] for c in CASES] or ["none"])
def test_large_fixture_parity(case, tmp_path):
    assert_parity(case, tmp_path)
