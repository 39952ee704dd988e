"""The bounds of every size a spec can set, and the base every parameter model shares.

Generous for real models, small enough that whatever `mtl check` accepts compiles and that
the parameter estimate (language/size.py) and its cap (MAX_PARAMS, `mtl check --max-params`)
see every tensor (docs/language.md, "Bounds")."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_WIDTH = 65_536  # a layer's width; also AIT's k
MAX_LAYERS = 64  # widths in one mlp(...)
MAX_DIM = 4_096  # an embedding's dim, a task embedding's
MAX_TABLE = 1_000_000_000  # rows of an embedding table (vocab=N, hash=N)
MAX_EXPERTS = 1_024  # experts in one group, critics, a template's experts per branch
MAX_COLUMNS = 100_000  # columns of one dense feature
MAX_CLASSES = 100_000
MAX_SEQUENCE = 10_000  # ids kept per row of a sequence feature
MAX_LEVELS = 32  # PLE levels
MAX_ROWS = 100_000_000  # rows a synthetic source generates
MAX_VALUES = 500_000_000  # rows x columns a synthetic source generates (2 GB of float32)
MAX_STEPS = 1_000_000  # epochs, patience, warm-up epochs, solver iterations
MAX_BATCH = 1_048_576
MAX_SEED = 2 ** 32 - 1  # numpy's seeds are 32-bit
MAX_FACTOR = 1e6  # any positive real (a weight, a temperature, a learning rate)
MAX_PARAMS = 2_000_000_000  # parameters `mtl check` accepts by default (E419)

Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Count = Annotated[int, Field(ge=1, le=MAX_EXPERTS)]
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
PositiveReal = Annotated[float, Field(gt=0, le=MAX_FACTOR)]
NonNegativeReal = Annotated[float, Field(ge=0, le=MAX_FACTOR)]


class Params(BaseModel):
    """Base of every parameter model: frozen, and unknown keywords are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
