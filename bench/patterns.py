"""What a constrained-decoding pattern costs to build, everyday against hostile, side by side.

Everyday patterns (the planner's shapes, dates, a counted word list) are built, and hostile ones (an
exponential DFA, nested counted repetitions, many character classes) are refused by the bound on states, in
alternating blocks, each build from scratch (no cache). A hostile pattern that is not refused, or an
everyday one that is, counts as degraded.

    python bench/patterns.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import string
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import machine, record, result_line  # noqa: E402
from errors import InvalidArgument  # noqa: E402
from generator.regex import MAX_STATES, _build  # noqa: E402

EVERYDAY = ["[a-z]+( [a-z]+){6,9}", r"\d{4}-\d{2}-\d{2}", "[A-Z][a-z]+ (is|was) [0-9]+",
            r"(\w+, ){2,4}\w+", "(yes|no)", "(a|b)*a(a|b){10}"]
HOSTILE = ["(a|b)*a(a|b){20}", "((.{999}){999}){999}", "(x{999}){999}",
           "(" + "|".join(string.ascii_letters + string.digits) + ")*a(.){13}",
           "(.*a.*b.*c.*d.*e.*f.*g.*h.*i.*j.*k.*l.*m){3}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 10")
    parser.add_argument("--rounds", type=int, default=0)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 10)
    print(f"patterns: {len(EVERYDAY)} everyday, {len(HOSTILE)} hostile, {rounds} rounds in alternating blocks; "
          f"bound {MAX_STATES} states; {machine()}", flush=True)
    times: dict[str, list[float]] = {"everyday": [], "hostile": []}
    degraded = {"everyday": 0, "hostile": 0}
    for _ in range(rounds):
        for kind, patterns in (("everyday", EVERYDAY), ("hostile", HOSTILE)):
            for pattern in patterns:
                begun = time.perf_counter()
                built = _build(pattern, MAX_STATES)
                times[kind].append((time.perf_counter() - begun) * 1e3)
                refused = isinstance(built, InvalidArgument)
                degraded[kind] += refused if kind == "everyday" else not refused
    result: dict[str, object] = {}
    for kind, values in times.items():
        p50, p99 = np.percentile(values, [50, 99])
        print(f"{kind:<9} builds {len(values):>4}  P50 {p50:8.2f} ms  P99 {p99:8.2f} ms  max {max(values):8.2f} ms  "
              f"degraded {degraded[kind]}")
        result[f"{kind}_p50_ms"], result[f"{kind}_p99_ms"] = round(float(p50), 3), round(float(p99), 3)
        result[f"{kind}_degraded"] = degraded[kind]
    result["hostile_vs_everyday_p99"] = round(float(result["hostile_p99_ms"]) / float(result["everyday_p99_ms"]), 1)  # type: ignore[arg-type]
    record("patterns", result)
    print(result_line(result))


if __name__ == "__main__":
    main()
