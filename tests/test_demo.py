"""``make demo``'s default path, on the embedded broker that needs nothing but Python (every other test
runs on Apache Kafka)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.readme import REPO


def test_demo_exports_every_event_on_the_embedded_broker(tmp_path: Path) -> None:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "NO_PROXY": "*"}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--events", "500"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "starting the embedded Kafka-compatible broker" in done.stdout
    assert "500 events exported in 1 file(s); 500 produced." in done.stdout
    first = done.stdout.split(" | head -1\n", 1)[1].splitlines()[0]
    assert first.startswith('{"strmMeta":') and "\n" not in first  # the line as it is in the file
    assert "broker and storage server stopped" in done.stdout
