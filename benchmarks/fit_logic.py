"""Fits the dataflow model's LUT and FF coefficients to fpgaConvNet's own predictions.

    python benchmarks/fit_logic.py [tests/fixtures/fpgaconvnet_peer.json]

For the conv and fc records of the peer fixture (fpgaconvnet-model 0.1.4.2, hls backend; see
benchmarks/peer_fpgaconvnet.py), a non-negative least-squares fit of each engine's LUT and FF to
`cost_models.dataflow.logic_features`, by relative error (each row divided by the peer's figure).
Prints the coefficients (the defaults of `ResourceParams.lut_coefficients` / `ff_coefficients`)
and the fit's relative errors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from cost_models import dataflow as df
from cost_models import peer

FIXTURE = Path(__file__).parents[1] / "tests" / "fixtures" / "fpgaconvnet_peer.json"


def fit(fixture: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"LUT" | "FF": (coefficients, relative errors on the fitted records)}."""
    records, net, folding = peer.fixture_network(fixture)
    t = df.tables(net)
    compute = np.flatnonzero((t["kind"] == df.CONV) | (t["kind"] == df.DENSE_LAYER))
    features = df.logic_features(t, *(np.asarray(f, np.float64) for f in folding), 1.0, xp=np)[:, compute].T
    out = {}
    for metric in ("LUT", "FF"):
        target = np.array([float(records[i]["peer"][metric]) for i in compute])
        coefficients, _ = nnls(features / target[:, None], np.ones(len(target)))
        coefficients = np.round(coefficients, 3)
        out[metric] = coefficients, np.abs(features @ coefficients - target) / target
    return out


def main(fixture: Path = FIXTURE) -> None:
    for metric, (coefficients, errors) in fit(fixture).items():
        print(f"{metric.lower()}_coefficients = {tuple(float(c) for c in coefficients)}")
        print(f"  {len(errors)} records; relative error median {np.median(errors):.3f}, "
              f"90th percentile {np.percentile(errors, 90):.3f}, max {errors.max():.3f}")
    print("features:", ", ".join(df.LOGIC_FEATURES))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURE)
