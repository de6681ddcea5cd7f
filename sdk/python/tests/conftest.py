"""Shared fixtures: a whole ``tollgate dev`` deployment for the integration tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import REPO  # noqa: E402

START_DEADLINE = 240.0
BUILD_DEADLINE = 3600.0


@dataclass
class Deployment:
    endpoints: dict[str, Any]
    data_dir: Path
    ca: str
    credential: str
    admin_key: str
    origin: str
    public_keys: str
    eu: list[str]
    us: list[str]


def _binary() -> Path:
    explicit = os.environ.get("TOLLGATE_BIN")
    if explicit:
        return Path(explicit)
    path = REPO / "target/debug/tollgate"
    if not path.exists():
        cargo = shutil.which("cargo")
        if cargo is None:
            pytest.skip(f"no tollgate binary at {path} and no cargo to build it (set TOLLGATE_BIN)")
        # Once, for the session: minutes on a small machine. The target
        # directory is shared: never `cargo clean`.
        subprocess.run([cargo, "build", "-p", "tollgate"], cwd=REPO, check=True, timeout=BUILD_DEADLINE)
    return path


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """``tollgate dev --base-port 0`` in a temporary data directory, ready
    once its ``endpoints.json`` appears; stopped at the end of the session."""
    binary = _binary()
    data_dir = tmp_path_factory.mktemp("tollgate-dev")
    log_path = data_dir.parent / (data_dir.name + ".log")
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [str(binary), "dev", "--base-port", "0", "--data-dir", str(data_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        endpoints_path = data_dir / "endpoints.json"
        deadline = time.monotonic() + START_DEADLINE
        endpoints: dict[str, Any] = {}
        while True:
            if process.poll() is not None:
                pytest.fail(f"tollgate dev exited with {process.returncode}:\n{_tail(log_path)}")
            if endpoints_path.exists():
                try:
                    endpoints = json.loads(endpoints_path.read_text())
                    break
                except ValueError:
                    pass  # written by rename, so only a partial read of another file
            if time.monotonic() > deadline:
                pytest.fail(f"no {endpoints_path} within {START_DEADLINE} s:\n{_tail(log_path)}")
            time.sleep(0.1)
        origin = endpoints["origin"]
        regions = {r["name"]: [n["check"] for n in r["nodes"]] for r in endpoints["regions"]}
        yield Deployment(
            endpoints=endpoints,
            data_dir=data_dir,
            ca=endpoints["tls"]["ca"],
            credential=Path(origin["app_credential_file"]).read_text().strip(),
            admin_key=Path(origin["admin_api_key_file"]).read_text().strip(),
            origin=origin["rest"],
            public_keys=origin["public_keys"],
            eu=regions["eu"],
            us=regions["us"],
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        log.close()
