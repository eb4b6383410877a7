#!/usr/bin/env python3
"""tests/gpu_check_check.py — scripts/gpu-check's plumbing without a GPU or a build: a kit of
stand-in programs (shell scripts that print what the real ones print, and fail, crash or hang on
request) and a stand-in nvidia-smi, compute-sanitizer and cuobjdump on the PATH. gpu-check runs
on lent GPU machines only, 15 minutes a session: what it does with a failure, a crash, a hang or
its deadline is checked here. Exits 1 naming each failed check. Usage: gpu_check_check.py REPO_ROOT"""

import json
import os
import stat
import subprocess
import sys
import tempfile
import time

CUDA_TESTS = r"""#!/usr/bin/env bash
filter=
xml=
for a in "$@"; do
  case $a in --gtest_filter=*) filter=${a#--gtest_filter=} ;; --gtest_output=xml:*) xml=${a#--gtest_output=xml:} ;; esac
done
if [ -n "$xml" ]; then
  cat > "$xml" <<'EOF'
<testsuites><testsuite name="Kernels/TableRow">
<testcase name="MatchesTheNaiveReference/conv2d_forward_cuda" value_param="conv2d_forward cuda" status="run">
 <properties><property name="cases_checked" value="51"/><property name="largest_error_used" value="0.125"/></properties>
</testcase>
<testcase name="MatchesTheNaiveReference/lstm_cell_forward_cuda" value_param="lstm_cell_forward cuda" status="run">
 <properties><property name="cases_checked" value="11"/><property name="largest_error_used" value="0.5"/></properties>
</testcase>
<testcase name="CudaGraphs.Other" status="run"/>
</testsuite></testsuites>
EOF
fi
echo "env conv=${HISVID_CUDA_CONV:-} step=${HISVID_CUDA_CONVLSTM_STEP:-} max_flops=${HISVID_KERNEL_CASE_MAX_FLOPS:-}"
if [ "${FAKE_CUDA_TESTS:-}" = none ]; then
  echo "[==========] 0 tests from 0 test suites ran. (0 ms total)"; echo "[  PASSED  ] 0 tests."; exit 0
fi
echo "[==========] Running 2 tests from 1 test suite."
echo "[ RUN      ] A.One"; echo "[       OK ] A.One (1 ms)"
echo "[ RUN      ] A.Two"
[ "${FAKE_CUDA_TESTS:-}" = crash ] && kill -SEGV $$
if [ -n "${FAKE_FAIL_STEP:-}" ] && [ "${HISVID_CUDA_CONVLSTM_STEP:-}" = "$FAKE_FAIL_STEP" ]; then
  echo "[  FAILED  ] A.Two (1 ms)"
  echo "[==========] 2 tests from 1 test suite ran. (2 ms total)"
  echo "[  PASSED  ] 1 test."; echo "[  FAILED  ] 1 test, listed below:"; echo "[  FAILED  ] A.Two"
  exit 1
fi
echo "[       OK ] A.Two (1 ms)"
echo "tiny lrcn: float32 drift over 30 steps 1.00e-06 (loss 1.0 -> 0.5)"
echo "[==========] 2 tests from 1 test suite ran. (2 ms total)"
echo "[  PASSED  ] 2 tests."
"""

ENGINE_TESTS = r"""#!/usr/bin/env bash
echo "[==========] 1 test from 1 test suite ran. (1 ms total)"
echo "[  PASSED  ] 1 test."
"""

KERNEL_LAB = r"""#!/usr/bin/env bash
echo "arguments: $# $*"
echo "| kernel | case | row | check |"
echo "| conv2d_forward | a | cuda | ok |"
[ "${FAKE_LAB:-}" = slow ] && exec sleep 100
echo "| conv2d_forward | b | cuda.v1 | n/a |"
"""

BENCH = r"""#!/usr/bin/env bash
echo "env conv=${HISVID_CUDA_CONV:-} step=${HISVID_CUDA_CONVLSTM_STEP:-} fuse=${HISVID_FUSE_CONV_POOL:-}"
[ "${FAKE_BENCH:-}" = slow ] && exec sleep 100
for a in "$@"; do
  case $a in
    --per_layer=*) echo "lrcn"; echo "total (synchronised per layer)   1.000"; exit 0 ;;
    --per_kernel=*) echo "lrcn"; echo "kernel calls ms"; exit 0 ;;
    --benchmark_out=*) out=${a#--benchmark_out=} ;;
  esac
done
name=lrcn/train/cuda:0/batch:4/min_time:0.200/repeats:5/real_time
echo "${name}_median 1.00 ms"
if [ -n "${out:-}" ]; then
  cat > "$out" <<EOF
{"context": {"hisvid_commit": "fake"}, "benchmarks": [
 {"name": "${name}_median", "run_name": "$name", "run_type": "aggregate", "aggregate_name": "median",
  "real_time": 1.0, "time_unit": "ms", "calls_per_step": 30}]}
EOF
fi
"""

