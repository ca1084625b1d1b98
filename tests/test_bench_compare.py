"""bench/compare.py: a figure that got worse beyond the threshold is flagged, in its own direction."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import compare  # noqa: E402


def _write(path: Path, figures: dict) -> Path:
    path.write_text(json.dumps({"bench": "b", "figures": figures}))
    return path


def _fig(median: float, higher_is_better: bool = True) -> dict:
    return {"median": median, "unit": "u", "higher_is_better": higher_is_better}


def test_a_rate_that_fell_more_than_ten_percent_is_a_regression(tmp_path, capsys):
    old = _write(tmp_path / "old.json", {"rate": _fig(100.0)})
    new = _write(tmp_path / "new.json", {"rate": _fig(85.0)})
    assert compare.main([str(old), str(new)]) == 1
    assert "REGRESSION" in capsys.readouterr().out


def test_a_time_that_rose_is_a_regression_and_a_time_that_fell_is_not(tmp_path):
    old = _write(tmp_path / "old.json", {"ms": _fig(10.0, higher_is_better=False)})
    slower = _write(tmp_path / "slow.json", {"ms": _fig(12.0, higher_is_better=False)})
    faster = _write(tmp_path / "fast.json", {"ms": _fig(5.0, higher_is_better=False)})
    assert compare.main([str(old), str(slower)]) == 1
    assert compare.main([str(old), str(faster)]) == 0


def test_a_change_within_the_threshold_passes(tmp_path, capsys):
    old = _write(tmp_path / "old.json", {"rate": _fig(100.0)})
    new = _write(tmp_path / "new.json", {"rate": _fig(95.0)})
    assert compare.main([str(old), str(new)]) == 0
    assert "-5.0 %" in capsys.readouterr().out


def test_unreadable_results_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert compare.main([str(bad), str(bad)]) == 2
