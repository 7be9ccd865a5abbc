"""Property: no mutation of a real record can crash the build or `submit`.

Hypothesis mutates a committed record field by field (replace any field at any depth with a
hostile value -- wrong type, huge or negative number, NaN, long or control-character text,
nested containers -- or delete it) and corrupts its bytes. Whatever comes out:
`fednlp-bench leaderboard` exits 0 and writes both pages; `fednlp-bench submit` exits 0 or 2
and, on 2, prints exactly one line.
"""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fednlp_bench.cli import main

REAL = Path(__file__).resolve().parent / "data" / "records" / "tc-smoke-fedavg.json"  # a real smoke run
RECORD = json.loads(REAL.read_text(encoding="utf-8"))


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every field of the record (the first two items of long lists)."""
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:2]):
            out += _paths(v, prefix + (i,))
    return out


PATHS = _paths(RECORD)

HOSTILE = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**400, -1, 0, 7.5, 1e308, -1e300, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "fedavg\u200b", "fed\u202egva\u202c", "\x1b[31m", "\ud800", "x" * 5000, "ｆｅｄａｖｇ",
                     "2099-01-01T00:00:00+00:00", "<script>alert(1)</script>", "../../etc/passwd"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4), max_size=2),
    st.integers(min_value=30, max_value=500).map(lambda n: json.loads("[" * n + "]" * n)),
)


def _mutate(path: tuple, value: Any, delete: bool) -> dict[str, Any]:
    rec = json.loads(json.dumps(RECORD))
    node = rec
    for key in path[:-1]:
        node = node[key]
    if delete and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return rec


def _check(text: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        results = tmp_path / "results"
        results.mkdir()
        (results / "record.json").write_bytes(text)
        out = tmp_path / "site"
        # pages only: drawing plots takes most of a build's time (tests/test_leaderboard*.py draw them)
        assert main(["leaderboard", "--results", str(results), "--out", str(out), "--no-plots"]) == 0
        assert (out / "index.html").stat().st_size > 0 and (out / "README.md").stat().st_size > 0
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["submit", str(results / "record.json"), "--results-dir", str(tmp_path / "sub")])
        assert code in (0, 2)
        if code == 2:
            lines = err.getvalue().strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("fednlp-bench: error:") and "\x1b" not in lines[0]


SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@SETTINGS
@given(path=st.sampled_from(PATHS), value=HOSTILE, delete=st.booleans())
def test_field_mutations_never_break_build_or_submit(path, value, delete, capsys):
    text = json.dumps(_mutate(path, value, delete), allow_nan=True).encode("utf-8", "surrogatepass")
    _check(text)
    capsys.readouterr()


@SETTINGS
@given(start=st.integers(min_value=0, max_value=len(json.dumps(RECORD))), junk=st.binary(max_size=12),
       cut=st.integers(min_value=0, max_value=12))
def test_byte_corruption_never_breaks_build_or_submit(start, junk, cut, capsys):
    data = json.dumps(RECORD).encode("utf-8")
    _check(data[:start] + junk + data[start + cut:])
    capsys.readouterr()
