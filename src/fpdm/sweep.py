"""Tables for budget sweeps (`fpdm sweep`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_table(rows: list[dict[str, Any]], prefix: str | Path, settings: dict[str, Any]) -> None:
    """`<prefix>.json` (rows + settings) and `<prefix>.md` (a Markdown table)."""
    prefix = Path(prefix)
    Path(f"{prefix}.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    head = ", ".join(f"{k}={v}" for k, v in settings.items())
    Path(f"{prefix}.md").write_text(f"{head}\n\n" + "\n".join(lines) + "\n")
