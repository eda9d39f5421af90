"""One environment per older Airflow line, for the compatibility subset of the tests (``make compat``).

The project's lock (``uv.lock``) holds the newest Airflow. Each older line gets a requirements file of
its own in ``devstack/compat/``, resolved by uv with Airflow pinned to the line's newest patch, every
provider held to the lock's version and every other package kept at the lock's version where that Airflow
allows it, so a line differs from the main environment only where its Airflow bounds it::

    python -m devstack.compat lock          # re-resolve devstack/compat/airflow-*.txt (committed)
    python -m devstack.compat build [LINE]  # .compat/<line>/, built once per requirements file
    python -m devstack.compat test [--jobs N] [LINE] [-- PYTEST ARGS]   # the tests marked ``compat``

An environment is rebuilt only when its requirements file changed (its hash is kept beside it). With
``--jobs 2`` two lines run at once (each on its own servers, ports and Airflow home); a line's output is
printed when it ends.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCKS = REPO / "devstack" / "compat"
ENVS = REPO / ".compat"
UV = REPO / ".tools" / "bin" / "uv"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

#: each supported older line and the patch release its environment runs
LINES = {"2.11": "2.11.2", "3.0": "3.0.6", "3.1": "3.1.8", "3.2": "3.2.2"}
#: bounds a line's Airflow needs but does not declare (its own constraints file holds them below): 3.0's task
#: API answers 422 to a task's start on fastapi >= 0.132 and its /auth/token 500 on PyJWT >= 2.11; 3.2's
#: execution API fails on fastapi >= 0.137 and loses its service registry on svcs 26
HELD = {
    "3.0": ["fastapi<0.118", "starlette<0.49", "cadwyn<6", "pyjwt<2.11"],
    "3.2": ["fastapi<0.137", "svcs<26"],
}


def requirements(line: str) -> Path:
    return LOCKS / f"airflow-{line}.txt"


def env_dir(line: str) -> Path:
    return ENVS / line


def lock(line: str) -> None:
    """Resolve the line's requirements: the project with every extra and the dev group, Airflow pinned."""
    pins = subprocess.run(
        [str(UV), "export", "--frozen", "--all-extras", "--no-hashes", "--no-emit-project", "--format",
         "requirements.txt"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    providers = [p.split(" ;")[0] for p in pins.splitlines() if p.startswith("apache-airflow-providers-")]
    # uv keeps the versions an output file already pins wherever they still fit: starting from the lock's
    # pins, the line differs from the main environment only where its Airflow bounds it
    requirements(line).write_text(pins)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "override.txt").write_text(f"apache-airflow=={LINES[line]}\n")
        (Path(tmp) / "providers.txt").write_text("\n".join([*providers, *HELD.get(line, [])]) + "\n")
        subprocess.run(
            [str(UV), "pip", "compile", "pyproject.toml", "--all-extras", "--group", "pyproject.toml:dev",
             "--python-version", PYTHON, "--python-platform", "linux", "--quiet", "--no-header",
             "--override", f"{tmp}/override.txt", "--constraint", f"{tmp}/providers.txt",
             "-o", str(requirements(line))],
            cwd=REPO, check=True,
        )  # fmt: skip


def build(line: str) -> Path:
    """The line's environment, created or brought to its requirements file; the project installed editable."""
    env, reqs = env_dir(line), requirements(line)
    digest = hashlib.sha256(reqs.read_bytes()).hexdigest()
    stamp = env / ".requirements.sha256"
    if stamp.exists() and stamp.read_text() == digest:
        return env
    started = time.monotonic()
    subprocess.run([str(UV), "venv", "--quiet", "--allow-existing", "--python", sys.executable, str(env)], check=True)
    uv_env = {**os.environ, "VIRTUAL_ENV": str(env)}
    subprocess.run([str(UV), "pip", "sync", "--quiet", "--compile-bytecode", str(reqs)], env=uv_env, check=True)
    subprocess.run([str(UV), "pip", "install", "--quiet", "--no-deps", "-e", str(REPO)], env=uv_env, check=True)
    stamp.write_text(digest)
    print(f"Airflow {LINES[line]}: environment built in {time.monotonic() - started:.0f} s ({env})", flush=True)
    return env


def test(line: str, pytest_args: list[str], *, captured: bool = False) -> int:
    """Run the ``compat`` tests in the line's environment; its own Airflow home, exporters and temp folders."""
    env = build(line)
    started = time.monotonic()
    done = subprocess.run(
        [str(env / "bin" / "pytest"), "-p", "no:cacheprovider", "-m", "compat", *pytest_args],
        cwd=REPO, env={**os.environ, "PATH": f"{env / 'bin'}:{os.environ['PATH']}"},
        stdout=subprocess.PIPE if captured else None, stderr=subprocess.STDOUT if captured else None, text=True,
    )  # fmt: skip
    if captured:
        print(f"===== Airflow {LINES[line]} =====\n{done.stdout}", end="", flush=True)
    took = time.monotonic() - started
    print(f"Airflow {LINES[line]}: compatibility subset exit {done.returncode} in {took:.0f} s", flush=True)
    return done.returncode


def main(argv: list[str]) -> int:
    verb, *rest = argv or ["test"]
    rest, pytest_args = (rest[: rest.index("--")], rest[rest.index("--") + 1 :]) if "--" in rest else (rest, [])
    jobs = 1
    if "--jobs" in rest:
        at = rest.index("--jobs")
        jobs, rest = int(rest[at + 1]), rest[:at] + rest[at + 2 :]
    lines = rest or list(LINES)
    if verb not in ("lock", "build", "test") or any(line not in LINES for line in lines):
        print(f"usage: python -m devstack.compat lock|build|test [--jobs N] [{'|'.join(LINES)} ...] [-- PYTEST ARGS]")
        return 2
    if verb == "lock":
        for line in lines:
            lock(line)
        return 0
    for line in lines:  # one at a time: uv shares its cache between them
        build(line)
    if verb == "build":
        return 0
    started = time.monotonic()
    with ThreadPoolExecutor(jobs) as pool:
        codes = list(pool.map(lambda line: test(line, pytest_args, captured=jobs > 1), lines))
    print(f"compatibility subset on {', '.join(LINES[line] for line in lines)}: {time.monotonic() - started:.0f} s")
    return max(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
