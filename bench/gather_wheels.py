"""Gather the wheels a GPU machine without network needs for bench/gpu_check.py, into bench/wheels/ (git-ignored).

    .venv/bin/python bench/gather_wheels.py [--dest bench/wheels] [--max-mib 60]

Which: thinktrain's dependencies (pyproject.toml) except torch and tensorboard, and everything they need, walked
through the installed packages' metadata for CPython 3.12 on Linux x86-64; not walked into, and not gathered, what
the GPU machine has with torch and its data stack: SKIP below. Each at the exact version installed in this venv, one
wheel each, for CPython 3.12 manylinux x86-64 (`pip download --only-binary=:all: --no-deps`). Also writes
DEST/requirements.txt: pyproject's ranges for those dependencies, which bench/gpu_check.sh installs with
`pip install --no-index --find-links DEST` (a package already within its range is kept). Prints the total size and
fails when it is over --max-mib (the wheels travel with the repository, 64 MiB together), then checks that pip
resolves requirements.txt offline from them for that target.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
NOT_NEEDED = {"torch", "tensorboard"}  # torch: the GPU machine's own CUDA build; tensorboard: only report_to
SKIP = {"torch", "numpy", "pandas", "pyarrow", "setuptools", "pip"}  # there already (and large); not walked into
TARGET = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux", "os_name": "posix",
          "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
          "platform_python_implementation": "CPython", "extra": ""}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
TARGET_FLAGS = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
                *(x for platform in PLATFORMS for x in ("--platform", platform))]


def name(n: str) -> str:
    return re.sub(r"[-_.]+", "-", n).lower()


def needed() -> tuple[list[Requirement], dict[str, str]]:
    """(pyproject's requirements to install, {package: installed version} of everything they need)."""
    deps = [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    top = [r for r in deps if name(r.name) not in NOT_NEEDED]
    todo, found, walked = [(r, "") for r in top], {}, set()
    while todo:  # (requirement, the extra its marker is evaluated with)
        req, extra = todo.pop()
        n = name(req.name)
        if n in SKIP or (req.marker and not req.marker.evaluate({**TARGET, "extra": extra})):
            continue
        found[n] = metadata.version(n)
        for wanted in ("", *req.extras):  # datasets needs fsspec[http]: fsspec's deps for extra "http" too
            if (n, wanted) not in walked:
                walked.add((n, wanted))
                todo += [(Requirement(r), wanted) for r in metadata.requires(n) or []
                         if wanted == "" or "extra" in r]
    return top, dict(sorted(found.items()))


def verify(dest: Path) -> None:
    """Resolve requirements.txt for the target as pip on the GPU machine would (offline, from dest only), with
    empty stand-in wheels for SKIP at this venv's versions: proves the set is complete and installable there."""
    import tempfile
    import zipfile

    with tempfile.TemporaryDirectory() as tmp:
        for n in SKIP - {"pip"}:
            version = metadata.version(n).split("+")[0]
            info = f"{n}-{version}.dist-info"
            files = {f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {n}\nVersion: {version}\n",
                     f"{info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
                     f"{info}/RECORD": ""}
            with zipfile.ZipFile(Path(tmp) / f"{n}-{version}-py3-none-any.whl", "w") as z:
                for path, text in files.items():
                    z.writestr(path, text)
        cmd = [sys.executable, "-m", "pip", "--isolated", "install", "--quiet", "--dry-run", "--ignore-installed",
               "--no-index", "--find-links", str(dest), "--find-links", tmp, *TARGET_FLAGS,
               "--target", str(Path(tmp) / "target"), "-r", str(dest / "requirements.txt")]
        if subprocess.run(cmd).returncode:
            sys.exit("gather_wheels: error: the wheels do not install offline for CPython 3.12 (above)")
    print("verified: requirements.txt resolves offline from these wheels for CPython 3.12 manylinux x86-64 (with "
          f"{', '.join(sorted(SKIP - {'pip'}))} from the machine)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dest", default=str(ROOT / "bench" / "wheels"))
    p.add_argument("--max-mib", type=float, default=60)
    a = p.parse_args()
    dest = Path(a.dest)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):  # one wheel per package: no leftovers of other versions
        old.unlink()
    top, pins = needed()
    print(f"{len(pins)} packages: " + ", ".join(f"{n}=={v}" for n, v in pins.items()), flush=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *TARGET_FLAGS, "--dest", str(dest),
           *(f"{n}=={v}" for n, v in pins.items())]
    if subprocess.run(cmd).returncode:
        sys.exit("gather_wheels: error: pip download failed (above)")
    (dest / "requirements.txt").write_text("".join(f"{r}\n" for r in top))
    wheels = sorted(dest.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels) / 2**20
    for w in sorted(wheels, key=lambda w: -w.stat().st_size)[:5]:
        print(f"  {w.stat().st_size / 2**20:5.1f} MiB  {w.name}")
    print(f"{len(wheels)} wheels, {total:.1f} MiB in {dest}")
    if len(wheels) != len(pins):
        sys.exit(f"gather_wheels: error: {len(pins)} packages but {len(wheels)} wheels")
    if total > a.max_mib:
        sys.exit(f"gather_wheels: error: {total:.1f} MiB is over --max-mib {a.max_mib:g}")
    verify(dest)


if __name__ == "__main__":
    main()
