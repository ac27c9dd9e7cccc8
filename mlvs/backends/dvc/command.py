"""Running the `dvc` command itself (for `dvc repro`), quietly and with mlvs's root."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from mlvs.errors import ExternalToolError
from mlvs.logs import get_logger
from mlvs.paths import ProjectPaths
from mlvs.settings import ROOT

log = get_logger("pipeline")


def tool_env() -> dict[str, str]:
    """The environment for DVC and its stage commands: this interpreter's scripts first on PATH."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def dvc(
    paths: ProjectPaths,
    *args: str,
    check: bool = True,
    echo: bool = False,
    on_line: Callable[[str], str | None] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a DVC command in the project; raise ExternalToolError when `check` and it fails.

    With `echo`, each output line is shown on stderr as it comes, or what `on_line` makes
    of it (None: not shown); the result holds every line either way. `extra_env` is added
    to the environment of DVC and of the stage commands it runs.
    """
    command = [sys.executable, "-m", "dvc", *args]
    log.debug("dvc %s", " ".join(args))
    env = {**tool_env(), **(extra_env or {}), ROOT.name: str(paths.root)}
    if echo:
        # Stage commands print their own progress; let it through as it happens.
        proc = subprocess.Popen(
            command,
            cwd=paths.root,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            shown = on_line(line) if on_line is not None else line
            if shown is not None:
                sys.stderr.write(shown)
        proc.wait()
        result = subprocess.CompletedProcess(command, proc.returncode, "".join(lines), "")
    else:
        result = subprocess.run(command, cwd=paths.root, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise ExternalToolError(
            f"`dvc {' '.join(args)}` failed: {detail[-1] if detail else 'no output'}"
        )
    return result
