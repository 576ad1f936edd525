"""Distributed data-parallel training: two CPU processes with the gloo backend, launched by torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch.distributed

import napari_addunet as na

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from napari_addunet.engine.datasets import clean_data
    from napari_addunet.engine.training import train

    rng = np.random.default_rng(0)
    images = [rng.random((40, 40)).astype(np.float32) for _ in range(4)]
    result = train(
        clean_data(images, normalization="none"), "addunet",
        dict(epochs=2, steps_per_epoch=3, batch_size=2, patch_size=16, val_patches=4, device="cpu",
             ema_decay=float(sys.argv[2])),
        model_settings={"width": 4, "kernels": (3,)}, output=sys.argv[1],
    )
    flat = torch.cat([v.flatten() for v in result.model.state_dict().values()])
    rank = int(os.environ["RANK"])
    with open(f"result-{rank}.json", "w") as f:  # one file per rank: printed lines can interleave
        json.dump({
            "rank": rank, "world": int(os.environ["WORLD_SIZE"]), "step": result.step,
            "reason": result.reason, "checksum": float(flat.double().sum()),
            "processes": result.model.metadata["training"]["processes"],
            "val_loss": [h["val_loss"] for h in result.history],
        }, f)
    """
)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_two_process_gloo_run_completes_with_identical_weights(tmp_path, repo_root, ema):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    out = tmp_path / "ddp.safetensors"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(repo_root / "src"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(script),
        str(out),
        str(ema),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(
        (json.loads(f.read_text()) for f in tmp_path.glob("result-*.json")), key=lambda r: r["rank"]
    )
    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["world"] == 2 and r["step"] == 6 and r["reason"] == "completed" for r in results)
    assert results[0]["checksum"] == results[1]["checksum"]  # DDP keeps the replicas identical
    # and the weight average too: every process starts from the same weights, so validation
    # (which decides the best model and early stopping in each process) agrees
    assert results[0]["val_loss"] == results[1]["val_loss"]
    assert results[0]["processes"] == 2
    model = na.load_model(out)  # written once, by rank 0
    assert model.metadata["training"]["processes"] == 2
