"""The 25 benchmark phenotypes: `use_in_benchmark` groups of the HCUP CCS definitions.

Alphabetical order, as in the paper's Table 3. These names are the label column names of
`results/cohort/stays.parquet` and of every predictions file.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

RESOURCES = resources.files("drfuse.data") / "resources"


@cache
def ccs_definitions(filename: str = "hcup_ccs_2015_definitions.yaml") -> dict:
    # The C loader, where PyYAML has it: the pure-Python one is far slower on the 15,000-code file.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with (RESOURCES / filename).open() as fh:
        return yaml.load(fh, Loader=loader)


@cache
def phenotype_names() -> tuple[str, ...]:
    return tuple(sorted(name for name, group in ccs_definitions().items() if group.get("use_in_benchmark")))


PHENOTYPES = phenotype_names()
N_PHENOTYPES = len(PHENOTYPES)
