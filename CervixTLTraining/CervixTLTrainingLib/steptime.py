"""Measure one fine-tuning step of a model on this computer (run as a separate process by the module).

``python steptime.py [--model NAME[@VER]] [--device cpu|cuda|auto] [--steps 3] [--threads N] [--batch 2]`` loads the model
through the engine's registry, times ``--steps`` optimiser steps (forward + backward + Adam update) on a batch
of ``--batch`` (default 2, as ``cervixtl finetune``) random patches of the model card's ``input.patch_size`` (z, y, x voxels) after one warm-up step, and prints one
JSON line: ``{"device", "device_name", "cuda_available", "step_s", "startup_s", "patch_size", "model"}``.
With ``--steps 0`` it only reports the devices (no model is loaded).

The module multiplies ``step_s`` by the planned number of steps to give an honest time estimate before a run
(in particular when no GPU is found and the CPU is offered instead).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _devices() -> dict:
    import torch

    cuda = bool(torch.cuda.is_available())
    name = torch.cuda.get_device_name(0) if cuda else "CPU"
    return {"cuda_available": cuda, "device_name": name}


def measure(model: str | None, device: str, steps: int, threads: int | None, batch: int = 2) -> dict:
    """Time ``steps`` training steps of ``model`` on ``device``; returns the JSON-able result."""
    import torch

    info = _devices()
    dev = ("cuda" if info["cuda_available"] else "cpu") if device == "auto" else device
    if dev == "cpu":
        info["device_name"] = "CPU"
    out = {"device": dev, **info, "step_s": None, "startup_s": None, "model": model}
    if steps <= 0:
        return out
    if threads:
        torch.set_num_threads(int(threads))
    import torch.nn.functional as F

    from cervixtl.models.registry import Registry

    t0 = time.perf_counter()
    card, net = Registry().load(model, device=dev)
    net.train()
    patch = [int(v) for v in card.input["patch_size"]] if isinstance(card.input, dict) else [32, 64, 64]
    n_out = int(card.architecture["params"].get("out_channels", 1))
    sigmoid = card.output == "sigmoid"
    x = torch.rand(batch, 1, *patch, device=dev)
    y = (torch.rand(batch, n_out, *patch, device=dev) > 0.5).float()

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Dice + cross-entropy like the engine's loss (its cost is negligible next to the network's)
        prob = torch.sigmoid(logits) if sigmoid else torch.softmax(logits, dim=1)
        inter = (prob * target).sum(dim=(2, 3, 4))
        dice = 1 - (2 * inter + 1e-5) / (prob.sum(dim=(2, 3, 4)) + target.sum(dim=(2, 3, 4)) + 1e-5)
        ce = (F.binary_cross_entropy_with_logits(logits, target) if sigmoid
              else F.cross_entropy(logits, target.argmax(dim=1)))
        return dice.mean() + ce
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    startup = time.perf_counter() - t0

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up (allocations, cuDNN autotuning)
    t1 = time.perf_counter()
    for _ in range(steps):
        step()
    out.update(step_s=(time.perf_counter() - t1) / steps, startup_s=startup, patch_size=patch,
               model=f"{card.name}@{card.version}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="registry model NAME[@VER] (default: the active model)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step (0: devices only)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch")
    ap.add_argument("--batch", type=int, default=2, help="patches per step (cervixtl finetune uses 2)")
    a = ap.parse_args(argv)
    try:
        res = measure(a.model, a.device, a.steps, a.threads, a.batch)
    except Exception as exc:  # noqa: BLE001 - one line for the GUI, never a traceback
        print(f"cervixtl: error: cannot time a training step: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
