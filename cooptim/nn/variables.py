"""What a sparse layer holds beside its weight: the structure options (`LayerSparsity`) and the
variable types they add, so that reports, the train step and checkpoints can filter on them."""

from __future__ import annotations

import dataclasses

from flax import nnx

from cooptim.sparsity import Dense as DenseMethod
from cooptim.sparsity import SparsityMethod


@dataclasses.dataclass(frozen=True)
class LayerSparsity:
    """A layer's method and the options that add variables to it.

    density_scale: learn the layer's density (co-optimization, `objective.learn_density`): a
      `DensityLogit` with density = sigmoid(density_scale x logit), so Adam's step on the logit is
      ~density_scale x lr.
    input_threshold: give the layer an `InputThreshold` (HASS's search thresholds its inputs).
    """

    method: SparsityMethod = DenseMethod()
    density_scale: float | None = None
    input_threshold: bool = False



class Progress(nnx.Variable):
    """Fraction of training done, in [0, 1]: methods with gradual pruning schedule their sparsity by
    it. The train step sets it from its argument (`set_progress`); it is 1 after training."""


class DensityLogit(nnx.Param):
    """A pruned layer's trained density variable (co-optimization, `objective.learn_density`):
    the layer's density is sigmoid(scale x value). Trained with the weights."""


class StoredMask(nnx.Variable):
    """A mask kept between recomputations (methods with `mask_interval` > 1). Not trained."""


class InputThreshold(nnx.Variable):
    """A searchable threshold on a layer's input (HASS): inputs with |x| <= threshold are zeroed;
    with sharpness > 0 the keep-mask is sigmoid(sharpness (|x| - threshold) / rms(x)). Not trained."""
