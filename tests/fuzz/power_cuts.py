"""Power-cut crash states in bulk (`make fuzz`): the suite's harness, five times the states.

Runs `tests/reliability/test_power_cut.py` with `MLVS_POWER_CUT_STATES` distinct crash
states per recorded command (default 220: 1,320 over the six commands), under a
wall-clock bound (`POWER_CUT_SECONDS`, default 2400). Another seed:
`MLVS_POWER_CUT_SEED`. A state that does not recover to exactly old or exactly new
fails the run and is printed with its seed, so it can be replayed in the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def main() -> int:
    """Run the power-cut tests with more states; its exit status is pytest's."""
    env = dict(os.environ)
    env.setdefault("MLVS_POWER_CUT_STATES", "220")
    seconds = float(env.get("POWER_CUT_SECONDS", "2400"))
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(TESTS / "reliability" / "test_power_cut.py"),
        "-q",
        "-s",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
    ]
    try:
        return subprocess.run(command, env=env, timeout=seconds, check=False).returncode
    except subprocess.TimeoutExpired:
        print(f"power-cut fuzzing did not finish within {seconds:.0f} s", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
