"""One worker process of a stage split over `sampling.processes` (started by xlpo.icr.workers):
`python -m xlpo.icr.worker SPEC` loads the run's models once, on first use, and writes the part file
of each unit SPEC gives it, exactly as the driver would have written it.
"""

from __future__ import annotations

import sys

from xlpo.errors import UserError
from xlpo.fileio import read_json, write_jsonl
from xlpo.icr.config import ICRConfig
from xlpo.icr.pipeline import ICRRun
from xlpo.icr.policies import Models
from xlpo.icr.rundir import IterationDir, part_file
from xlpo.model_spec import ModelSpec


def main(spec_path: str) -> None:
    """One worker: load the run's models (once, lazily) and write the part file of each of its units."""
    spec = read_json(spec_path)
    config = ICRConfig.model_validate(spec["config"])
    run = ICRRun(config, log=lambda line: None)
    it = IterationDir(run.run_dir, spec["iteration"])
    models = Models(config, ModelSpec(*spec["policy"]), ModelSpec(*spec["reference"]))
    work, units = run.stage_work(spec["stage"], it, models, run.read_inputs())
    try:
        for lang, k in spec["units"]:
            write_jsonl(part_file(it, spec["stage"], lang, k), work(lang, k, units[lang][k]))
    finally:
        models.close()


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
