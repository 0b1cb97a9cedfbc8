"""Load time of every pretrained entry and the total shipped size, as a markdown table.

cold: a fresh Python process per entry; "import" is `import keras` (TensorFlow) alone, "first
load" is `zoo.load_pretrained(name)` right after it (hash check, safe-mode load, rebuilding the
architecture for its layer roles). warm: a second `load_pretrained(name)` in the same process
(the rebuilt roles are cached; hashing and loading are not). Medians over --rounds processes.

    python benchmarks/pretrained.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
t0 = time.perf_counter()
import keras  # noqa: F401  (TensorFlow)
t1 = time.perf_counter()
import zoo
zoo.load_pretrained(sys.argv[1])
t2 = time.perf_counter()
zoo.load_pretrained(sys.argv[1])
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first": t2 - t1, "warm": t3 - t2}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from zoo.pretrained import read_manifest

    entries = read_manifest().entries
    print("| entry | params | file size | import keras (s) | cold first load (s) | warm load (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for e in entries:
        runs = []
        for _ in range(args.rounds):
            out = subprocess.run([sys.executable, "-c", CHILD, e.name], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| {e.name} | {e.params:,} | {e.size / 1024:.0f} KB | {med['import']:.2f} | "
              f"{med['first']:.2f} | {med['warm']:.3f} |")
    total = sum(e.size for e in entries)
    print(f"\n{len(entries)} entries, {total / 1e6:.2f} MB shipped ({args.rounds} rounds, medians)")


if __name__ == "__main__":
    main()
