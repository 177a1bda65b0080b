"""A/B: run one benchmark in this checkout and in another revision, alternating, in one command.

    python bench/ab.py REV [--rounds 3] [--keys ms_per_frame,first_audio_ms] \
        -- bench/engine.py --frames 24 --model .cache/parity/full-davis/model

The other revision is checked out once into .cache/ab/REV (a git worktree) and its C
extensions built there. Each round runs the benchmark script (its path and arguments after
``--``) in the base tree, then in this one, as separate processes, so a busy machine slows
both alike. Each benchmark prints one JSON object as its last line; the medians over the
rounds of the chosen keys are printed for both, with the ratio base / this (above 1: this
checkout is faster, for times). The last line is one JSON object. Both trees find shared/
where this checkout does (VVREADER_SHARED is set for them); give data paths, such as the
full-size model, as arguments (relative ones are taken from this checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def worktree(rev: str) -> Path:
    """A checkout of ``rev`` with its extensions built (made once, then reused)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    tree = REPO / ".cache" / "ab" / sha[:12]
    if not (tree / ".built").exists():
        if not tree.exists():
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(tree), sha], cwd=REPO, check=True
            )
        subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree, check=True
        )
        (tree / ".built").write_text(sha + "\n")
    return tree


def run(tree: Path, script: list[str]) -> dict:
    env = dict(os.environ)
    env.setdefault("VVREADER_SHARED", str(REPO.parent / "shared"))
    args = [
        str(REPO / x) if (REPO / x).exists() and not x.startswith("-") else x for x in script[1:]
    ]
    out = subprocess.run(
        [sys.executable, str(tree / script[0]), *args],
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        sys.exit("usage: python bench/ab.py REV [--rounds N] [--keys a,b] -- SCRIPT [ARGS...]")
    cut = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rev")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keys", default="ms_per_frame,first_audio_ms")
    a = ap.parse_args(argv[:cut])
    script = argv[cut + 1 :]
    keys = a.keys.split(",")
    base = worktree(a.rev)
    results: dict[str, list[dict]] = {"base": [], "this": []}
    for r in range(a.rounds):
        for name, tree in (("base", base), ("this", REPO)):
            res = run(tree, script)
            results[name].append(res)
            print(
                f"round {r + 1} {name}: " + ", ".join(f"{k} {res.get(k)}" for k in keys), flush=True
            )
    summary: dict[str, object] = {"rev": a.rev, "rounds": a.rounds, "script": script}
    print(f"{'':20s} {'base':>10s} {'this':>10s} {'base/this':>10s}")
    for k in keys:
        b = float(np.median([res[k] for res in results["base"]]))
        t = float(np.median([res[k] for res in results["this"]]))
        summary[k] = {"base": round(b, 3), "this": round(t, 3), "ratio": round(b / t, 3)}
        print(f"{k:20s} {b:10.2f} {t:10.2f} {b / t:10.3f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
