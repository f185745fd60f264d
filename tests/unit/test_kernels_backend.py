"""Where the kernels run: the choice per backend, and the GPU's limits measured on an H200."""

import jax
import pytest

from kernels import backend


@pytest.mark.parametrize("platform, auto", [("cpu", "xla"), ("gpu", "xla"), ("tpu", "pallas")])
def test_auto_picks_what_lowers_on_each_backend(monkeypatch, platform, auto):
    monkeypatch.setattr(jax, "default_backend", lambda: platform)
    assert backend.resolve(None) == auto
    assert backend.resolve(None, scalar_prefetch=True) == auto
    assert backend.resolve("xla") == "xla"


def test_scalar_prefetch_kernels_asked_for_on_gpu_say_why(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(backend.KernelInputError, match="scalar prefetch.*use impl='xla'"):
        backend.resolve("pallas", scalar_prefetch=True)
    assert backend.resolve("pallas") == "pallas"  # the N:M kernels: the user's explicit choice


def test_integer_kernels_refuse_the_gpu_rather_than_answer_wrongly(monkeypatch):
    import jax.numpy as jnp

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    x = jnp.zeros((2, 4), jnp.int8)
    with pytest.raises(backend.KernelInputError, match="not bit-exact on GPU.*JAX_PLATFORMS=cpu"):
        backend.integer_mode(x, x)
    assert backend.integer_mode(x.astype(jnp.float32), x.astype(jnp.float32)) is False  # float runs
