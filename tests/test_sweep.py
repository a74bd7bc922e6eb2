import json

from fpdm.sampling.sweep import write_table


def test_write_table(tmp_path):
    write_table([{"iters": 1, "q": 0.5}, {"iters": 2, "q": 0.25}], tmp_path / "t", {"budget": 24})
    assert json.loads((tmp_path / "t.json").read_text())["rows"][1]["q"] == 0.25
    assert "| 2 | 0.25 |" in (tmp_path / "t.md").read_text()
