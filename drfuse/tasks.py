"""The prediction tasks: what a model predicts, and where a task's runs and results live.

- `phenotyping`: the 25 benchmark phenotypes of the stay's admission (`drfuse.phenotypes`), every
  stay of the cohort; DrFuse's task. Its runs keep the project's original layout under
  `results_dir`: `train/`, `predict/`, `warmup/`, `eval/`.
- `mortality`: in-hospital mortality (IHM, MedFuse's second task), one label, for the cohort's
  stays that last at least the input window (`cohort/mortality.parquet`, `drfuse.data.mortality`).
  Its runs live under `results_dir/mortality/` (`mortality/train/`, `mortality/predict/`, ...), so
  the two tasks' files never collide and neither task's jobs depend on the other's.

A model's output size is its task's number of labels (`n_outputs`); the prediction files name
their labels (`y:<label>`, `p:<label>`), so the evaluation reads either task's files alike.
"""

from __future__ import annotations

from pathlib import Path

from drfuse.errors import UserError
from drfuse.phenotypes import PHENOTYPES

PHENOTYPING, MORTALITY = "phenotyping", "mortality"
TASKS = (PHENOTYPING, MORTALITY)
MORTALITY_LABEL = "in_hospital_mortality"
# the IHM cohort and its label, beside the phenotyping cohort's files (rule mortality_cohort)
MORTALITY_FILE = Path("cohort") / "mortality.parquet"


def check(task: str) -> str:
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}: expected one of {', '.join(TASKS)} (config experiments.tasks)")
    return task


def labels(task: str) -> tuple[str, ...]:
    """The labels a model of `task` predicts, in output order."""
    return PHENOTYPES if check(task) == PHENOTYPING else (MORTALITY_LABEL,)


def n_outputs(task: str) -> int:
    return len(labels(task))


def task_dir(results_dir: Path, task: str) -> Path:
    """Where a task's training runs, predictions, warm-ups and bootstrap live: `results_dir` itself
    for phenotyping (the original layout), `results_dir/mortality` for mortality."""
    return Path(results_dir) if check(task) == PHENOTYPING else Path(results_dir) / task
