"""Every diagnostic code with what it means: the one table the editor's hovers read.
docs/language.md's "Diagnostics" table says the same (tests/test_analysis.py holds them equal)."""

from __future__ import annotations

CODES: dict[str, str] = {
    'E001': 'the spec file is not UTF-8 text',
    'E100': 'syntax error not covered below (unexpected token or character, spec ends '
            'mid-statement)',
    'E101': 'missing `=` after the name',
    'E102': 'a gate without `over` and its expert groups',
    'E103': 'a task without its kind after `:` or without `from` and its tower',
    'E104': 'unclosed parenthesis or bracket',
    'E105': 'a train setting not written `key=value`',
    'E106': 'a line that does not start with a statement keyword',
    'E107': 'the expert count is not an integer in square brackets',
    'E108': 'two statements on one line',
    'E109': 'a statement nested more than 100 levels deep (a chain of more than about 100 '
            'operators)',
    'E110': 'a bad literal: an unknown escape, a control character or a line end inside a '
            'string; an integer beyond 2^63 or a number that is not finite',
    'E201': 'unknown name (with "did you mean"), or an unknown tower for a task',
    'E202': 'a name (or label) declared twice',
    'E203': 'a name of the wrong kind (e.g. a gate over a tower)',
    'E204': "unknown task (in a template's `tasks=`, a product, a transfer)",
    'E205': 'a statement that may appear once (`model`, `data`, `weighting`, `train`) appears '
            'twice',
    'E206': 'unknown label (in `label=`, `where=`, `stratify=`)',
    'E207': 'bad `monitor=` (unknown task, a metric it does not report, or `calibration`, which '
            'has no better direction), or `patience=` without `monitor=`',
    'E208': 'bad `share=`: not a sparse feature, a different `dim`, or a sharer instead of the '
            'owner',
    'E209': 'unknown kind for a statement (with "did you mean")',
    'E215': 'learning-rate schedule settings that do not fit: a setting another schedule reads, '
            '`schedule=step` without `step_size=`, `min_lr` not below `lr`, `warmup=` with '
            '`warmup_epochs=`, a warm-up as long as the run',
    'E301': 'invalid value (type or range) for a parameter; an empty expert group; bad `concat` '
            'parts',
    'E302': "unknown parameter, or an unknown metric or one that does not apply to the task's "
            'kind (the hint lists those that do)',
    'E303': 'too many positional arguments',
    'E304': 'a parameter given twice',
    'E305': 'a call given where a plain value is expected',
    'E306': "a required parameter is missing (a task's `label=`, a template's input, `group=` "
            'for `gauc`/`ndcg@k`/`recall@k`, ...)',
    'E320': 'a malformed search space: wrong arguments to '
            '`choice`/`uniform`/`loguniform`/`int_uniform`, a count that is neither a number nor'
            ' a space, one `name=` for two different spaces ([tuning.md](tuning.md))',
    'E321': "a search space's bounds not ordered, or `loguniform` from zero or below",
    'E322': 'a search space inside a search space',
    'E401': 'a cycle in the model (or among products)',
    'E402': 'a gate lists a group twice, or mixes experts of different output widths',
    'E403': 'a tower feeds no task',
    'E404': 'a task reads something that is not a tower',
    'E405': 'the spec declares no task',
    'E406': 'an expert group of several experts read without a gate',
    'E410': 'an `ait`, `calibrate` or `counterfactual` on a task with no previous step',
    'E411': 'a task twice in one chain',
    'E412': 'a chain task that is not binary, or an AIT or counterfactual step without a tower',
    'E413': "the AIT transfer MLP does not end at the next tower's width",
    'E414': 'a task receiving AIT transfers from two previous steps',
    'E415': 'a product that is not binary, or a factor that is not a binary task',
    'E416': 'a product factor not computed from any input feature',
    'E417': 'a `loss=none` task that no product or transfer uses',
    'E418': "a MetaHeac task reading another task's critic gate",
    'E419': 'the model has more parameters than the cap (2e9 by default; `mtl check --max-params'
            ' N`)',
    'E430': 'a gate keeps more experts than it mixes (`softmax(top_k=)`, `dselect(k=)`), or a '
            '`dselect` gate over fewer than two experts',
    'E434': 'a `counterfactual` (ESCM²) chain of more than two tasks',
    'E431': "a sequence's `pool=attention(query=...)` names no sparse feature",
    'E432': 'a `pepnet(by=...)` prior that is not a representation, or `pepnet` in experts',
    'E433': "a gate's `stop=` names a group the gate does not mix (or the gate is MetaHeac's)",
    'E501': 'no data source (and no `--data`)',
    'E502': 'the data file cannot be read, or `columns=` does not match it',
    'E503': 'a label column is not in the data',
    'E504': "a feature's column is not in the data",
    'E505': 'a feature reads a column a label is made of',
    'E506': 'a derived label names an unknown column',
    'E507': 'a path together with named `train=`/`val=`/`test=` files, neither, `split=` on '
            'named files, or `join=` on a streamed source',
    'E601': 'a weighting that needs several tasks (Krum: three) or shared parameters that are '
            'not there; `on=representation` with `meta=maml`',
    'E602': "(when training starts) a gradient method's solver is not installed: `pip install "
            "'mtl-dsl[solvers]'`",
    'E603': '`meta=maml` together with transfers (their label constraint would be dropped)',
    'E604': '(when training starts) `train engine=torchrec` where TorchRec cannot train the '
            'spec: not installed, an encoded sequence, a table pooled both by mean and by sum, '
            'an `embedding_optimizer` FBGEMM does not run on the device, or a setting that '
            'needs the tables\' gradient (`meta=maml`, `clip`, `embedding_l2`, a weighting '
            'reading the tables\' gradient) ([scaling.md](scaling.md#the-torchrec-engine))',
    'E720': '`mtl compile` on a spec holding a search space: search it with `mtl tune`',
    'E721': '`mtl tune` on a spec without a search space, or into a folder holding another '
            "spec's tune",
    'E722': "`mtl tune`: a trial's objective cannot be computed on the validation rows (the "
            'trial fails, the search goes on)',
    'E701': 'a data error while reading or encoding (names the file, the column and the row)',
    'E702': 'training diverged: a non-finite loss, or one 1000 times the untrained loss for '
            'three logged intervals',
    'E703': '`mtl predict`/`mtl eval`: the checkpoint is not a file, unreadable, not an mtl-dsl '
            'checkpoint, of another format, or holds Python objects',
    'E704': "`mtl predict`/`mtl eval`: the spec describes another model than the checkpoint's "
            '(`--force` to use it anyway)',
    'E705': '`mtl compile --train --resume`: the run cannot be resumed (no saved state, still '
            'running, another spec, weighting, train setting, seed or data, or a stream stopped '
            'mid-epoch under another process count)',
    'E706': 'distributed training: another rank failed or did not answer within '
            '`MTL_DIST_TIMEOUT` seconds, the ranks prepared different data, or a streamed batch '
            'is smaller than the process count ([scaling.md](scaling.md))',
    'E707': '(when training starts) the embedding tables with their optimizer state exceed the '
            'memory budget of a process (`train memory=`) and the run has too few processes to '
            'shard them, or they take dense gradients; it says how many processes they need',
    'W001': 'a label no task uses',
    'W002': 'a feature no task uses',
    'W003': 'an expert group or gate that feeds no task',
    'W004': "the weighting ignores the tasks' `weight=`",
    'W005': "a gradient method's solver is not installed (training would stop with E602)",
    'W006': '`stratify=` on a streamed split (ignored)',
    'W007': '`mtl check`: a derived label matches none of the first rows it sampled from a file '
            '(the rest of the file may hold matches; when the sample is the whole file this is '
            'E701)',
    'W008': 'embedding tables of more than 1,000,000 rows take a full gradient every step '
            '(MAML, a gradient method with `embeddings=true`, GradNorm on a table)',
}
