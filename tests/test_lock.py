"""The lock (requirements/*.txt, written by `make lock`) is what the set-up installs: it must agree with pyproject's
ranges, pin every package exactly, and be what this test run is running on."""

import re
import shutil
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCKS = {"cpu": ROOT / "requirements/cpu.txt", "gpu": ROOT / "requirements/gpu.txt"}
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)\s*(?:;\s*(.+))?$")


def read_lock(path: Path) -> list[tuple[str, str, str | None]]:
    """(name, version, marker or None) for every pinned line; a line that is neither a pin, a comment nor empty fails."""
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = PIN.match(line.strip())
        assert m, f"{path.name}: not an exact pin: {line!r}"
        rows.append((canonicalize_name(m[1]), m[2], m[3]))
    return rows


def applies(marker: str | None, extra_env: dict | None = None) -> bool:
    return marker is None or Marker(marker).evaluate(extra_env or {})


def pyproject_requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = list(project["dependencies"])
    for extra in extras:
        names += project["optional-dependencies"][extra]
    return [Requirement(r) for r in names]


def test_every_pyproject_requirement_is_pinned_within_its_range():
    for lock, extras in (("cpu", ("dev",)), ("gpu", ("dev", "vllm"))):
        pinned: dict[str, list[Version]] = {}
        for name, version, marker in read_lock(LOCKS[lock]):
            if applies(marker):
                pinned.setdefault(name, []).append(Version(version))
        for req in pyproject_requirements(*extras):
            name = canonicalize_name(req.name)
            assert name in pinned, f"{lock} lock lacks {req.name}: run `make lock`"
            for version in pinned[name]:
                assert req.specifier.contains(version, prereleases=True), \
                    f"{lock} lock pins {name}=={version} outside pyproject's {req}: run `make lock`"


def test_both_locks_pin_the_same_torch_and_the_cpu_lock_no_cuda_library():
    cpu = {n: v for n, v, _ in read_lock(LOCKS["cpu"])}
    gpu = {n: v for n, v, _ in read_lock(LOCKS["gpu"])}
    assert cpu["torch"] == gpu["torch"] == "2.13.0"  # no local label: `torch==2.13.0` takes the CPU build where there is one
    assert not [n for n in cpu if n.startswith("nvidia-") or n == "triton"]
    for name in ("transformers", "trl", "peft", "accelerate", "datasets", "huggingface-hub", "kernels"):
        assert cpu[name] == gpu[name], name


def installed_lock() -> Path:
    """The lock `make` installed this venv from (it writes its path into .venv/.installed), else the one it would."""
    marker = Path(sys.prefix) / ".installed"
    name = marker.read_text().strip() if marker.is_file() else ""
    if name:
        return ROOT / name
    return LOCKS["gpu" if shutil.which("nvidia-smi") else "cpu"]


def test_this_environment_is_the_lock():
    """The venv running the tests holds exactly the lock's versions (the one `make` picked for this machine)."""
    lock = installed_lock()
    wrong = []
    for name, version, marker in read_lock(lock):
        if not applies(marker):
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name} missing (lock: {version})")
            continue
        if Version(installed).public != Version(version).public:  # torch 2.13.0+cpu is the lock's 2.13.0
            wrong.append(f"{name} {installed} (lock: {version})")
    assert not wrong, f"not what {lock.name} pins (make: rm -r .venv && make test): " + ", ".join(wrong)
    if lock == LOCKS["gpu"]:  # the GPU lock's torch must be a CUDA build (a CPU wheel on the machine would win)
        import torch

        assert torch.version.cuda is not None, "gpu.txt installed torch's CPU build"
