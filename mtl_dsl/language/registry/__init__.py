"""The one registry of facts the language knows: every kind a spec may call, by role, with its
parameter model (bounds, defaults, documentation), the metrics and their directions, the
weighting methods' facts, the sizes' bounds and the expert diagnostics' thresholds.

One module per role (docs/internals.md, "The registry"): `bounds` (sizes and the base of every
parameter model), `networks` (MLPs, gates), `features`, `tasks` (and transfers), `templates`,
`weighting`, `data`, `training`, `metrics`, `experts` (diagnostic thresholds) and `kinds` (the
table role -> name -> kind). Everything is importable from this package, as `reg.NAME`; nothing
here imports torch, and no entry names an implementation: the model and the training own
their tables, keyed by the same kind names.
"""

from __future__ import annotations

from .bounds import (MAX_WIDTH, MAX_LAYERS, MAX_DIM, MAX_TABLE, MAX_EXPERTS, MAX_COLUMNS,
                     MAX_CLASSES, MAX_SEQUENCE, MAX_LEVELS, MAX_ROWS, MAX_VALUES, MAX_STEPS,
                     MAX_BATCH, MAX_SEED, MAX_FACTOR, MAX_PARAMS, Width, Count, Steps, Seed,
                     PositiveReal, NonNegativeReal, Params)  # noqa: F401
from .networks import (Activation, Dropout, MLPParams, PepnetParams, LinearParams,
                       SoftmaxGateParams, DSelectGateParams, StitchGateParams, FusionGateParams,
                       GATE_PARAMS)  # noqa: F401
from .features import (DEFAULT_EMBEDDING_DIM, SparseParams, AttentionPoolParams, SequenceParams,
                       DenseParams, ConcatParams)  # noqa: F401
from .tasks import (Metric, TaskParams, BinaryTask, RegressionTask, MulticlassTask, AitParams,
                    CalibrateParams, CounterfactualParams)  # noqa: F401
from .templates import (TemplateParams, PleParams, CgcParams, HeacParams,
                        ColumnsParams)  # noqa: F401
from .weighting import (WeightingParams, Unit, Positive, NonNegative, QP, SOLVER_EXTRA,
                        FixedWeighting, UncertaintyWeighting, GradNormWeighting, DwaWeighting,
                        RlwWeighting, GlsWeighting, ImtlLWeighting, FamoWeighting, StchWeighting,
                        GradientWeighting, UpgradWeighting, DualprojWeighting, MgdaWeighting,
                        PcgradWeighting, GradvacWeighting, CagradWeighting, ImtlGWeighting,
                        NashMtlWeighting, AlignedMtlWeighting, GraddropWeighting, ConfigWeighting,
                        FairgradWeighting, RgwWeighting, ExcessMtlWeighting, PcdWeighting,
                        SdmgradWeighting, ModoWeighting, KrumWeighting, TrimmedMeanWeighting,
                        SMOOTHABLE, CrmogmWeighting, DbmtlWeighting, METHODS,
                        WEIGHTINGS)  # noqa: F401
from .data import (Values, REAL, BINARY, IDS, TEXT, SyntheticSource, SyntheticCorrelated,
                   FUNNEL_LABELS, SyntheticFunnel, Fraction, CsvOptions, JoinTable, FileSource,
                   CsvSource, ParquetSource)  # noqa: F401
from .training import (TrainParams, DenseOptimizer, EmbeddingOptimizer,  # noqa: F401
                       DENSE_OPTIMIZER_SLOTS, MAX_MEMORY_GB, DENSE_GRADIENT_ROWS, RowOptimizer,
                       ROW_OPTIMIZERS)
from .metrics import (MetricFact, METRICS, MAX_TOP_K, metric_family, top_k, TASK_METRICS,
                      UNIT_INTERVAL_METRICS, higher_is_better)  # noqa: F401
from .experts import (NEGLIGIBLE_SHARE, COLLAPSE_WEIGHT, COLLAPSE_ROWS, IDENTICAL_COSINE,
                      EXPERT_SAMPLE_ROWS)  # noqa: F401
from .kinds import (BlockKind, REGISTRY, kinds, kind_of)  # noqa: F401
