"""Train one configuration: `python train.py [experiment=NAME] [key=value ...]`; a sweep with `-m`.

With no arguments: AFNO inpainting on the photographs embedded in scikit-image (the demo).
See README.md for the paper experiments and configs/ for every option.
"""

import hydra
from omegaconf import DictConfig

import afno_repro.config  # noqa: F401  (registers the resolvers the configs use)
from afno_repro.train import main


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def cli(cfg: DictConfig) -> None:
    main(cfg)


if __name__ == "__main__":
    cli()
