"""constraints.txt pins every dependency, and the environment the tests run in was installed through it."""
import importlib.metadata
import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lib import config


def pinned() -> dict[str, str]:
    lines = (config.PROJECT_ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    found = [re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s+]+)", line) for line in lines
             if line and not line.startswith("#")]
    assert all(found), "constraints.txt holds `name==version` lines only (no hashes, no local labels)"
    return {canonicalize_name(m[1]): m[2] for m in found}


def test_every_dependency_of_the_project_is_pinned():
    requirements = [Requirement(r) for r in importlib.metadata.requires("vi-en-cs-speech")]
    missing = {canonicalize_name(r.name) for r in requirements} - set(pinned())
    assert not missing
    assert pinned()["torch"] == "2.13.0"  # the release pyproject.toml pins, whichever build (CPU or CUDA) serves it


def test_the_installed_versions_are_the_pinned_ones():
    versions = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    wrong = {name: (versions[name], version) for name, version in pinned().items()
             if name in versions and versions[name].split("+")[0] != version}
    assert not wrong, f"installed, pinned: {wrong}; reinstall with `make setup` (pip install -c constraints.txt)"
