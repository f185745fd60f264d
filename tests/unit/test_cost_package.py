"""cost_models as a library: importable alone, reference networks, batched evaluation."""

import subprocess
import sys

import jax
import numpy as np

import cost_models as cm


def test_imports_without_flax_or_cooptim():
    code = ("import sys, cost_models; bad = [m for m in ('flax', 'cooptim', 'kernels') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_resnet18_matches_published_size():
    layers = cm.networks.resnet18().layers
    assert abs(cm.total_macs(layers) / 1.814e9 - 1) < 0.01  # He et al. 2016: 1.8 GFLOPs (MACs)
    assert abs(cm.total_params(layers) / 11.69e6 - 1) < 0.01  # torchvision: 11.69 M incl. BN, fc bias
    assert sum(isinstance(l, cm.Conv2D) for l in layers) == 20


def test_vmap_equals_one_by_one():
    net = cm.Network.build(cm.networks.resnet18())
    device = cm.get_device("u250")
    rng = np.random.default_rng(1)
    options = cm.dse.factor_options(net)
    n = 8
    foldings = cm.Folding(*(np.stack([rng.choice(o[f], size=n) for o in options], axis=1).astype(np.int32)
                            for f in cm.Folding._fields))
    densities = cm.Density(rng.uniform(0.1, 1, (n, len(net))).astype(np.float32),
                           np.ones((n, len(net)), np.float32))
    batched = jax.jit(jax.vmap(lambda f, d: cm.evaluate(net, f, d, device).throughput))(foldings, densities)
    for i in range(n):
        one = cm.evaluate(net, cm.Folding(*(x[i] for x in foldings)),
                          cm.Density(densities.weight[i], densities.activation[i]), device)
        np.testing.assert_allclose(batched[i], one.throughput, rtol=1e-6)
