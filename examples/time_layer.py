"""Time a fastcnn layer (or the whole LeNet) against the same one in torch.

    python examples/time_layer.py [--layer conv|linear|lenet] [--batch 64] [--threads N]
                                  [--repeat 30]

Both get the same weights and input (float32); the script checks that their outputs
agree, then prints the median and the fastest of ``--repeat`` timed calls of the
forward, and of forward + backward (the loss's gradient back to every parameter).
``--batch 1`` times one sample at a time.
"""

import argparse
import time

import numpy as np
import torch

import fastcnn
from fastcnn import nn
from fastcnn.train import lenet

LAYERS = {  # name -> (fastcnn layer, its torch twin, input shape without the batch)
    "conv": (
        lambda: nn.Conv2d(32, 64, 3, padding=1, rng=0),
        lambda: torch.nn.Conv2d(32, 64, 3, padding=1),
        (32, 14, 14),
    ),
    "linear": (lambda: nn.Linear(3136, 128, rng=0), lambda: torch.nn.Linear(3136, 128), (3136,)),
    "lenet": (lambda: lenet(rng=0), None, (1, 28, 28)),
}


def torch_twin(layer, make_torch):
    """A torch module with ``layer``'s weights (LeNet: the same layers, rebuilt)."""
    if make_torch is None:
        t = torch.nn
        module = t.Sequential(
            t.Conv2d(1, 32, 3, padding=1),
            t.MaxPool2d(2),
            t.ReLU(),
            t.Conv2d(32, 64, 3, padding=1),
            t.MaxPool2d(2),
            t.ReLU(),
            t.Flatten(),
            t.Linear(3136, 128),
            t.ReLU(),
            t.Linear(128, 10),
        )
    else:
        module = make_torch()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return module


def timed(f, repeat):
    f()  # warm-up: loads or compiles fastcnn's kernels
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return 1e3 * np.median(times), 1e3 * min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", choices=sorted(LAYERS), default="conv")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=fastcnn.get_num_threads())
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    fastcnn.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)

    make, make_torch, shape = LAYERS[args.layer]
    layer = make()
    twin = torch_twin(layer, make_torch)
    x = np.random.default_rng(1).standard_normal((args.batch, *shape), dtype=np.float32)
    tx = torch.from_numpy(x)
    y = layer(x)
    np.testing.assert_allclose(y, twin(tx).detach().numpy(), rtol=1e-3, atol=1e-4)
    grad = np.ones_like(y)

    def fastcnn_step():
        layer.zero_grad()
        layer(x)
        layer.backward(grad, need_input_grad=False)

    def torch_step():
        twin.zero_grad()
        twin(tx).backward(torch.from_numpy(grad))

    def torch_forward():
        with torch.no_grad():
            twin(tx)

    print(f"{args.layer}, batch {args.batch}, {args.threads} thread(s); ms, median (fastest)")
    for what, f_fast, f_torch in (
        ("forward", lambda: layer(x), torch_forward),
        ("forward + backward", fastcnn_step, torch_step),
    ):
        (fm, ff), (tm, tf) = timed(f_fast, args.repeat), timed(f_torch, args.repeat)
        print(
            f"{what:<19} fastcnn {fm:8.3f} ({ff:.3f})   torch {tm:8.3f} ({tf:.3f})   "
            f"fastcnn/torch {fm / tm:.2f}"
        )


if __name__ == "__main__":
    main()
