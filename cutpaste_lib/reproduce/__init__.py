"""Reproduce the paper's tables: a category x variant x seed grid, one results CSV, Markdown tables.

Each grid cell is a *job*: train one model (:func:`cutpaste_lib.train.train`), fit the Gaussian
density on its clean train embeddings, score the test images (image AUROC) and, for patch models,
localize (pixel AUROC, AUPRO). Every finished job adds one row to ``results.csv``; the file is
rewritten whole to a temporary name, fsync-ed and renamed under a lock, so a crash or a kill at any
moment leaves the previous complete file. A rerun skips the jobs already in the CSV (resume).

Scale-out: one worker process per visible GPU on a multi-GPU machine; across machines,
``shard=(i, n)`` runs a disjoint, stable part of the grid (a job belongs to shard
``sha256(key) mod n``, so adding seeds never moves a finished job to another shard) and
:func:`merge_results` combines the shards' CSVs.

The job is a parameter (``job=``): the default :func:`train_evaluate_job` is the real pipeline; tests
pass a fast deterministic fake. A job receives a :class:`JobSpec` and returns a dict with
``image_auroc`` (fraction in [0, 1]), optionally ``pixel_auroc``/``aupro`` and ``scores`` (path of
the per-image score file written with :func:`save_scores`, needed for the seed ensemble).

Choices where the paper is silent (repeated in the tables' header):
    * The *Ensemble* column of Table 1 is the ensemble of the seeds' 3-way models (our reading of
      the paper's column). Each model's test scores are standardised with the mean and standard
      deviation of its own *training* scores (never test statistics), then averaged. Those
      training scores are cross-fitted (each half of the train images scored by a Gaussian fitted
      on the other half): in-sample scores of a Gaussian fitted on N < 512 images are several
      times too small, by an amount that differs between models.
    * Group averages (texture / object / all) are the mean of the per-category means; their
      standard error is ``sqrt(sum se_c^2) / C`` (categories are trained independently).
    * The paper's numbers are shown only for MVTec AD data: on synthetic data they are "—".

The package, in the order the data flows (each module named for its concept):
    * :mod:`.grid`: :class:`GridSettings`, :class:`Job`, :class:`JobSpec`, :func:`make_grid`, shards.
    * :mod:`.data_kind`: the dataset's categories, its test splits, and what kind of data it is.
    * :mod:`.job`: :func:`train_evaluate_job`, the real job of one grid cell.
    * :mod:`.scores`: per-image score files and the seed ensemble built from them.
    * :mod:`.row`: one finished job's results row (metrics, settings, commit, device), and
      :func:`provenance`, those columns read back for a table.
    * :mod:`.results`: the results CSV (columns, typed reading, locked crash-safe appends).
    * :mod:`.merge`: combining the CSVs of shards.
    * :mod:`.workers`: running jobs in this process or in one worker process per device.
    * :mod:`.runner`: :func:`run_grid`, the whole run with resume.
    * :mod:`.stats`: table cells (mean ± standard error over seeds, group averages).
    * :mod:`.tables`: the Markdown report (:func:`format_tables`, :func:`write_tables`).

Example:
    >>> from cutpaste_lib import reproduce
    >>> jobs = reproduce.make_grid(["bottle", "screw"], ["cutpaste", "3way"], [0, 1])
    >>> len(jobs), jobs[0].key
    (8, 'bottle/cutpaste/image/seed0')
    >>> a, b = reproduce.select_shard(jobs, 0, 2), reproduce.select_shard(jobs, 1, 2)
    >>> sorted(j.key for j in a + b) == sorted(j.key for j in jobs)
    True
"""

from __future__ import annotations

from cutpaste_lib.reproduce.data_kind import (
    DataKind,
    available_categories,
    category_kind,
    check_test_splits,
    data_kind,
)
from cutpaste_lib.reproduce.grid import (
    MODES,
    TABLE1_VARIANTS,
    VARIANT_TITLES,
    VARIANTS,
    GridSettings,
    Job,
    JobFn,
    JobSpec,
    make_grid,
    parse_shard,
    select_shard,
    shard_of,
)
from cutpaste_lib.reproduce.job import (
    train_evaluate_job,
)
from cutpaste_lib.reproduce.merge import (
    merge_results,
)
from cutpaste_lib.reproduce.results import (
    COLUMNS,
    INFO_COLUMNS,
    KEY_COLUMNS,
    RESULT_COLUMNS,
    SETTING_COLUMNS,
    append_result,
    check_consistent,
    read_results,
    row_key,
)
from cutpaste_lib.reproduce.row import (
    device_name,
    git_commit,
    provenance,
)
from cutpaste_lib.reproduce.runner import (
    GridResult,
    results_csv_path,
    run_grid,
)
from cutpaste_lib.reproduce.scores import (
    SCORE_KEYS,
    ensemble_auroc,
    ensembles,
    load_scores,
    save_scores,
    standardized_ensemble,
)
from cutpaste_lib.reproduce.stats import (
    Stat,
    group_average,
    summarize,
)
from cutpaste_lib.reproduce.tables import (
    format_tables,
    write_tables,
)
from cutpaste_lib.reproduce.workers import (
    plan_workers,
)

__all__ = [
    "MODES",
    "TABLE1_VARIANTS",
    "VARIANTS",
    "VARIANT_TITLES",
    "GridSettings",
    "Job",
    "JobFn",
    "JobSpec",
    "make_grid",
    "parse_shard",
    "select_shard",
    "shard_of",
    "DataKind",
    "available_categories",
    "category_kind",
    "check_test_splits",
    "data_kind",
    "train_evaluate_job",
    "SCORE_KEYS",
    "ensemble_auroc",
    "ensembles",
    "load_scores",
    "save_scores",
    "standardized_ensemble",
    "device_name",
    "git_commit",
    "COLUMNS",
    "INFO_COLUMNS",
    "KEY_COLUMNS",
    "RESULT_COLUMNS",
    "SETTING_COLUMNS",
    "append_result",
    "check_consistent",
    "read_results",
    "row_key",
    "merge_results",
    "plan_workers",
    "GridResult",
    "results_csv_path",
    "run_grid",
    "Stat",
    "group_average",
    "summarize",
    "format_tables",
    "provenance",
    "write_tables",
]
