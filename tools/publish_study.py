"""Publish a finished Fashion-MNIST study: copy its report (README.md, results.json, plots, grids) into the
repository's docs and rewrite the README's front-page section (between `<!-- front-page -->` and
`<!-- /front-page -->`) from its results.json. Everything is checked first: a smoke-scale or unfinished
report, or a README without the markers, is refused and nothing is written.

    .venv/bin/python tools/publish_study.py /root/fpdm-cache/fashion-study/fashion
"""

from __future__ import annotations

import argparse
import sys

from fpdm.studies.publish import publish


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("src", help="the study's report folder: <out>/fashion of "
                    "`fpdm reproduce --study fashion`")
    ap.add_argument("--to", default="docs/results/fashion", help="the docs folder the report is copied into")
    ap.add_argument("--readme", default="README.md", help="the README whose front-page section is rewritten")
    ap.add_argument("--allow-smoke", action="store_true",
                    help="publish a --scale smoke report too (to try the tool; never commit the result)")
    args = ap.parse_args(argv)
    try:
        written = publish(args.src, args.to, args.readme, allow_smoke=args.allow_smoke)
    except ValueError as e:
        print(f"publish_study: {e}", file=sys.stderr)
        return 2
    print("\n".join(f"wrote {p}" for p in written))
    print("by hand: the side-by-side's 'why' in the report, docs/studies.md and docs/fashion-mnist.md "
          "(\"to come\" / \"under way\"), then commit")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
