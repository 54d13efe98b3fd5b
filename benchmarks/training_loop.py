"""The bench's MNIST net trained on real MNIST by fastcnn and torch in one process.

    python benchmarks/training_loop.py [--mnist DIR] [--threads N] [--block 50]

``fastcnn bench`` times the training step on one batch, in short samples that alternate
between the libraries; this runs one epoch of real batches (64 images, one shuffled order),
the libraries taking turns in blocks of ``--block`` steps that both run over the same
batches, from the same initial weights. It prints each library's median time per step over
the blocks, the median of the per-block ratios, and each one's total over the epoch. Set
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` high to see torch at its best
(see ``benchmarks/README.md``); run it both ways. Needs torch and the four MNIST files
(``fastcnn.data.load_mnist(download=True)`` fetches them).
"""

import argparse
import os
import time

import numpy as np

import fastcnn
from fastcnn import data
from fastcnn.bench import presets, workloads


def main(argv=None) -> dict:
    """Run the comparison; returns the seconds per step of every block, per library."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", default=None, help="folder of the MNIST files")
    parser.add_argument("--threads", type=int, default=fastcnn.get_num_threads())
    parser.add_argument("--block", type=int, default=50, help="steps per turn")
    parser.add_argument("--batches", type=int, default=None, help="stop after this many")
    args = parser.parse_args(argv)

    import torch

    fastcnn.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    images, labels = data.load_mnist(args.mnist)
    (case,) = presets.cases("mnist-step")
    state = workloads.inputs(case)  # the step's batch arrays and the initial weights
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    steps = {
        "fastcnn": workloads.fastcnn_train_step(state),
        "torch": workloads.torch_train_step(torch, tensors),
    }
    order = np.random.default_rng(0).permutation(len(labels))
    batches = [order[i : i + 64] for i in range(0, len(labels) - 63, 64)][: args.batches]
    per_step = {name: [] for name in steps}
    for first in range(0, len(batches) - args.block + 1, args.block):
        names = list(steps) if first // args.block % 2 == 0 else list(steps)[::-1]
        for name in names:
            start = time.perf_counter()
            for idx in batches[first : first + args.block]:
                # Both steps read these arrays (torch's tensors share their memory).
                np.copyto(state["x"], images[idx])
                np.copyto(state["targets"], labels[idx])
                steps[name]()
            per_step[name].append((time.perf_counter() - start) / args.block)
        time.sleep(0.05)  # lets the OpenMP threads of the last library go to sleep
    fast, slow = np.array(per_step["fastcnn"]), np.array(per_step["torch"])
    malloc = "set" if os.environ.get("MALLOC_MMAP_THRESHOLD_") else "unset"
    print(
        f"threads {args.threads}, malloc variables {malloc}, {len(fast)} blocks of "
        f"{args.block} steps: ms per step fastcnn {np.median(fast) * 1e3:.2f}, torch "
        f"{np.median(slow) * 1e3:.2f}; fastcnn/torch {np.median(fast / slow):.2f} (median "
        f"of the blocks); epoch fastcnn {fast.sum() * args.block:.1f} s, torch "
        f"{slow.sum() * args.block:.1f} s"
    )
    return per_step


if __name__ == "__main__":
    main()
