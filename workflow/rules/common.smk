# Shared definitions: the resolved configuration, paths, and the experiment list.
import json
import sys
import hashlib
from pathlib import Path

from drfuse import config as drfuse_config
from drfuse.experiments import experiment_runs, prediction_targets

CFG = drfuse_config.resolve(config)
R = Path(CFG["data"]["results_dir"])
BUILTIN = drfuse_config.uses_builtin_data(CFG)

# The CLI reads the resolved configuration from a file; its name is a hash of its content, so a
# changed setting gives a new file while the rules' params decide which stages re-run.
_cfg_text = json.dumps(CFG, sort_keys=True, indent=1)
CONFIG_FILE = R / "config" / f"resolved-{hashlib.sha256(_cfg_text.encode()).hexdigest()[:12]}.json"
CONFIG_FILE.parent.mkdir(parents=True, exist_ok=True)
if not CONFIG_FILE.exists():
    CONFIG_FILE.write_text(_cfg_text)

if BUILTIN:
    MIMIC_IV_DIR = R / "synth" / "mimic-iv"
    MIMIC_CXR_DIR = R / "synth" / "mimic-cxr-jpg"
else:
    MIMIC_IV_DIR = Path(CFG["data"]["mimic_iv_dir"])
    MIMIC_CXR_DIR = Path(CFG["data"]["mimic_cxr_dir"])

# Rules run the package with the Python that runs Snakemake (a venv need not be activated);
# under `--sdm conda` they use the rule's environment instead.
_in_conda = any(m.name == "CONDA" for m in workflow.deployment_settings.deployment_method)
PYTHON = "python" if _in_conda else sys.executable
DRFUSE = f"{PYTHON} -m drfuse --config {CONFIG_FILE}"

RUNS = experiment_runs(CFG)                       # (model, train_set, seed) to train
PREDICTIONS = [str(R / p) for p in prediction_targets(CFG)]

FINAL_OUTPUTS = [
    str(R / "tables" / f"table{i}.{ext}") for i in (1, 2, 3, 4) for ext in ("csv", "md", "tex")
] + [str(R / "figures" / f) for f in ("tsne.png", "attention.png", "pr_curves.png")]
FINAL_OUTPUTS += [str(R / "tables" / f"{name}.{ext}") for name in ("seeds", "paired") for ext in ("csv", "md")]

# The planted-structure check needs an answer key (the built-in data's own, or data.answer_key)
# and the runs trained and tested on the matched subset.
if CFG["data"].get("answer_key"):
    ANSWER_KEY = Path(CFG["data"]["answer_key"])
elif BUILTIN:
    ANSWER_KEY = R / "synth" / "answer_key" / "label_groups.csv"
else:
    ANSWER_KEY = None
PLANTED_PREDICTIONS = [p for p in PREDICTIONS if Path(p).parts[-3] == "matched" and Path(p).stem == "matched"]
PLANTED = ANSWER_KEY is not None and bool(PLANTED_PREDICTIONS)
if PLANTED:
    FINAL_OUTPUTS += [str(R / "tables" / "planted.csv"), str(R / "tables" / "planted.md"), str(R / "figures" / "planted.png")]

# The software environment of every rule under `--sdm conda` (path relative to workflow/rules/).
CONDA_ENV = "../../envs/drfuse.yaml"
