"""Train one configuration: `python train.py [experiment=NAME] [key=value ...]`; a sweep with `-m`.

With no arguments: AFNO inpainting on the photographs embedded in scikit-image (the demo).
See README.md for the paper experiments and configs/ for every option.
"""

import sys

import hydra
from omegaconf import DictConfig

from afno_repro.config import (missing_paper_row, override_syntax_message, unknown_choice, unknown_key,  # also registers
                               without_row_sweep)  # the configs' resolvers
from afno_repro.console import quiet_third_party_noise


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def cli(cfg: DictConfig) -> None:
    quiet_third_party_noise()  # here, not at import: a Slurm job runs this function, not the module
    from afno_repro.train import main  # Lightning and torch: after the checks below, which need neither

    main(cfg)


if __name__ == "__main__":
    # Checked before Hydra composes: its error for a missing row would not list the table's rows, its
    # syntax errors name its parser's states rather than the fix, and a misspelt key gets no closest key.
    arguments = sys.argv[1:]
    if (message := override_syntax_message(arguments) or unknown_choice(arguments) or missing_paper_row(arguments)
            or unknown_key(arguments)) is not None:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    if len(kept := without_row_sweep(arguments)) > len(arguments):
        print("~paper_model: no paper row, so the experiment's sweep over its rows is dropped too "
              f"({kept[-1]}); one run per point of its other sweeps.", file=sys.stderr)
        sys.argv[1:] = kept
    cli()
