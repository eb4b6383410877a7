#!/usr/bin/env python3
"""tests/compare_check.py — bench/compare's handling of a run stopped by a time limit, without
torch or a build: Google Benchmark JSON cut at every byte, and a command stopped at its deadline.
Exits 1 naming the first failed check. Usage: compare_check.py REPO_ROOT"""

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time


def load_compare(repo):
    path = os.path.join(repo, "bench", "compare")
    loader = importlib.machinery.SourceFileLoader("hisvid_compare", path)
    spec = importlib.util.spec_from_loader("hisvid_compare", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def entry(name, aggregate, ms):
    return {"name": f"{name}_{aggregate}", "run_name": name, "run_type": "aggregate",
            "aggregate_name": aggregate, "real_time": ms, "time_unit": "ms", "calls_per_step": 65}


def main():
    compare = load_compare(sys.argv[1])
    compare.log = lambda msg: None  # its notes on each cut file
    failures = []

    def check(good, what):
        if not good:
            failures.append(what)

    # A file as hisvid_bench writes it: the context, then the aggregates of two benchmarks.
    train = "lrcn/train/cpu/batch:4/min_time:0.500/repeats:5/real_time"
    evaluation = "lrcn/eval/cpu/batch:32/min_time:0.500/repeats:5/real_time"
    whole = {"context": {"hisvid_commit": "abc1234", "load_avg": [1.0, 1.0, 1.0]},
             "benchmarks": [entry(train, "mean", 12.5), entry(train, "median", 12.0),
                            entry(evaluation, "mean", 47.5), entry(evaluation, "median", 47.0)]}
    text = json.dumps(whole, indent=2)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hisvid.json")
        with open(path, "w") as f:
            f.write(text)
        data = compare.load_benchmark_json(path)
        check(data == whole, "a whole file reads as it is")
        rows = compare.parse_hisvid(path)
        check(rows.get(("lrcn", "train", 4, "cpu"), {}).get("ms") == 12.0, "the median of a whole file")
        # Cut at every byte: never an error once the context is whole, the entries read are the
        # whole ones before the cut, in order, and a row appears once its median entry is whole.
        context_end = text.index('"benchmarks"')
        last = -1
        for cut in range(context_end, len(text)):
            with open(path, "w") as f:
                f.write(text[:cut])
            try:
                data = compare.load_benchmark_json(path)
            except ValueError as e:
                failures.append(f"cut at {cut}: {e}")
                break
            got = data["benchmarks"]
            check(data.get("context") == whole["context"], f"cut at {cut}: the context is kept")
            check(got == whole["benchmarks"][:len(got)], f"cut at {cut}: the entries are the first ones")
            check(len(got) >= last, f"cut at {cut}: fewer entries than at a shorter cut")
            last = len(got)
            median_end = text.index(json.dumps(whole["benchmarks"][1], indent=2).splitlines()[-1],
                                    text.index('"aggregate_name": "median"')) + 1
            has_row = ("lrcn", "train", 4, "cpu") in compare.parse_hisvid(path)
            check(has_row == (cut >= median_end), f"cut at {cut}: the train row iff its median is whole")
        check(last == len(whole["benchmarks"]) - 1 or last == len(whole["benchmarks"]),
              "the last cuts keep all but at most the last entry")
        with open(path, "w") as f:
            f.write('{"conte')
        try:
            compare.load_benchmark_json(path)
            failures.append("a file cut inside its context is refused")
        except ValueError:
            pass

        # A command past its deadline is stopped (SIGTERM, then killed) and Stopped is raised.
        log = os.path.join(tmp, "run.txt")
        script = "import time\nprint('started', flush=True)\ntime.sleep(60)\n"
        start = time.monotonic()
        stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # run_tee echoes the command's output
        try:
            compare.run_tee([sys.executable, "-c", script], log, deadline=time.monotonic() + 1.0)
            failures.append("a command past its deadline raises Stopped")
        except compare.Stopped as e:
            check("--time-limit" in str(e), f"Stopped says why: {e}")
        finally:
            sys.stdout.close()
            sys.stdout = stdout
        check(time.monotonic() - start < 10, "the command is stopped within seconds of its deadline")
        with open(log) as f:
            check("started" in f.read(), "what the command printed before is in its log")
        # SIGTERM twice within milliseconds (`timeout` signals the whole group, and the parent
        # its child): one Stopped, raised while the command runs; the second is ignored, so the
        # stopping and what follows it are not interrupted.
        import signal
        import threading
        signal.signal(signal.SIGTERM, compare.stop_on_sigterm)

        def twice():
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.005)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=twice, daemon=True).start()
        stdout, sys.stdout = sys.stdout, open(os.devnull, "w")
        stops = 0
        try:
            try:
                compare.run_tee([sys.executable, "-c", script], log)
            except compare.Stopped as e:
                stops += 1
                check("SIGTERM" in str(e), f"Stopped says why: {e}")
                check(signal.getsignal(signal.SIGTERM) == signal.SIG_IGN, "a second SIGTERM is ignored")
            time.sleep(0.2)  # the second signal arrives here, and must not raise
        except compare.Stopped:
            stops += 1
        finally:
            sys.stdout.close()
            sys.stdout = stdout
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        check(stops == 1, f"two SIGTERMs stop once ({stops})")
        # One that finishes in time returns its exit status.
        rc = compare.run_tee([sys.executable, "-c", "raise SystemExit(3)"], log,
                             deadline=time.monotonic() + 30)  # prints nothing
        check(rc == 3, f"a command within its deadline returns its status ({rc})")

    # Bad limits are refused as arguments (exit 2).
    for flag in ("--time-limit", "--pytorch-variant-timeout"):
        proc = subprocess.run([sys.executable, os.path.join(sys.argv[1], "bench", "compare"), "--check",
                               flag, "0"], capture_output=True, text=True)
        check(proc.returncode == 2 and flag in proc.stderr, f"{flag} 0 is refused with exit 2")
    # So is a --side-logs folder that does not exist (the logs would be lost after the run).
    with tempfile.TemporaryDirectory() as tmp:
        missing = os.path.join(tmp, "no-such-folder")
        proc = subprocess.run([sys.executable, os.path.join(sys.argv[1], "bench", "compare"), "--check",
                               "--side-logs", missing], capture_output=True, text=True)
        check(proc.returncode == 2 and "--side-logs" in proc.stderr and missing in proc.stderr,
              "a --side-logs folder that does not exist is refused with exit 2, naming it")

    for failure in failures[:20]:
        print("FAILED:", failure)
    print(f"compare_check: {'FAILED' if failures else 'passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
