"""Parameter models of the templates that expand into ordinary nodes: PLE and CGC, MetaHeac,
and the task columns of cross-stitch and AdaTT (language/templates.py expands them)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from .bounds import MAX_DIM, MAX_EXPERTS, MAX_LEVELS, Count, Params
from .networks import MLPParams, SoftmaxGateParams

class TemplateParams(Params):
    """What every template takes: the tasks it builds a branch for, each once."""

    tasks: tuple[str, ...] = Field(min_length=2)

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError("each task may appear only once")
        return v


class PleParams(TemplateParams):
    """A PLE template: `levels` CGC levels expanded into ordinary experts and gates."""

    levels: Annotated[int, Field(ge=1, le=MAX_LEVELS)] = 2
    specific: Count = 1
    shared: Count = 1
    expert: MLPParams
    gate: SoftmaxGateParams = SoftmaxGateParams()


class CgcParams(PleParams):
    """CGC is a single PLE level."""

    levels: Literal[1] = 1


class HeacParams(TemplateParams):
    """MetaHeac (Zhu et al. 2021): shared experts and shared critics; per task, an expert gate
    and a critic gate computed from a learnt task embedding (and the input when
    `gate_input=both`). Expands into ordinary nodes like the PLE template."""

    experts: Count = 8
    critics: Count = 4
    expert: MLPParams
    critic: MLPParams = MLPParams()
    task_dim: Annotated[int, Field(ge=1, le=MAX_DIM)] = 16
    gate_input: Literal["task", "both"] = "both"

    @field_validator("critic")
    @classmethod
    def _gated_critics_have_layers(cls, v: MLPParams) -> MLPParams:
        """HoME's feature gate sits on a critic's layers: with no widths there are none."""
        if v.feature_gate and not v.widths:
            raise ValueError("a critic's feature_gate needs hidden widths, e.g. "
                             "critic=mlp(16, feature_gate=4)")
        return v


# task columns (cross-stitch, AdaTT): the template of the task-column interactions above
class ColumnsParams(TemplateParams):
    """Task columns in `levels` levels: per level and task `specific` experts on the task's
    previous output (and `shared` experts, AdaTT-sp style), then one interaction gate per task
    (and per shared module below the last level): `mix=cross_stitch` or `mix=adatt`."""

    levels: Annotated[int, Field(ge=1, le=MAX_LEVELS)] = 2
    specific: Count = 1
    shared: Annotated[int, Field(ge=0, le=MAX_EXPERTS)] = 0
    expert: MLPParams
    mix: Literal["cross_stitch", "adatt"] = "adatt"
    own: Annotated[float, Field(ge=0, le=1)] = 0.9  # cross_stitch: alpha_kk's start
    residual: Literal["linear", "gated", "none"] = "linear"  # adatt's residual

    @field_validator("mix")
    @classmethod
    def _stitch_has_no_shared(cls, v: str, info: ValidationInfo) -> str:
        if v == "cross_stitch" and info.data.get("shared"):
            raise ValueError("cross_stitch mixes the task columns only: drop shared= "
                             "or use mix=adatt")
        return v
