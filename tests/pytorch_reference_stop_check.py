#!/usr/bin/env python3
"""tests/pytorch_reference_stop_check.py — bench/pytorch_reference.py stopped while a variant's
worker process measures (as gpu-check's `timeout` stops it): two SIGTERMs a few milliseconds
apart, then Ctrl-C in another run. Each time the steps measured before are kept in the JSON, the
rest reported as stopped, and no worker is left running. Needs a Python with torch (exit 77, a
skip, without one). Usage: pytorch_reference_stop_check.py REPO_ROOT"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time


def python_with_torch():
    for python in ("/usr/bin/python3", sys.executable):
        if subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0:
            return python
    return None


def workers_in(tmp):
    """The pids of worker processes writing their JSON into `tmp` (their --json names it)."""
    pids = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        text = [a.decode(errors="replace") for a in args]
        if "--worker" in text and any(a.startswith(tmp + "/") for a in text) and \
                any(a.endswith("pytorch_reference.py") for a in text):
            pids.append(int(pid))
    return pids


def main():
    python = python_with_torch()
    if python is None:
        print("no Python here imports torch: skipped")
        return 77
    script = os.path.join(sys.argv[1], "bench", "pytorch_reference.py")
    failures = []
    for how in ("sigterm-twice", "ctrl-c"):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "pytorch.json")
            proc = subprocess.Popen([python, script, "--models", "lrcn", "--device", "cpu", "--variants", "eager",
                                     "--steps", "200", "--threads", "1", "--isolate", "--json", out],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env=dict(os.environ, TMPDIR=tmp))  # the worker's JSON goes there
            # The train step is measured within seconds; the eval step's 200 steps take minutes.
            deadline = time.monotonic() + 120
            measured = False
            while time.monotonic() < deadline and not measured:
                time.sleep(0.5)
                for name in os.listdir(tmp):
                    if name.startswith("pytorch_ref_eager_") and name.endswith(".json"):
                        try:
                            with open(os.path.join(tmp, name)) as f:
                                measured = measured or any(r.get("status") == "ok" for r in json.load(f)["results"])
                        except (OSError, ValueError, KeyError):
                            pass
            if not measured:
                failures.append(f"{how}: the worker measured nothing within 120 s")
                proc.kill()
                continue
            if how == "sigterm-twice":
                proc.send_signal(signal.SIGTERM)
                time.sleep(0.005)
                proc.send_signal(signal.SIGTERM)
            else:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                failures.append(f"{how}: pytorch_reference.py did not end within 30 s")
                proc.kill()
            time.sleep(1)
            if workers_in(tmp):
                failures.append(f"{how}: a worker is still running")
                for pid in workers_in(tmp):
                    os.kill(pid, signal.SIGKILL)
            try:
                with open(out) as f:
                    results = json.load(f)["results"]
            except (OSError, ValueError, KeyError) as e:
                failures.append(f"{how}: no JSON written ({e})")
                continue
            status = {(r["step"], r["status"]) for r in results}
            if ("train", "ok") not in status:
                failures.append(f"{how}: the measured train step was lost: {status}")
            if how == "sigterm-twice" and ("eval", "failed") not in status:
                failures.append(f"{how}: the eval step is not reported as stopped: {status}")
    for failure in failures:
        print("FAILED:", failure)
    print(f"pytorch_reference_stop_check: {'FAILED' if failures else 'passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
