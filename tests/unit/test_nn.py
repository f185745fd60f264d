"""Sparse layers and models: shapes, layer descriptions, gradients through the masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import cost_models
from cooptim import config
from cooptim.nn import LayerInput, SparseConv, SparseDense, build_model, capture, describe, graph_of, sparse_layers
from cooptim.nn.init import fan_in_truncated_normal
from cooptim.sparsity import NM


def test_digits_cnn_description_by_hand():
    cfg = config.load("configs/quickstart.yaml")
    model = build_model(cfg, (8, 8, 1), 10)
    layers = describe(model, (8, 8, 1))
    assert [l.name for l in layers] == ["conv1", "conv2", "conv3", "head"]
    # conv2: 8x8 output, 32 filters of 3x3x16 -> 8*8*32*144 MACs
    assert layers[1].macs == 8 * 8 * 32 * 3 * 3 * 16
    assert layers[2].in_shape == (4, 4, 32) and layers[2].out_shape == (4, 4, 64)
    assert layers[3].in_features == 2 * 2 * 64
    assert model(jnp.zeros((3, 8, 8, 1))).shape == (3, 10)


def test_resnet20_matches_published_size():
    cfg = config.from_dict({"name": "r", "model": {"name": "resnet20"},
                            "sparsity": {"default": {"method": "dense"}}})
    model = build_model(cfg, (32, 32, 3), 10)
    layers = describe(model, (32, 32, 3))
    assert len(layers) == 20  # 19 convs + the linear head: "ResNet-20"
    # He et al. 2016, Table 6: ResNet-20 has 0.27M parameters; ~41M MACs per 32x32 image.
    all_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert 0.26e6 < all_params < 0.28e6
    assert 40e6 < cost_models.total_macs(layers) < 42e6
    assert layers[-2].out_shape == (8, 8, 64)
    model.eval()
    assert model(jnp.zeros((2, 32, 32, 3))).shape == (2, 10)


def test_sparse_conv_equals_dense_conv_with_masked_weights():
    layer = SparseConv(8, 4, 3, name="c", strides=2, sparsity=NM(n=1, m=4), rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 9, 8)), jnp.float32)
    w = layer.kernel[...] * layer.mask()
    expected = jax.lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)
    assert layer(x).shape == (2, 5, 5, 4)
    # exactly one weight of every 4 input channels is used
    assert float(layer.mask().mean()) == 0.25


def test_gradient_reaches_pruned_weights_through_srste():
    layer = SparseDense(8, 2, name="d", sparsity=NM(n=2, m=4, decay=0.0), rngs=nnx.Rngs(0))
    x = jnp.ones((1, 8))
    grads = nnx.grad(lambda l: l(x).sum())(layer)
    g = np.asarray(grads["kernel"][...])
    assert np.all(g == 1.0)  # straight through: pruned weights get the dense gradient too


def test_sparse_layers_lists_every_layer_with_its_method():
    cfg = config.load("configs/quickstart.yaml")
    model = build_model(cfg, (8, 8, 1), 10)
    methods = {layer.layer_name: layer.sparsity.method for _, layer in sparse_layers(model)}
    assert methods == {"conv1": "dense", "conv2": "nm", "conv3": "nm", "head": "dense"}


def test_grouped_conv_description():
    layer = SparseConv(8, 8, 3, name="dw", groups=8, rngs=nnx.Rngs(0))
    assert layer.kernel.shape == (3, 3, 1, 8)
    with pytest.raises(ValueError, match="groups=3 must divide"):
        SparseConv(8, 8, 3, name="bad", groups=3, rngs=nnx.Rngs(0))


def test_layers_through_the_kernels_match_the_dense_path_in_value_and_gradient():
    """NM(kernel=True) runs the layer through kernels.nm (compressed N:M matmul)."""
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 6, 6, 8)), jnp.float32)
    for kernel in (True, False):
        conv = SparseConv(8, 4, 3, name="c", strides=2, sparsity=NM(n=2, m=4, kernel=kernel), rngs=nnx.Rngs(0))
        dense = SparseDense(36, 8, name="d", sparsity=NM(n=2, m=4, kernel=kernel), rngs=nnx.Rngs(1))

        def loss(conv, dense):
            return jnp.sum(dense(conv(x).reshape(2, -1)) ** 2)

        value, grads = nnx.jit(nnx.value_and_grad(loss, argnums=(0, 1)))(conv, dense)
        if kernel:
            kernel_value, kernel_grads = value, grads
    np.testing.assert_allclose(kernel_value, value, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(kernel_grads), jax.tree.leaves(grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# (model, input, classes, published MACs, published parameters incl. BatchNorm and biases)
ZOO = [
    ("resnet20", (32, 32, 3), 10, 41e6, 0.27e6),  # He et al. 2016, Sec. 4.2
    ("resnet56", (32, 32, 3), 10, 125e6, 0.85e6),
    ("resnet18", (224, 224, 3), 1000, 1.8e9, 11.7e6),  # torchvision: 1.81 GMAC, 11.69 M
    ("resnet50", (224, 224, 3), 1000, 4.1e9, 25.6e6),  # torchvision: 4.09 GMAC, 25.56 M
    ("mobilenet_v2", (224, 224, 3), 1000, 0.30e9, 3.5e6),  # Sandler et al. 2018: 300 M, 3.4-3.5 M
    ("vgg16", (224, 224, 3), 1000, 15.5e9, 138.4e6),  # Simonyan & Zisserman 2015: 138 M
]


@pytest.mark.parametrize("name, shape, classes, macs, params", ZOO)
def test_zoo_sizes_match_the_published_numbers(name, shape, classes, macs, params):
    cfg = config.from_dict({"name": "z", "model": {"name": name}, "sparsity": {"default": {"method": "dense"}}})
    model = build_model(cfg, shape, classes, abstract=True)  # shapes only: VGG-16 is never allocated
    layers = describe(model, shape)
    counted = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert abs(cost_models.total_macs(layers) / macs - 1) < 0.02
    assert abs(counted / params - 1) < 0.02


def test_nm_mask_interval_keeps_the_stored_mask_until_it_is_due():
    from cooptim.nn import refresh_masks

    layer = SparseDense(8, 2, name="d", sparsity=NM(n=1, m=4, mask_interval=10), rngs=nnx.Rngs(0))
    before = np.asarray(layer.mask())
    layer.kernel[...] = -layer.kernel[...] * jnp.asarray(1 - before) * 10 + layer.kernel[...] * jnp.asarray(before) * 0.01
    refresh_masks(layer, 3)  # not due: the forward pass still uses the old mask
    np.testing.assert_array_equal(layer.mask(), before)
    np.testing.assert_array_equal(layer.effective_kernel(), layer.kernel[...] * before)
    refresh_masks(layer, 10)  # due: recomputed from the new magnitudes
    after = np.asarray(layer.mask())
    assert not np.array_equal(after, before)
    assert (after.reshape(2, 4, 2).sum(1) == 1).all()
    with pytest.raises(Exception, match="cannot be combined with mask_interval"):
        NM(kernel=True, mask_interval=5)


@pytest.mark.parametrize("shape, scale", [((3, 3, 4, 8), 2.0), ((1, 1, 16, 24), 0.1), ((64, 10), 1.0)])
def test_the_flat_initialiser_draws_exactly_flax_variance_scaling(shape, scale):
    key = jax.random.key(7)
    ours = fan_in_truncated_normal(scale)(key, shape)
    flax_default = nnx.initializers.variance_scaling(scale, "fan_in", "truncated_normal")(key, shape, jnp.float32)
    assert ours.shape == shape
    np.testing.assert_array_equal(ours, flax_default)


# residual merges: ResNet-20 9 blocks, ResNet-18 8, ResNet-50 16, MobileNetV2 the 10 blocks of stride 1 and
# equal width (Sandler et al. 2018, Table 2), VGG-16 none
MERGES = {"resnet20": 9, "resnet56": 27, "resnet18": 8, "resnet50": 16, "mobilenet_v2": 10, "vgg16": 0}


@pytest.mark.parametrize("name", [z[0] for z in ZOO])
def test_the_zoo_runs_forward_with_a_sparsity_method_and_its_graph_is_what_it_computes(name):
    """Each model runs forward with 2:4 everywhere it divides (first conv and depthwise dense), and
    its graph (`graph_of`) has the shapes, merges and forks of that forward pass."""
    dense = {"method": "dense"}
    overrides = {"conv1" if name == "vgg16" else "stem": dense}
    if name == "mobilenet_v2":
        overrides["*depthwise"] = dense  # one input channel per group: nothing to prune N:M
    cfg = config.from_dict({"name": "z", "model": {"name": name}, "sparsity": {
        "default": {"method": "nm", "n": 2, "m": 4}, "layers": overrides}})
    shape = (32, 32, 3)
    model = build_model(cfg, shape, 7, abstract=True)
    assert any(layer.sparsity.method == "nm" for _, layer in sparse_layers(model))
    # traced, not compiled: every layer's mask and matmul runs through JAX's tracer (a wrong shape or
    # a method that cannot trace fails here); compiling 50-layer models would take most of the suite
    out, traced = nnx.eval_shape(lambda m, x: capture(m, x, LayerInput), model,
                                 jax.ShapeDtypeStruct((1, *shape), jnp.float32))
    assert out.shape == (1, 7)
    graph = graph_of(model, shape)
    # every weighted node reads and writes the shapes the traced forward pass gives its layer
    weighted = {layer.name: layer for layer in graph.weighted}
    assert sorted(weighted) == sorted(traced[LayerInput])
    for layer_name, (x, y) in traced[LayerInput].items():
        layer = weighted[layer_name]
        expected_in = (layer.in_features,) if isinstance(layer, cost_models.Dense) else layer.in_shape
        assert tuple(x.shape[1:]) == tuple(expected_in), layer_name
        assert tuple(y.shape[1:]) == cost_models.graph.out_shape(layer), layer_name
    assert graph.output == "head" and graph.shape("head") == (7,)
    merges = [l for l in graph.layers if isinstance(l, cost_models.Elementwise) and l.op == "add"]
    assert len(merges) == MERGES[name]
    # a fork (split) before every merge, and every non-weighted node of the forward pass present
    assert sum(isinstance(l, cost_models.Split) for l in graph.layers) == MERGES[name]
    assert any(isinstance(l, cost_models.GlobalPool) for l in graph.layers) != (name == "vgg16")


def test_digits_cnn_graph_lists_its_activations_and_pools_in_order():
    cfg = config.load("configs/quickstart.yaml")
    graph = graph_of(build_model(cfg, (8, 8, 1), 10, abstract=True), (8, 8, 1))
    assert graph.names == ("conv1", "conv1.relu", "conv2", "conv2.relu", "pool2", "conv3", "conv3.relu",
                           "pool3", "head")
    assert graph.node("pool3").layer.op == "avg" and graph.shape("pool3") == (2, 2, 64)