PRECISION = r"""#!/usr/bin/env bash
echo "  lrcn float32 epoch 1: loss 1.0"
echo "done: | lrcn | float32 | 1 (1) | 0.5000 | 90.00% | 0.9000 | 1.000 | 1.000 | 100.0% | 0.00e+00 |"
echo
echo "| model | precision | epochs (best) |"
echo "|---|---|---|"
echo "| lrcn | float32 | 1 (1) | 0.5000 | 90.00% | 0.9000 | 1.000 | 1.000 | 100.0% | 0.00e+00 |"
echo "(device cuda:0; training batch 4)"
"""

NVIDIA_SMI = """#!/usr/bin/env bash
echo "Stand-in GPU, 580.00, 81559 MiB"
"""

SANITIZER = r"""#!/usr/bin/env bash
if [ "${FAKE_SANITIZER:-}" = unsupported ]; then echo "========= Device not supported"; exit 1; fi
while [ $# -gt 0 ]; do
  case $1 in --tool|--error-exitcode|--racecheck-report) shift 2 ;; *) break ;; esac
done
"$@"
rc=$?
echo "========= ERROR SUMMARY: 0 errors"
exit $rc
"""

# Two kernels: the const kernel's FMAs and bank-3 loads are counted, the parameter load (bank 0)
# and the other kernel's instructions are not.
CUOBJDUMP = r"""#!/usr/bin/env bash
cat <<'EOF'
	Function : _ZN6hisvid4cuda12_GLOBAL__N_127conv2d_forward_const_kernelILi32ELi4EjEEvPfPKfNS_14Conv2dGeometryE
        /*0010*/                   LDC R1, c[0x0][0x28] ;
        /*0020*/                   FFMA R2, R3, c[0x3][0x0], R2 ;
        /*0030*/                   LDC R4, c[0x3][0x10] ;
        /*0040*/                   FFMA R2, R3, R4, R2 ;
	Function : _ZN6hisvid4cuda12_GLOBAL__N_112other_kernelEv
        /*0010*/                   FFMA R2, R3, R4, R2 ;
        /*0020*/                   LDC R4, c[0x3][0x10] ;
EOF
"""


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def make_fakes(root):
    kit = os.path.join(root, "kit")
    tools = os.path.join(root, "tools")
    for d in (os.path.join(kit, "bin"), os.path.join(kit, "lib"), tools):
        os.makedirs(d)
    with open(os.path.join(kit, "MANIFEST"), "w") as f:
        f.write("commit: stand-in kit of tests/gpu_check_check.py\n")
    for name, text in (("hisvid_cuda_tests", CUDA_TESTS), ("hisvid_engine_tests", ENGINE_TESTS),
                       ("kernel_lab", KERNEL_LAB), ("hisvid_bench", BENCH), ("hisvid_precision", PRECISION)):
        write(os.path.join(kit, "bin", name), text)
    for name, text in (("nvidia-smi", NVIDIA_SMI), ("compute-sanitizer", SANITIZER), ("cuobjdump", CUOBJDUMP)):
        write(os.path.join(tools, name), text)
    return kit, tools


