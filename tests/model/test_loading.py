"""Loading checkpoints: a clear error for every way a checkpoint can be wrong; the import trap."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from qwen3_aligner_triton.loading import (
    describe_checkpoint,
    load_aligner,
    resolve_device,
    resolve_dtype,
)
from qwen3_aligner_triton.params import ConfigError


def copy_checkpoint(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_describe_checkpoint(tmp_path, tiny_checkpoint):
    assert describe_checkpoint(str(tiny_checkpoint)) == "folder"
    assert describe_checkpoint("Qwen/Qwen3-ForcedAligner-0.6B") == "hub"
    with pytest.raises(ConfigError, match=r"has no config\.json"):
        describe_checkpoint(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="is a file"):
        describe_checkpoint(str(tmp_path / "weights.bin"))
    with pytest.raises(ConfigError, match="does not exist"):
        describe_checkpoint(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="does not exist"):
        describe_checkpoint("./models/aligner")


def test_devices_and_dtypes():
    import torch

    assert resolve_device("KIND_GPU", "3") == "cuda:3"
    assert resolve_device("GPU", 0) == "cuda:0"
    assert resolve_device("CPU", "0") == "cpu"
    with pytest.raises(ConfigError, match="unsupported instance kind"):
        resolve_device("KIND_TPU", "0")
    assert resolve_dtype("auto", "cuda:0") == torch.bfloat16
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("float16", "cpu") == torch.float16


def test_truncated_weights_fail_with_the_folder_named(tmp_path, tiny_checkpoint):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "truncated")
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ConfigError, match="could not load checkpoint folder"):
        load_aligner(str(ckpt), "cpu")


def test_missing_weights_fail(tmp_path, tiny_checkpoint):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "noweights")
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="could not load checkpoint folder"):
        load_aligner(str(ckpt), "cpu")


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            lambda cfg: cfg["thinker_config"].update(model_type="qwen3_asr_thinker"),
            "forced-aligner",
        ),
        (lambda cfg: cfg.update(model_type="bert"), "could not load"),
        (lambda cfg: cfg["thinker_config"]["text_config"].update(hidden_size=32), "could not load"),
    ],
    ids=["asr-not-aligner", "other-architecture", "mismatched-sizes"],
)
def test_incompatible_checkpoints_fail_with_the_cause(tmp_path, tiny_checkpoint, patch, message):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "incompatible")
    config = json.loads((ckpt / "config.json").read_text())
    patch(config)
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=message):
        load_aligner(str(ckpt), "cpu")


def test_unparsable_config_fails(tmp_path, tiny_checkpoint):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path / "badjson")
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="could not load checkpoint folder"):
        load_aligner(str(ckpt), "cpu")


def test_gpu_without_cuda_is_refused(tiny_checkpoint):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="no CUDA device"):
        load_aligner(str(tiny_checkpoint), "cuda:0")


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


def test_unreachable_hub_id_names_what_was_tried():
    proc = run_python(
        """
        from qwen3_aligner_triton.loading import load_aligner
        try:
            load_aligner("Qwen/no-such-forced-aligner", "cpu")
        except ValueError as e:
            print("ERROR:", e)
        """,
        HF_HUB_OFFLINE="1",
    )
    assert "ERROR: could not load 'Qwen/no-such-forced-aligner' as a Hugging Face Hub id" in (
        proc.stdout
    ), proc.stderr[-2000:]
    assert "no local folder of that name" in proc.stdout


def test_import_trap_is_avoided(tmp_path):
    """nagisa's bare ``import model`` must not find Triton's model.py beside it."""
    version_dir = tmp_path / "1"
    version_dir.mkdir()
    (version_dir / "model.py").write_text("raise ImportError('this is the Triton model.py')\n")
    code = f"""
        import sys
        sys.path.insert(0, {str(version_dir)!r})
        sys.modules["model"] = marker = type(sys)("model")
        from qwen3_aligner_triton.loading import import_qwen_asr
        import_qwen_asr({{shadow}})
        import qwen_asr
        assert sys.modules["model"] is marker, "our sys.modules['model'] was not put back"
        assert sys.path[0] == {str(version_dir)!r}
        print("imported", qwen_asr.Qwen3ForcedAligner.__name__)
        """
    ok = run_python(code.replace("{shadow}", repr(str(version_dir))))
    assert "imported Qwen3ForcedAligner" in ok.stdout, ok.stderr[-2000:]
    trapped = run_python(code.replace("{shadow}", "None"))
    assert trapped.returncode != 0
    assert "model" in trapped.stderr
