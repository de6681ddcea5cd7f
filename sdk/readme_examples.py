"""Runs README.md's "Check from your language" examples, as written, against a
`tollgate dev` of their own: the curl line, the JavaScript file and the Python
snippet. `/tmp/tg` becomes this run's data directory and
`https://127.0.0.1:7300` its region eu's first node (dev picks free ports), and
nothing else changes. Each must print an ALLOW; the first that does not fails
the run, with what it printed.

    python sdk/readme_examples.py    (sdk/test.sh runs it with the SDK installed)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_SECONDS = 120


def blocks() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Check from your language")
    end = readme.index("\n## ", start + 1)
    section = readme[start:end]
    found = dict(re.findall(r"```(sh|js|python)\n(.*?)```", section, re.S))
    missing = {"sh", "js", "python"} - found.keys()
    if missing:
        sys.exit(f"README.md: no {', '.join(sorted(missing))} example under 'Check from your language'")
    return found


def wait_for_dev(process: subprocess.Popen[bytes], endpoints: Path, log: Path) -> dict:
    deadline = time.monotonic() + DEADLINE_SECONDS
    last = "nothing yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"tollgate dev exited ({process.returncode}): {log.read_text()[-2000:]}")
        if endpoints.exists():
            try:
                return json.loads(endpoints.read_text())
            except json.JSONDecodeError as e:
                last = f"endpoints.json is not whole yet: {e}"
        time.sleep(0.2)
    sys.exit(f"tollgate dev was not ready in {DEADLINE_SECONDS} s (last: {last}); log: {log.read_text()[-2000:]}")


def run(what: str, command: list[str], cwd: Path, expect: str) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    if done.returncode != 0 or not re.search(expect, done.stdout):
        sys.exit(f"README's {what} example: exit {done.returncode}, expected /{expect}/ in its output:\n{output}")
    print(f"README's {what} example: {done.stdout.strip()[:200]}")


def main() -> None:
    binary = os.environ.get("TOLLGATE_BIN", str(ROOT / "target" / "debug" / "tollgate"))
    examples = blocks()
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "dev"
        log = Path(work) / "dev.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [binary, "dev", "--data-dir", str(data), "--base-port", "0"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            dev = wait_for_dev(process, data / "endpoints.json", log)
            eu = next(r for r in dev["regions"] if r["name"] == "eu")["nodes"][0]["check"]

            def adapt(text: str) -> str:
                return text.replace("/tmp/tg", str(data)).replace("https://127.0.0.1:7300", eu)

            run("curl", ["sh", "-c", adapt(examples["sh"])], ROOT, r'"reason":"ALLOW"')
            script = ROOT / f".readme-check-{os.getpid()}.mjs"
            script.write_text(adapt(examples["js"]))
            try:
                run("JavaScript", ["node", script.name], ROOT, r"^true ALLOW eu-\d")
            finally:
                script.unlink()
            run("Python", [sys.executable, "-c", adapt(examples["python"])], Path(work), r"^True ALLOW eu-\d")
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":
    main()
