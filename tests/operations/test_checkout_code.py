"""A server runs the code of the checkout whose model repository it serves.

The backend stubs import ``qwen3_aligner_triton`` like any Python would: from wherever the
environment's editable install points. A second clone tested with this checkout's venv would then
serve the clone's ``model.py`` on this checkout's package. The rendered repository records the
``src/`` of the checkout it came from, the launcher puts that folder first on the server's
PYTHONPATH, and the models put PYTHONPATH first on ``sys.path`` (the nvidia-pytriton stub embeds
CPython isolated: left alone it reads no PYTHONPATH).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from shared_fixtures import SERVER_READY_TIMEOUT

import qwen3_aligner_triton
from qwen3_aligner_triton.repository import (
    RENDERED_MARKER,
    SOURCE_REPOSITORY,
    Placement,
    package_source,
    render_repository,
)
from qwen3_aligner_triton.triton_flags import loopback_options
from qwen3_aligner_triton.triton_install import server_environment
from qwen3_aligner_triton.tritonserver import shm_regions, start

PACKAGE_DIR = Path(qwen3_aligner_triton.__file__).resolve().parent  # the code under test
UNCOPIED = shutil.ignore_patterns("__pycache__", "*.pyc")


def clone_checkout(where: Path) -> Path:
    """A copy of this checkout's package and model repository (the parts a server runs)."""
    shutil.copytree(PACKAGE_DIR, where / "src" / PACKAGE_DIR.name, ignore=UNCOPIED)
    shutil.copytree(SOURCE_REPOSITORY, where / "model_repository", ignore=UNCOPIED)
    return where


def test_the_package_folder_goes_first_on_the_servers_pythonpath():
    env = server_environment({"PYTHONPATH": "/opt/a:/work/src"}, None, Path("/work/src"))
    assert env["PYTHONPATH"] == "/work/src:/opt/a"
    assert server_environment({}, None, Path("/work/src"))["PYTHONPATH"] == "/work/src"
    assert "PYTHONPATH" not in server_environment({}, None, None)
    assert server_environment({"PYTHONPATH": "/opt/a"}, None)["PYTHONPATH"] == "/opt/a"


def test_the_checkouts_tools_follow_its_package_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    assert server_environment({}, None, src)["PYTHONPATH"] == str(src)  # no tools/: the image
    (tmp_path / "tools" / "qwen3_aligner_tools").mkdir(parents=True)
    (tmp_path / "tools" / "qwen3_aligner_tools" / "__init__.py").write_text("")
    tools = str(tmp_path / "tools")
    env = server_environment({"PYTHONPATH": f"/opt/a:{tools}"}, None, src)
    assert env["PYTHONPATH"] == f"{src}:{tools}:/opt/a"


def test_a_rendered_repository_records_the_checkout_it_came_from(tmp_path):
    here = render_repository(tmp_path / "here", Placement("KIND_CPU", 1))
    assert package_source(here) == PACKAGE_DIR.parent
    assert package_source(SOURCE_REPOSITORY) == PACKAGE_DIR.parent  # served as it is
    clone = clone_checkout(tmp_path / "clone")
    there = render_repository(
        tmp_path / "there", Placement("KIND_CPU", 1), source=clone / "model_repository"
    )
    assert package_source(there) == clone / "src"
    again = render_repository(tmp_path / "again", Placement("KIND_CPU", 1), source=there)
    assert package_source(again) == clone / "src", "rendered from a rendered repository"
    # A template outside a checkout (the image's): the environment's installed package serves.
    shutil.copytree(SOURCE_REPOSITORY, tmp_path / "opt" / "model_repository", ignore=UNCOPIED)
    image = render_repository(
        tmp_path / "image", Placement("KIND_CPU", 1), source=tmp_path / "opt" / "model_repository"
    )
    assert (image / RENDERED_MARKER).is_file() and package_source(image) is None
    assert package_source(tmp_path / "opt" / "model_repository") is None
    # The checkout is gone: nothing to point at.
    shutil.rmtree(clone / "src")
    assert package_source(there) is None
    # Rendered again from this checkout, it names this checkout.
    assert package_source(render_repository(there, Placement("KIND_CPU", 2))) == PACKAGE_DIR.parent


@pytest.mark.integration
def test_the_server_imports_the_package_of_the_checkout_it_serves(tmp_path, tiny_checkpoint):
    """A clone served with this environment (whose editable install points elsewhere) runs the
    clone's package: the front logs where it imported the package from."""
    clone = clone_checkout(tmp_path / "clone").resolve()
    served = clone / "src" / PACKAGE_DIR.name
    assert served != PACKAGE_DIR
    repo = render_repository(
        tmp_path / "repo",
        Placement("KIND_CPU", 1),
        {"checkpoint": str(tiny_checkpoint)},
        source=clone / "model_repository",
        front_instances=1,
    )
    opts = loopback_options(repo)
    # Even a PYTHONPATH that names this checkout's src/ does not win over the served checkout.
    base = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent)}
    running = start(opts, env=base)
    try:
        running.wait_ready(SERVER_READY_TIMEOUT)
    finally:
        code = running.stop()
    log = list(running.log_tail)
    imported = [ln for ln in log if ": package qwen3_aligner_triton from " in ln]
    for instance in ("qwen3_aligner_0_0", "qwen3_aligner_core_0_0"):
        assert any(f"{instance}: package" in ln for ln in imported), "\n".join(log[-25:])
    assert all(f"from {served}" in ln for ln in imported), imported
    assert code == 0, running.failure_summary()
    assert not shm_regions(opts.shm_prefix)