def main():
    repo = os.path.abspath(sys.argv[1])
    failures = []

    def check(good, what):
        if not good:
            failures.append(what)

    with tempfile.TemporaryDirectory(prefix="gpu_check_check_") as root:
        kit, tools = make_fakes(root)

        def gpu_check(name, args, **env_extra):
            out = os.path.join(root, name)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("GPU_CHECK_", "HISVID_", "FAKE_"))}
            env.update(env_extra, PATH=tools + os.pathsep + env["PATH"], TMPDIR=root)
            start = time.monotonic()
            proc = subprocess.run([os.path.join(repo, "scripts", "gpu-check"), "--kit", kit, "--out", out] + args,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=180)
            seconds = time.monotonic() - start
            files = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
            with open(os.path.join(out, "gpu-check.md")) as f:
                report = f.read()

            def read(rel):
                path = os.path.join(out, rel)
                return open(path).read() if os.path.exists(path) else ""
            return proc, report, files, read, seconds

        # 1. Every phase: a ConvLSTM step version that fails forced is left out of the bench's
        # timing; the const kernel's SASS counted per kernel; the precision table after its
        # block; the sanitizer runs the small cases; no more files than a device call returns.
        proc, report, files, read, _ = gpu_check(
            "all", ["tests", "steps", "bench", "lab", "sanitizer", "precision", "--", "--models", "lrcn",
                    "--skip-pytorch"], GPU_CHECK_BASELINE="HISVID_CUDA_CONV=rule", FAKE_FAIL_STEP="tiles",
            GPU_CHECK_LAB_ARGS="--kernel a,b --case seed_,N4")
        check(proc.returncode == 1, f"a failed forced step: exit {proc.returncode}, expected 1\n{proc.stdout}")
        check("ConvLSTM step tiles failed forced" in report, "the failed forced step is not named")
        check("env conv= step=v1" in read("bench.log"), "bench/compare's hisvid_bench did not run with step v1")
        check("env conv=rule step=v1" in read("bench.log"), "the baseline did not run with its setting and v1")
        check("FFMA(const operand): 1" in report and "FFMA: 1" in report and "LDC(const bank): 1" in report,
              "the const kernel's SASS counts are wrong:\n" + report)
        check("other_kernel" not in report, "another kernel's instructions were counted")
        check("```\n\n| model | precision" in report, "the precision table is not in the report after its runs")
        check("done: | lrcn | float32" in report, "the precision run's row is not in the report as printed")
        check("arguments: 9 --row cuda* --time --min-time 0.02 --kernel a,b --case seed_,N4" in read("lab.md"),
              "GPU_CHECK_LAB_ARGS did not reach kernel_lab as words: " + read("lab.md"))
        check("max_flops=2e7" in read("sanitizer.log"), "the sanitizer did not run the small cases only")
        check("A.One" in read("sanitizer.log"), "the sanitizer log does not name the tests that passed")
        check("## per layer" in report and "total (synchronised per layer)" in report, "no per-layer table")
        margins = report.split("largest error as a share of their tolerance")[-1]
        check("| lstm_cell_forward cuda | 11 | 0.5 |\n| conv2d_forward cuda | 51 | 0.125 |" in margins,
              "the CUDA rows' error margins are not in the report, largest first:\n" + report)
        check(len(files) <= 8, f"{len(files)} files, more than a device call brings back: {files}")
        check(not any(f.endswith(".txt") for f in files), f"the sides' console logs were left: {files}")

        # 2. A crash: no FAILED lines to go by, so every choice made by timing is fixed.
        proc, report, files, read, _ = gpu_check("crash", ["tests", "bench", "--", "--models", "lrcn", "--skip-pytorch"],
                                                 FAKE_CUDA_TESTS="crash")
        check(proc.returncode == 1, f"a crash: exit {proc.returncode}, expected 1")
        check("ended on signal 11" in report, "the crash is not named:\n" + report)
        check("which rows fail is not known" in report, "the crash did not fix the timed choices")
        check("row failed" not in report and "ran no test" not in report,
              "after a crash the report names failures that are not known:\n" + report)
        check("env conv=rule step=v1" in read("bench.log"), "after a crash the bench still timed the versions")

        # 3. The deadline: a hanging lab is stopped in time, the steps after it are skipped and
        # named, and the run ends before the deadline.
        deadline = 46  # the least that lets a step start: 20 s, and the 25 s a stopped one may take
        proc, report, files, read, seconds = gpu_check(
            "deadline", ["lab", "bench", "--", "--models", "lrcn", "--skip-pytorch"],
            GPU_CHECK_DEADLINE=str(deadline), FAKE_LAB="slow")
        check("stopped after" in report and "not run" in report.split("## kernel lab")[1].split("##")[0],
              "the stopped lab is not said to be incomplete:\n" + report)
        check("| conv2d_forward | a | cuda | ok |" in read("lab.md"), "the lab's rows before the stop were lost")
        check(proc.returncode == 0, f"a lab stopped with no failed row is no failure: exit {proc.returncode}")
        check(f"not run for GPU_CHECK_DEADLINE={deadline}: cuobjdump; bench/compare; hisvid_bench --per_layer" in report,
              "the skipped steps are not named in the last lines:\n" + report)
        check(seconds < deadline, f"the run took {seconds:.0f} s, past its deadline of {deadline} s")

        # A deadline that is not whole seconds, or a case bound that is not a number, is refused
        # before anything runs.
        for variable, value in (("GPU_CHECK_DEADLINE", "7m"), ("GPU_CHECK_SANITIZER_MAX_FLOPS", "lots")):
            proc = subprocess.run([os.path.join(repo, "scripts", "gpu-check"), "--kit", kit, "--out",
                                   os.path.join(root, "refused"), "sanitizer"],
                                  env=dict(os.environ, PATH=tools + os.pathsep + os.environ["PATH"], **{variable: value}),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
            check(proc.returncode == 2 and f"{variable}='{value}'" in proc.stdout,
                  f"{variable}='{value}' is not refused with exit 2: {proc.returncode}\n{proc.stdout}")
            check(not os.path.exists(os.path.join(root, "refused")), "a refused run wrote its folder")

        # 4. A run of no test fails; a sanitizer that refuses the device is said so, once.
        proc, report, files, read, _ = gpu_check("refused", ["tests", "sanitizer"], FAKE_CUDA_TESTS="none",
                                                 FAKE_SANITIZER="unsupported")
        check(proc.returncode == 1, f"no test run: exit {proc.returncode}, expected 1")
        check("ran no test" in report, "a run of no test is not called a failure")
        check(report.count("does not support this device") == 1, "the refused device is not said once:\n" + report)

    for f in failures:
        print("FAILED:", f)
    print(f"gpu_check_check: {'ok' if not failures else f'{len(failures)} failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
