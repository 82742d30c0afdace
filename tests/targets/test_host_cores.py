"""targets.host_cores and the CPU thread pool the runtime sizes from it."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from inference_pio import targets


def test_host_cores_counts_the_cores_this_process_may_use():
    n = targets.host_cores()
    assert 1 <= n <= len(os.sched_getaffinity(0))


def _fake_sysfs(monkeypatch, cpus: set[int], files: dict[str, str]) -> None:
    """The process may run on ``cpus``; reading a /sys path gives files[path], or OSError if absent."""
    real_open = open

    def fake_open(path, *a, **k):
        if isinstance(path, str) and path.startswith("/sys/"):
            if path not in files:
                raise OSError(f"{path}: not here")
            return io.StringIO(files[path] + "\n")
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cpus)
    monkeypatch.setattr("builtins.open", fake_open)


def test_hyperthread_siblings_count_once(monkeypatch):
    siblings = {0: "0,2", 2: "0,2", 1: "1,3", 3: "1,3"}  # two cores, two threads each
    files = {f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list": line for cpu, line in siblings.items()}
    _fake_sysfs(monkeypatch, {0, 1, 2, 3}, files)  # and no cgroup v2 quota
    assert targets.host_cores() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2})  # pinned to one core's two threads
    assert targets.host_cores() == 1


def test_a_cgroup_quota_caps_the_count(monkeypatch):
    _fake_sysfs(monkeypatch, set(range(8)), {"/sys/fs/cgroup/cpu.max": "150000 100000"})  # 1.5 CPUs -> 2 threads
    assert targets.host_cores() == 2


def _threads(env: dict[str, str]) -> list[int]:
    code = ("from inference_pio.engine.runtime import cpu_threads; from inference_pio.targets import host_cores; "
            "print(cpu_threads(), host_cores())")
    base = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**base, **env},
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return [int(v) for v in r.stdout.split()]


@pytest.mark.parametrize("runtime_only", ["0", "1"])
def test_the_runtime_sizes_the_pool_to_the_physical_cores(runtime_only):
    """TVM alone would take half the logical CPUs (it assumes hyperthread pairs)."""
    pool, cores = _threads({"TVM_USE_RUNTIME_LIB": runtime_only})
    assert pool == cores


def test_tvm_num_threads_set_by_the_user_wins():
    assert _threads({"TVM_NUM_THREADS": "1"})[0] == 1
