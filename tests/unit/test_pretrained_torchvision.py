"""The live check, where torchvision is installed (CI has not: see the fixtures' make_fixtures.py):
torchvision's own full-size models with random weights, saved as .pth, loaded through torch."""

import jax.numpy as jnp
import numpy as np
import pytest

from cooptim import config, nn, pretrained

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

CASES = {"resnet18": 64, "resnet50": 64, "mobilenet_v2": 64, "vgg16": 224}  # input side


@pytest.mark.parametrize("name", list(CASES))
def test_torchvisions_models_load_from_pth_with_their_logits(tmp_path, name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None, num_classes=10)
    for m in reference.modules():  # batch-norm statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    reference.eval()
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    side = CASES[name]
    x = np.random.default_rng(0).normal(size=(2, side, side, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference.double()(torch.from_numpy(x).permute(0, 3, 1, 2).double()).numpy()
    cfg = config.from_dict({"name": "p", "model": {"name": name}, "sparsity": {"default": {"method": "dense"}}})
    model = nn.build_model(cfg, (side, side, 3), 10)
    pretrained.load_torchvision(model, pretrained.read_state_dict(path), source=str(path), model_name=name)
    model.eval()
    got = np.asarray(model(jnp.asarray(x)))
    np.testing.assert_allclose(got, expected, atol=1e-4 * max(1.0, np.abs(expected).max()), rtol=0)
