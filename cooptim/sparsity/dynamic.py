"""`dynamic`: DPACS's per-input spatial and channel skipping (Gao et al., ASPLOS 2023).

Weights are dense; what is pruned depends on the input. Each conv layer with this method owns two
small gating heads that read the layer's *input*:

- a channel gate: global average pool of the input, then a linear map to one logit per group of
  `channel_group` output channels. Because it reads the input, not the output, the channel mask is
  known before the layer runs, so the accelerator never loads the pruned groups' weights (DPACS's
  "channel mask from the block input", Sec. 4.2);
- a spatial gate: a one-output conv with the layer's own window, stride and padding, giving one
  logit per output position (DPACS's spatial mask, Sec. 4.1).

A gate is on where its logit is positive. Training uses the straight-through estimator: the
forward pass uses the hard 0/1 gate, the backward pass the gradient of sigmoid(logit / temperature)
(DPACS trains its gates with Gumbel-softmax; the deterministic STE keeps training a function of
(seed, step) only). The output at an inactive position or channel is zero before the layer's bias
and normalisation, as on the accelerator, where the skipped outputs take the folded bias.

The density the cost model reads is the expected fraction of active (position, channel) pairs,
mean over the batch of mean(spatial) x mean(channel). A sparsity-target loss,
`loss_weight * (density - target)^2` per layer, drives each layer's density to `target` (DPACS's
sparsity loss); the layer taps its gates (`cooptim.nn.GateTap`) for the trainer and the reports.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

import jax
import jax.numpy as jnp
from pydantic import Field, StrictBool, StrictInt, model_validator
from pydantic.dataclasses import dataclass

from cooptim.sparsity._config import STRICT
from cooptim.sparsity.base import PatternCheck, SparsityError, SparsityMethod, WeightLayout
from cost_models.sparsity import DynamicPattern


def straight_through_gate(logits: jax.Array, temperature: float) -> jax.Array:
    """Hard gate (logits > 0) as float32 in the forward pass; d/dlogits of
    sigmoid(logits / temperature) in the backward pass."""
    soft = jax.nn.sigmoid(logits / temperature)
    hard = (logits > 0).astype(soft.dtype)
    return soft + jax.lax.stop_gradient(hard - soft)


@dataclass(frozen=True, config=STRICT)
class Dynamic(SparsityMethod):
    """Args:
      target: the density (fraction of active position x channel pairs) the sparsity loss aims at.
      loss_weight: weight of the per-layer (density - target)^2 term in the training loss.
      spatial, channel: which gates to use.
      channel_group: output channels that share one channel-gate bit (divides the layer's outputs).
      temperature: of the sigmoid whose gradient the straight-through gate uses.
      gate_bias: initial gate logit bias; positive starts with every gate on.
      kernel: compute the layer through `kernels.skip.skip_matmul` (only active positions x groups
        are computed: Pallas on GPU, XLA on CPU); same values, the gradient of the masked product.
    """

    method: Literal["dynamic"] = "dynamic"
    target: Annotated[float, Field(gt=0.0, le=1.0, strict=True)] = 0.5
    loss_weight: Annotated[float, Field(ge=0.0, strict=True)] = 1.0
    spatial: StrictBool = True
    channel: StrictBool = True
    channel_group: Annotated[StrictInt, Field(ge=1)] = 1
    temperature: Annotated[float, Field(gt=0.0, strict=True)] = 1.0
    gate_bias: Annotated[float, Field(strict=True)] = 2.0
    kernel: StrictBool = False

    @model_validator(mode="after")
    def _some_gate(self):
        if not (self.spatial or self.channel):
            raise ValueError("dynamic pruning needs at least one of spatial and channel gates")
        return self

    gates = True  # the layer builds gating heads for this method
    learns_density = True  # the learned density is the layer's gate target

    def validate(self, layout: WeightLayout, layer: str) -> None:
        if len(layout.shape) != 4:
            raise SparsityError(f"layer {layer!r}: dynamic gating needs a conv layer (weight shape "
                                f"{layout.shape}); make it dense with a per-layer override")
        outputs = layout.shape[layout.out_axis]
        if outputs % self.channel_group:
            raise SparsityError(f"layer {layer!r}: channel_group={self.channel_group} does not divide "
                                f"its {outputs} output channels (weight shape {layout.shape})")

    # The weights themselves are never pruned.
    def mask(self, weight, layout: WeightLayout, progress=1.0):
        del layout, progress
        return jnp.ones_like(weight)

    def apply(self, weight, layout: WeightLayout, progress=1.0):
        del layout, progress
        return weight

    def density(self, weight, layout: WeightLayout, progress=1.0):
        """Weight density (1: the input-dependent density comes from the gate taps, `cooptim.nn.GateTap`)."""
        del weight, layout, progress
        return jnp.float32(1.0)

    def target_loss(self, density: jax.Array, target=None) -> jax.Array:
        """loss_weight * (density - target)^2; `target` None: the configured one (a learned
        per-layer target under co-optimization)."""
        target = self.target if target is None else target
        return self.loss_weight * (density - target) ** 2

    def nominal_density(self) -> float:
        return self.target

    def at_density(self, density: float) -> "Dynamic":
        return dataclasses.replace(self, target=float(density))

    def mask_at(self, weight, layout: WeightLayout, density, progress=1.0):
        del density
        return self.mask(weight, layout, progress)

    def pattern(self) -> DynamicPattern:
        return DynamicPattern(spatial=self.spatial, channel=self.channel, channel_group=self.channel_group)

    def check(self, mask, layout: WeightLayout) -> PatternCheck:
        dense = bool(jnp.all(jnp.asarray(mask) == 1))
        return PatternCheck(dense, "dynamic: weights dense, masks per input" if dense
                            else "dynamic: the weight mask should be all ones")
