"""Train one configuration: `python train.py [experiment=NAME] [key=value ...]`; a sweep with `-m`.

With no arguments: AFNO inpainting on the photographs embedded in scikit-image (the demo).
See README.md for the paper experiments and configs/ for every option.
"""

import sys

import hydra
from omegaconf import DictConfig

from afno_repro.config import (ignored_output_dir, missing_paper_row, override_syntax_message,  # also registers the
                               unknown_choice, unknown_key, without_row_sweep)  # configs' resolvers
from afno_repro.console import quiet_third_party_noise


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def cli(cfg: DictConfig) -> None:
    quiet_third_party_noise()  # here, not at import: a Slurm job runs this function, not the module
    main(cfg)  # afno_repro.train's, imported below once the checks pass


if __name__ == "__main__":
    # Checked before Hydra composes: its error for a missing row would not list the table's rows, its
    # syntax errors name its parser's states rather than the fix, and a misspelt key gets no closest key.
    arguments = sys.argv[1:]
    if (message := override_syntax_message(arguments) or unknown_choice(arguments) or missing_paper_row(arguments)
            or unknown_key(arguments) or ignored_output_dir(arguments)) is not None:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    # Lightning and torch come in only now: the checks above need neither, so a typo is refused in a fraction
    # of a second. Still before Hydra configures logging, so that Lightning keeps its own stderr handler (a
    # Slurm job unpickles `cli` with this module-level name, which imports them there first too).
    from afno_repro.train import main

    if len(kept := without_row_sweep(arguments)) > len(arguments):
        print("~paper_model: no paper row, so the experiment's sweep over its rows is dropped too "
              f"({kept[-1]}); one run per point of its other sweeps.", file=sys.stderr)
        sys.argv[1:] = kept
    cli()
