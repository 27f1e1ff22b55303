"""Adapt your own classifier on your own unlabeled test stream with ``entropykit.tta``.

The ten lines that matter are in ``adapt``: wrap the model, feed the stream, read the predictions.
To make the example self-contained it trains a small BatchNorm MLP on scikit-learn's digits and
streams the test digits with heavy Gaussian noise; swap in your model and your batches.

    python examples/tta_adapt_stream.py                  # TENT with the drift guard
    python examples/tta_adapt_stream.py --method eta     # any key of entropykit.tta.METHODS
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from entropykit import tta


def adapt(model: nn.Module, stream: Iterable[Tensor], method: str = "tent") -> Tensor:
    """Adapt ``model`` (in place) on the batches of ``stream``; the predicted classes, in order."""
    adapter = tta.make(method, model, optimizer="adam", lr=1e-3, reset_agreement=0.95)  # + drift guard
    print(adapter.selection)  # what trains: the affine parameters of every normalisation layer
    predictions = [adapter(batch).argmax(-1) for batch in stream]  # adapts on every batch
    adapter.reset()  # back to the source state, bit for bit
    return torch.cat(predictions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="tent", choices=sorted(tta.METHODS))
    args = ap.parse_args()
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    d = load_digits()
    x, y = torch.tensor(d.data, dtype=torch.float32) / 16.0, torch.tensor(d.target)
    model = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):  # the "source" model: clean digits 0..999
        opt.zero_grad()
        F.cross_entropy(model(x[:1000]), y[:1000]).backward()
        opt.step()
    model.eval()
    x_test = (x[1000:] + 0.6 * torch.randn_like(x[1000:])).clamp(0, 1)  # shifted test data
    y_test = y[1000:]
    with torch.no_grad():
        source = float((model(x_test).argmax(-1) == y_test).float().mean())
    adapted = float((adapt(model, x_test.split(64), args.method) == y_test).float().mean())
    print(f"accuracy on the noisy stream: source {source:.3f}, {args.method} {adapted:.3f}")


if __name__ == "__main__":
    main()
