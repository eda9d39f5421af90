"""The README's command blocks, as the tests run them: each block follows a ``<!-- flow: NAME -->`` line."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def readme_flow(name: str) -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- flow: {re.escape(name)} -->\n```bash\n(.*?)```", text, re.S)
    assert match, f"README.md has no flow {name!r}"
    return match.group(1)


def run_flow(script: str, cwd: Path, env: dict[str, str], timeout: float = 900, stderr: bool = False) -> str:
    """Run the block with bash, stopping at the first failing command; return what it printed (and with
    ``stderr``, then its stderr: the commands as bash traces them, the errors of those the block lets fail)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "STRM_", "AWS_"))}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "set -x\n" + script],
        cwd=cwd,
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout + (done.stderr if stderr else "")
