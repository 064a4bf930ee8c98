"""Training-step time of the from-scratch network sizes (:data:`cervixtl.training.SIZES`) on this machine.

One optimiser step = forward, the training loss (Dice + cross-entropy over sigmoid channels), backward and
AdamW, on a batch of ``--batch`` random patches (CT-like intensities, 6 output channels as in the OpenKBP
learning curves: 5 organs + PTV70). Augmentation and data loading are not included (about 4 % of a small
step). Printed per size: parameters, patch (z, y, x voxels), median seconds per step over ``--steps`` timed
steps after one warm-up step, the ratio against ``small`` measured in the same run, and how many steps fit
in a 60-minute Model_S budget and a 15-minute target arm. ``--mixed`` also times each network at the other
size's patch, so that the cost of the width and the cost of the patch are seen apart.

    .venv/bin/python benchmarks/bench_network_size.py [--threads 2] [--steps 3] [--device cpu] [--mixed]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def step_seconds(init_filters: int, patch: tuple[int, int, int], *, batch: int, steps: int,
                 device: torch.device, channels: int = 6) -> tuple[int, float]:
    """(parameters, median seconds per optimiser step) of a SegResNet card with ``init_filters`` on
    ``batch`` patches of ``patch`` voxels (z, y, x)."""
    from cervixtl.models.networks import build_network, segresnet_card
    from cervixtl.training.loss import make_loss

    labels = ["Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Mandible", "PTV70"][:channels]
    card = segresnet_card("size-bench", labels, init_filters=init_filters, patch_size=patch)
    net = build_network(card).to(device).train()
    loss_fn = make_loss(card)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((batch, 1, *patch), generator=gen).to(device)
    y = (torch.rand((batch, channels, *patch), generator=gen) > 0.9).float().to(device)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        loss = loss_fn(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t)
    return sum(p.numel() for p in net.parameters()), statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    ap.add_argument("--batch", type=int, default=2, help="patches per step (the training default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mixed", action="store_true", help="also each width at the other size's patch")
    args = ap.parse_args(argv)

    from cervixtl.training import SIZES

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    configs = [(name, s["init_filters"], tuple(s["patch_size"])) for name, s in SIZES.items()]
    if args.mixed:
        small, large = SIZES["small"], SIZES["large"]
        configs += [("small width, large patch", small["init_filters"], tuple(large["patch_size"])),
                    ("large width, small patch", large["init_filters"], tuple(small["patch_size"]))]
    print(f"{args.device}, {args.threads} threads, batch {args.batch}, median of {args.steps} steps")
    print(f"{'network':<26}{'params':>11}{'patch':>16}{'s/step':>9}{'x small':>9}{'steps/60 min':>14}"
          f"{'steps/15 min':>14}")
    base = None
    for name, filters, patch in configs:
        n_par, sec = step_seconds(filters, patch, batch=args.batch, steps=args.steps, device=device)
        base = base or sec
        print(f"{name:<26}{n_par / 1e6:>10.1f}M{'x'.join(map(str, patch)):>16}{sec:>9.2f}{sec / base:>9.1f}"
              f"{int(3600 / sec):>14}{int(900 / sec):>14}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
