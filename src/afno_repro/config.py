"""Hydra configuration helpers: where the configs live, composing them from Python, resolvers, and the
values the configs leave to code.

The configs are the single description of every paper row, named ``paper_model=<table>/<row>``
(``configs/paper_model/<table>/<row>.yaml``: the row's backbone, mixer and values); training and the
model table both compose them, so the table counts exactly what is trained.

Importing this module registers the OmegaConf resolvers the configs use. They are pure functions of
the values they are given (arithmetic, lookups, string and path formatting); a value whose computation
builds models or reads the disk is filled in by :func:`fill_computed` instead, once, when a run starts.

``${sanitize:...}``
    makes a string safe as one path component (``/`` and ``=`` become ``-``, ``,`` becomes ``_``; a long one is shortened
    with a hash: :func:`sanitize`).
``${or_default:value,default}``
    ``value``, or ``default`` when it is unset (e.g. the experiment of a sweep without one).
``${datasetgan_category:column}``
    The DatasetGAN category of a paper column (``celeba_faces`` -> ``face``, ``ade_cars`` ->
    ``car``, ``lsun_cats`` -> ``cat``); ``face`` outside a paper experiment (null column).
``${datasetgan_classes:category}``
    The class count of a DatasetGAN category (face 34, car 20, cat 16).
``${name_classes:name}``
    The class count in a DDPM-segmentation dataset name, its numeric suffix (``ffhq_34`` -> 34).
``${scaled_lr:lr,reference_batch,batch_size,devices,num_nodes[,accumulation[,accelerator]]}``
    The linear scaling rule of A.5 (``lr x global batch / reference_batch``, "(BatchSize/512) x
    5e-4"): the global batch is ``batch_size`` per process times the processes, ``devices`` (an
    int, or ``auto``: the visible GPUs, 1 without) times ``num_nodes``.
``${file_in:folder,name}``
    ``folder/name``, or null when ``folder`` is null (e.g. Figure 1's Swin checkpoints).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from afno_repro.releases import DATASETGAN_CLASSES

__all__ = ["CONFIG_DIR", "compose", "declares_multirun", "equal_params_width", "fill_computed", "ignored_output_dir",
           "missing_paper_row", "override_syntax_message", "overrides_message", "paper_rows", "sweep_points", "sweep_reason", "unknown_choice",
           "unknown_key", "without_row_sweep"]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _config_dir() -> Path:
    if not (CONFIG_DIR / "train.yaml").is_file():
        raise FileNotFoundError(
            f"the Hydra configs were not found at {CONFIG_DIR}. afno-repro reads its configs from the "
            "source checkout: install it with `pip install -e .` from a clone of the repository."
        )
    return CONFIG_DIR


def compose(overrides: Sequence[str] = (), output_dir: str = "outputs/composed") -> DictConfig:
    """Compose ``configs/train.yaml`` with command-line style ``overrides``, outside a Hydra run.

    The result has the values :func:`fill_computed` fills in, is fully resolved
    (``${hydra:runtime.output_dir}`` becomes ``output_dir``) and can be instantiated, e.g. ``hydra.utils.instantiate(compose(["paper_model=table2/afno"]).backbone)``.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(_config_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    OmegaConf.set_readonly(cfg, False)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = output_dir
        HydraConfig.instance().set_config(cfg)
        del cfg["hydra"]
    fill_computed(cfg)
    OmegaConf.resolve(cfg)
    return cfg


def sweep_points(experiment: str, *overrides: str) -> list[list[str]]:
    """The overrides of every run of ``-m experiment=<experiment> [overrides]``: the cartesian product
    of the ``hydra.sweeper.params`` the experiment declares (``[[]]`` when it declares none), as
    ``overrides`` leave them (``debug=smoke`` trains one column of Table 3)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_dir(config_dir=str(_config_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=[f"experiment={experiment}", *overrides],
                            return_hydra_config=True)
    points: list[list[str]] = [[]]
    parser = OverridesParser.create()
    for key, values in (cfg.hydra.sweeper.params or {}).items():
        # Hydra's own reading of the values (a,b; range(...); choice(...)), as its sweeper expands them.
        (override,) = parser.parse_overrides([f"{key}={values}"])
        expanded = list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(values)]
        points = [point + [f"{key}={value}"] for point in points for value in expanded]
    return points


def paper_rows(table: str, order: Sequence[str] = ()) -> list[str]:
    """The rows of paper table ``table``: ``configs/paper_model/<table>/*.yaml``, each ``paper_model=<table>/<row>``;
    those named in ``order`` (the paper's rows, as ``paper_results.yaml`` lists them) first and in that order, then
    the others (rows a contributor added) sorted."""
    configured = sorted(path.stem for path in (_config_dir() / "paper_model" / table).glob("*.yaml"))
    first = [row for row in order if row in configured]
    return first + [row for row in configured if row not in first]


def _declared(group: str, name: str, pattern: str, parent: str) -> str | None:
    """The first match of ``pattern`` in ``configs/<group>/<name>.yaml``, else in the config of the
    same group it builds on (the first match of ``parent``), and so on; None if there is none."""
    file = _config_dir() / group / f"{name}.yaml"
    if not file.is_file():
        return None
    text = file.read_text()
    found = re.search(pattern, text)
    if found:
        return found.group(1)
    base = re.search(parent, text, re.MULTILINE)
    return _declared(group, base.group(1), pattern, parent) if base else None


def _experiment_row(experiment: str) -> str | None:
    """The row ``experiment`` trains unless told otherwise (its ``override /paper_model: <table>/<row>``)."""
    return _declared("experiment", experiment, r"override /paper_model:\s*(\S+)", r"^defaults:\s*\n\s*-\s*(\w+)\s*$")


def _row_mixer(paper_model: str) -> str | None:
    """The mixer a ``paper_model=<table>/<row>`` file selects (None for a trunk without one: Swin)."""
    return _declared("paper_model", paper_model, r"override /mixer:\s*(\w+)", r"-\s*/paper_model/(\S+)")


# Hydra's command-line flags that take the next word as their value (``--info`` takes one optionally).
_FLAGS_WITH_VALUES = ("-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir", "-c", "--cfg", "-p",
                      "--package", "-i", "--info", "--experimental-rerun")


def override_syntax_message(arguments: Sequence[str], command: str = "python train.py") -> str | None:
    """A message naming the first override Hydra's grammar cannot read and how to write it, else None.

    Hydra's own message names an ANTLR state (``LexerNoViableAltException``, "no viable alternative
    at input"): a value with characters outside its unquoted grammar (a non-ASCII path, a space in a
    sweep) must be quoted, and an unclosed bracket or quote must be closed.

    >>> print(override_syntax_message(["data.root=/data/dätä"]))  # doctest: +ELLIPSIS
    the override `data.root=/data/dätä` holds characters Hydra reads only inside quotes (non-ASCII: ä); quote the value: python train.py "data.root='/data/dätä'"...
    >>> override_syntax_message(["data.root='/data/dätä'", "-m", "seed=0,1", "--cfg", "job", "~paper_model"]) is None
    True
    >>> print(override_syntax_message(["experiment", "table2_inpainting"]))
    `experiment` is not an override: Hydra reads each as key=value, with no spaces around the `=`. Write python train.py ... experiment=table2_inpainting.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    for index, argument in enumerate(arguments):
        previous = arguments[index - 1] if index else ""
        if "=" in argument or argument.startswith(("-", "~")) or previous in _FLAGS_WITH_VALUES:
            continue
        # A word that is neither an override nor a flag's value: `experiment table2_inpainting` (Hydra: "missing EQUAL").
        following = arguments[index + 1] if index + 1 < len(arguments) else ""
        written = (f"{argument}={following}" if following and "=" not in following and not following.startswith("-")
                   else f"{argument}=<value>")
        return (f"`{argument}` is not an override: Hydra reads each as key=value, with no spaces around the `=`. "
                f"Write {command} ... {written}.")
    parser = OverridesParser.create()
    for argument in arguments:
        if argument.startswith("-") or "=" not in argument:
            continue  # Hydra's flags (-m, --cfg job, -cn NAME) and their values
        try:
            parser.parse_overrides([argument])
        except OverrideParseException as error:
            key, value = argument.split("=", 1)
            lines = str(error).splitlines()
            hydra_says = lines[0]
            if hydra_says.startswith("LexerNoViableAltException") and len(lines) > 1 and "^" in lines[1]:
                # Hydra's lexer message repeats the override under its own prefix, with a caret below.
                at = lines[1].index("^") - (len(lines[0]) - len(argument))
                hydra_says = f"it cannot read on from `{argument[max(at, 0):]}`"
            foreign = sorted({char for char in value if not char.isascii()})
            if foreign:
                return (f"the override `{argument}` holds characters Hydra reads only inside quotes (non-ASCII: "
                        f"{''.join(foreign)}); quote the value: {command} \"{key}='{value}'\" (the outer quotes are "
                        "for your shell, the inner ones for Hydra).")
            return (f"the override `{argument}` is not valid Hydra override syntax (Hydra: {hydra_says}). Close every "
                    f"bracket and quote (a list is `{key}=[1,2]`), and quote a value with spaces, commas or brackets "
                    f"that is not a list or a sweep: {command} \"{key}='...'\". Grammar: "
                    "https://hydra.cc/docs/advanced/override_grammar/basic/")
    return None


def unknown_choice(arguments: Sequence[str]) -> str | None:
    """A message when an override picks a config of one of ``configs/``'s groups that does not exist, else None.

    Hydra's own answer lists the group's options but ends with a hint to set ``HYDRA_FULL_ERROR`` for a stack
    trace and exits 1, like a crash; this names the closest option too. Groups under ``hydra/`` (launcher
    plugins) and values Hydra computes (``choice(...)``, ``glob(...)``, interpolations) are left to Hydra. A paper
    row (``paper_model=table2/gfnet``) is matched among its table's rows.

    >>> print(unknown_choice(["mixer=afnoo"]))  # doctest: +ELLIPSIS
    mixer=afnoo names no config in configs/mixer/. Did you mean mixer=afno? Options: aff, afno, ...
    >>> unknown_choice(["-m", "mixer=afno,gfn", "trainer.max_epochs=3", "experiment=table2_inpainting"]) is None
    True
    """
    import difflib

    root = _config_dir()
    for argument in arguments:
        if "=" not in argument or argument.startswith(("~", "-")):
            continue
        key, value = argument.split("=", 1)
        group = key.lstrip("+")
        if "." in group or group.startswith("hydra") or not (root / group).is_dir():
            continue
        if any(mark in value for mark in "()${}[]'\"") or not value:
            continue
        options = sorted(str(path.relative_to(root / group).with_suffix("")) for path in (root / group).rglob("*.yaml"))
        for choice in value.split(","):
            if choice == "null":
                return _null_choice(group, options)
            if choice in options:
                continue
            table = choice.split("/")[0] + "/"
            if group == "paper_model" and any(option.startswith(table) for option in options):
                options = [option for option in options if option.startswith(table)]  # that table's rows
            close = difflib.get_close_matches(choice, options, n=1)
            guess = f"Did you mean {group}={close[0]}? " if close else ""
            shown = ", ".join(options) if len(options) <= 30 else ", ".join(options[:30]) + ", ..."
            if group == "mixer":
                # A class registered under that name (read, not imported: torch would cost seconds here).
                mixers = Path(__file__).resolve().parent / "mixers"
                registered = rf"@register_mixer\(\s*['\"]{re.escape(choice)}['\"]"
                if any(re.search(registered, module.read_text()) for module in mixers.glob("*.py")):
                    guess = (f"{choice} is a registered mixer without a config: add configs/mixer/{choice}.yaml with "
                             f"name: {choice} and its options (configs/mixer/gfn.yaml shows the form). ")
            return f"{group}={choice} names no config in configs/{group}/. {guess}Options: {shown}."
    return None


# What a user who writes <group>=null wants instead, for the groups where that has an answer.
_NULL_INSTEAD = {
    "scheduler": "scheduler=none keeps the learning rate constant",
    "logger": "logger=csv logs to CSV files without W&B",
}


def overrides_message(arguments: Sequence[str], command: str = "python train.py") -> str | None:
    """What is wrong with train.py overrides a script passes on (its syntax, an unknown config name, a misspelt key),
    in train.py's words; None when they compose.

    >>> overrides_message(["mixer=nosuch"])  # doctest: +ELLIPSIS
    'mixer=nosuch names no config in configs/mixer/. Options: aff, afno, ...'
    >>> overrides_message(["mixer=gfn", "seed=1"]) is None
    True
    """
    return override_syntax_message(arguments, command=command) or unknown_choice(arguments) or unknown_key(arguments)


def _null_choice(group: str, options: list[str]) -> str:
    """The message for ``<group>=null``, which Hydra refuses for every group (with a stack trace), even for a group
    that is null by default (paper_model, experiment, debug).

    >>> print(_null_choice("scheduler", ["cosine", "none", "poly"]))
    scheduler=null: a config group cannot be set to null on the command line. scheduler=none keeps the learning rate constant. Options: cosine, none, poly.
    """
    defaults = (_config_dir() / "train.yaml").read_text()
    if re.search(rf"^\s*-\s*{re.escape(group)}:\s*null\b", defaults, flags=re.MULTILINE):
        instead = f"{group} is optional and unset by default: leave the override out"
        if group == "paper_model":
            instead += ", or write ~paper_model to drop the paper row an experiment picks (the mixer's own defaults)"
    else:
        instead = _NULL_INSTEAD.get(group, f"every run needs one of configs/{group}/")
    shown = ", ".join(options) if len(options) <= 30 else ", ".join(options[:30]) + ", ..."
    return f"{group}=null: a config group cannot be set to null on the command line. {instead}. Options: {shown}."


def unknown_key(arguments: Sequence[str]) -> str | None:
    """A message when an override sets a key the composed config does not have (``trainer.max_epoch=5``), naming the
    closest key there, else None.

    Hydra's own answer exits 1 with its stack-trace hint and suggests ``+trainer.max_epoch=5``, which only moves
    the typo into the class that receives it. Checked by composing the command once (~0.2 s), only when it sets a
    dotted key without ``+``/``~``. A sweep (``a=1,2``) is composed at each swept option's first value: its first
    job, which Hydra composes first and where it would stop with the same error.
    """
    import difflib

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException

    words = [argument for argument in arguments if "=" in argument and not argument.startswith("-")]
    if not any("." in word.split("=", 1)[0] and not word.startswith(("+", "~")) for word in words):
        return None
    try:
        parsed = OverridesParser.create().parse_overrides(words)
        first = {override.get_key_element(): next(iter(override.sweep_string_iterator()))
                 for override in parsed if override.is_sweep_override()}
        words = [f"{override.get_key_element()}={first[override.get_key_element()]}" if override.is_sweep_override()
                 else word for override, word in zip(parsed, words)]
        with initialize_config_dir(config_dir=str(_config_dir()), version_base="1.3"):
            try:
                hydra_compose(config_name="train", overrides=words, return_hydra_config=True)
                return None
            except ConfigCompositionException as error:
                found = re.match(r"Could not override '([^']+)'", str(error))
                if found is None or "not in struct" not in str(error.__cause__):
                    return None
                key = found.group(1)
                cfg = hydra_compose(config_name="train", return_hydra_config=True,
                                    overrides=[word for word in words if word.split("=", 1)[0] != key])
    except Exception:  # noqa: BLE001 - any other problem is Hydra's to report, as it would without this check
        return None
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    options = sorted(str(name) for name in node.keys()) if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(leaf, options, n=1)
    guess = f"Did you mean {parent}.{close[0]}? " if close else ""
    shown = ", ".join(options) if len(options) <= 40 else ", ".join(options[:40]) + ", ..."
    job = "this run's config" if not first else (
        "the config of the sweep's first job (" + " ".join(f"{name}={value}" for name, value in first.items()) + ")")
    return (f"{key}: {job} has no key '{leaf}' under {parent}. {guess}Its keys: {shown}. A key that is "
            f"not in the config is added with a leading + (+{key}=...), for an option the class takes.")


def missing_paper_row(arguments: Sequence[str]) -> str | None:
    """A message when ``mixer=<name>`` asks a paper row for a mixer it does not build, else None.

    A paper row is named ``paper_model=<table>/<row>`` (each paper experiment picks one by default) and
    selects its own backbone and mixer; ``mixer=<name>`` on top of it would keep the row's widths and
    its paper label around another mixer, and Hydra would not object. ``arguments`` are the
    command-line overrides of ``train.py``; ``~paper_model`` (no row) lets any mixer train.
    """
    if any(_no_row(arg) for arg in arguments):
        return None
    values = dict(arg.split("=", 1) for arg in arguments if "=" in arg and not arg.startswith(("~", "hydra")))
    values = {key.lstrip("+"): value for key, value in values.items()}
    mixers = [m for m in values.get("mixer", "").split(",") if m]
    named = [r for r in values.get("paper_model", "").split(",") if r]
    experiments = [e for e in values.get("experiment", "").split(",") if e] or [None]
    # The user's other overrides, kept in the command this suggests (a data.root left out would fail next).
    others = [arg for arg in arguments
              if arg.split("=", 1)[0].lstrip("+~") not in ("mixer", "paper_model", "experiment") and arg != "--multirun"]
    flags = "".join(f"{arg} " for arg in others if arg.startswith("-"))  # -m where the user gave it
    rest = "".join(f" {shlex.quote(arg)}" for arg in others if not arg.startswith("-"))
    for experiment in experiments:
        default = _experiment_row(experiment) if experiment else None
        for row in named or ([default] if default else []):
            row_mixer = _row_mixer(row)
            table = row.split("/")[0]
            for mixer in mixers:
                if row_mixer is None or mixer == row_mixer:
                    continue
                run = f"python train.py {flags}{f'experiment={experiment} ' if experiment else ''}"
                rows = paper_rows(table)
                by_mixer = [r for r in rows if _row_mixer(f"{table}/{r}") == mixer]
                if by_mixer:
                    return (f"mixer={mixer} does not select a paper row: a row is named paper_model=<table>/<row> and "
                            f"brings its own mixer (paper_model={row} builds mixer={row_mixer}). For {table}'s "
                            f"{mixer} row run `{run}paper_model={table}/{by_mixer[0]}{rest}`; to train {mixer} with this "
                            "recipe at the backbone's default width instead, add ~paper_model (no paper row).")
                return (
                    f"{f'experiment={experiment}' if experiment else f'paper_model={row}'} reproduces {table} of the "
                    f"paper, which has no row for mixer={mixer}. Its rows are: {', '.join(rows)} "
                    f"({run}paper_model={table}/<one of them>{rest}). To train {mixer} with this experiment's recipe at the "
                    "backbone's default width instead, add ~paper_model (no paper row: no paper numbers beside the results)."
                )
    return None


def _no_row(argument: str) -> bool:
    """``~paper_model`` in any form Hydra takes or records (``~paper_model``, ``~paper_model=null``)."""
    return argument.split("=", 1)[0] == "~paper_model"


def without_row_sweep(arguments: Sequence[str]) -> list[str]:
    """``arguments``, with the experiment's sweep over paper rows dropped when a multirun says ``~paper_model``.

    ``~paper_model`` means no paper row; under ``-m`` a table's experiment would still sweep its rows
    (``hydra.sweeper.params.paper_model``), and each job would then delete its row: the same model trained
    once per row. So the row sweep goes too (``~hydra.sweeper.params.paper_model``), unless the command
    names that parameter itself; the other sweeps stay.
    """
    multirun = {"-m", "--multirun", "hydra.mode=MULTIRUN"} & set(arguments)
    if not any(_no_row(arg) for arg in arguments) or not multirun:
        return list(arguments)
    if any(arg.split("=", 1)[0].lstrip("+~") == "hydra.sweeper.params.paper_model" for arg in arguments):
        return list(arguments)
    experiments = _experiments(arguments)
    if not experiments:
        return list(arguments)
    try:
        sweeps_rows = all(any(o.startswith("paper_model=") for point in sweep_points(e)[:1] for o in point) for e in experiments)
    except Exception:  # noqa: BLE001 - an experiment that does not compose is Hydra's to name, as before
        return list(arguments)
    return [*arguments, "~hydra.sweeper.params.paper_model"] if sweeps_rows else list(arguments)


def declares_multirun(experiment: str) -> bool:
    """Whether ``experiment`` is a sweep even without ``-m`` (its config sets ``hydra.mode: MULTIRUN``, as
    ``fewshot_demo`` does)."""
    return _declared("experiment", experiment, r"(?m)^\s+mode:\s*(MULTIRUN)\s*(?:#.*)?$",
                     r"^defaults:\s*\n\s*-\s*(\w+)\s*$") is not None


def _experiments(arguments: Sequence[str]) -> list[str]:
    return [value for arg in arguments if arg.lstrip("+").startswith("experiment=") for value in arg.split("=", 1)[1].split(",")]


def sweep_reason(arguments: Sequence[str]) -> str | None:
    """Why ``python train.py <arguments>`` is a sweep (Hydra's multirun): the ``-m`` or ``hydra.mode=MULTIRUN`` it
    gives, or an experiment that declares it; None for one run (also where ``hydra.mode=RUN`` overrides that)."""
    for arg in arguments:
        if arg in ("-m", "--multirun") or arg.lstrip("+") == "hydra.mode=MULTIRUN":
            return f"`{arg}`"
    if any(arg.lstrip("+") == "hydra.mode=RUN" for arg in arguments):
        return None
    declared = [experiment for experiment in _experiments(arguments) if declares_multirun(experiment)]
    return f"experiment={declared[0]} sets hydra.mode: MULTIRUN" if declared else None


def ignored_output_dir(arguments: Sequence[str]) -> str | None:
    """A run folder Hydra would ignore, said before anything runs: ``hydra.run.dir`` given to a sweep (its runs go
    under ``hydra.sweep.dir``) or ``hydra.sweep.dir`` to one run (it goes to ``hydra.run.dir``). Hydra reads each
    silently, and the runs landed under ``outputs/`` instead, where the user was not looking.

    >>> ignored_output_dir(["-m", "mixer=afno,gfn", "hydra.run.dir=/x"])  # doctest: +ELLIPSIS
    'hydra.run.dir=/x would be ignored: this command is a sweep (`-m`)... give hydra.sweep.dir=/x instead.'
    >>> ignored_output_dir(["experiment=fewshot_demo", "hydra.run.dir=/x"])  # doctest: +ELLIPSIS
    '... a sweep (experiment=fewshot_demo sets hydra.mode: MULTIRUN)... give hydra.sweep.dir=/x instead (or hydra.mode=RUN ...'
    >>> ignored_output_dir(["hydra.sweep.dir=/x"])  # doctest: +ELLIPSIS
    'hydra.sweep.dir=/x would be ignored: this command is one run, ... give hydra.run.dir=/x instead, or add -m ...'
    >>> ignored_output_dir(["-m", "hydra.sweep.dir=/x"]), ignored_output_dir(["hydra.run.dir=/x"])
    (None, None)
    """
    given = {}
    for arg in arguments:
        key, _, value = arg.partition("=")
        if key.lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir"):
            given[key.lstrip("+")] = value
    why = sweep_reason(arguments)
    if why and "hydra.run.dir" in given and "hydra.sweep.dir" not in given:
        value = given["hydra.run.dir"]
        one_run = (" (or hydra.mode=RUN for one run of it in that folder)" if why.startswith("experiment=") else "")
        return (f"hydra.run.dir={value} would be ignored: this command is a sweep ({why}), whose runs go to numbered "
                f"folders under hydra.sweep.dir; give hydra.sweep.dir={value} instead{one_run}.")
    if not why and "hydra.sweep.dir" in given and "hydra.run.dir" not in given:
        value = given["hydra.sweep.dir"]
        return (f"hydra.sweep.dir={value} would be ignored: this command is one run, which goes to hydra.run.dir; "
                f"give hydra.run.dir={value} instead, or add -m to run a sweep (its runs go to numbered folders under "
                "hydra.sweep.dir).")
    return None


def equal_params_width(depth: int, base_dim: int, base_blocks: int, blocks: int) -> int:
    """Width of a ViT-XS/4 AFNO with ``blocks`` blocks whose parameters match the base model's.

    Figure 4 (right) varies the block count "simultaneously adjusting the hidden size so the overall
    parameter count of the models are equal". Parameters are counted on models instantiated on the
    meta device (no memory, no hand-written formula); candidate widths are multiples of ``blocks``.
    """
    import torch

    from afno_repro.models import ViT

    def count(dim: int, k: int) -> int:
        with torch.device("meta"):
            model = ViT(img_size=224, patch_size=4, embed_dim=dim, depth=depth, pos_embed=False, head="pixel",
                        mixer={"name": "afno", "num_blocks": k})
        return sum(p.numel() for p in model.parameters())

    target = count(base_dim, base_blocks)
    # Parameters grow as (8 + 4/k) d^2 per layer, so this width is within a few blocks of the answer.
    guess = base_dim * ((8 + 4 / base_blocks) / (8 + 4 / blocks)) ** 0.5
    centre = max(1, round(guess / blocks))
    candidates = [m * blocks for m in range(max(1, centre - 3), centre + 4)]
    return min(candidates, key=lambda d: abs(count(d, blocks) - target))


# Paper column (Table 3, Table 6) -> DatasetGAN category, and each category's class count.
PAPER_COLUMNS = {"celeba_faces": "face", "ade_cars": "car", "lsun_cats": "cat"}


def _datasetgan_category(column: str | None) -> str:
    if column in (None, "None", "null", ""):
        return "face"
    if column not in PAPER_COLUMNS:
        raise ValueError(f"paper.column={column!r} is not a few-shot column of the paper; use one of "
                         f"{', '.join(PAPER_COLUMNS)} (or set data.category=face|car|cat directly).")
    return PAPER_COLUMNS[column]


def _datasetgan_classes(category: str) -> int:
    if category not in DATASETGAN_CLASSES:
        raise ValueError(f"data.category={category!r} is not a DatasetGAN category; use one of "
                         f"{', '.join(DATASETGAN_CLASSES)}.")
    return DATASETGAN_CLASSES[category]


def _name_classes(name: str) -> int:
    found = re.search(r"_(\d+)$", str(name))
    if not found:
        raise ValueError(f"data.name={name!r} ends in no class count (e.g. ffhq_34, cat_15); set data.num_classes=<C>.")
    return int(found.group(1))


def scaled_lr(lr: float, reference_batch: int, batch_size: int, devices: int | str = 1, num_nodes: int = 1,
              accumulation: int = 1, accelerator: str = "auto") -> float:
    """``lr x global batch / reference_batch`` (A.5's linear scaling rule); the global batch is the images
    per optimizer step: per-process batch x processes x gradient accumulation, the processes counted as the
    run's batch plan counts them (``devices=auto`` is every visible GPU, but one process with ``accelerator=cpu``).

    >>> scaled_lr(5e-4, 512, 128, 8)   # 8 GPUs x 128 = 1024 images a step
    0.001
    >>> scaled_lr(5e-4, 512, 64, 1, 1, 2)   # 64 x 2 accumulated
    0.000125
    """
    from afno_repro.batch import world_size

    processes = world_size(accelerator, devices, num_nodes)
    return float(lr) * int(batch_size) * processes * int(accumulation or 1) / int(reference_batch)


def class_folders(root: str | None, default: int) -> int:
    """How many class folders ``root/train`` holds, counted as the ImageNet loader counts them
    (:func:`afno_repro.data.imagenet.class_folders`); ``default`` without a readable ``root/train``,
    whose problem the data module names when it reads it."""
    if root in (None, "None", "null", "", "???"):
        return int(default)
    from afno_repro.data.imagenet import class_folders as folders  # torchvision: only when a root is given
    from afno_repro.data.errors import DataError

    try:
        return len(folders(str(root))) or int(default)
    except (DataError, OSError):
        return int(default)


# What ImageNet-1k's train/ holds: the class count before data.root names a folder that says otherwise.
IMAGENET_CLASSES = 1000


def _stated(parent: DictConfig | None, key: str) -> object:
    """``parent.key`` as the config states it (an interpolation is not resolved: None)."""
    if not isinstance(parent, DictConfig) or key not in parent or OmegaConf.is_interpolation(parent, key):
        return None
    return parent._get_node(key)._value()


def fill_computed(cfg: DictConfig) -> DictConfig:
    """Fill in the values a config leaves to code because computing them builds models or reads the
    disk; ``cfg`` is changed in place, before it is resolved, and returned. :func:`compose` and every
    run (:func:`afno_repro.train.run`) call it once; an OmegaConf resolver would instead hide the work in
    every resolution of the config.

    ``data.num_classes: class_folders``
        The class folders in ``data.root/train`` (an ImageNet-style layout), or 1000 (ImageNet-1k's)
        while ``data.root`` is unset or has no ``train/`` yet (the data module then names the problem).
    ``backbone.embed_dim: equal_params``
        Figure 4 (right): the width, among multiples of ``mixer.num_blocks``, whose ViT AFNO at
        ``backbone.depth`` has the parameter count of the one the config's ``equal_params`` states
        (its ``embed_dim`` and ``num_blocks``): :func:`equal_params_width`.
    """
    data, backbone = cfg.get("data"), cfg.get("backbone")
    if _stated(data, "num_classes") == "class_folders":
        data.num_classes = class_folders(OmegaConf.select(data, "root", default=None), IMAGENET_CLASSES)
    if _stated(backbone, "embed_dim") == "equal_params":
        base = cfg.get("equal_params")
        if not isinstance(base, DictConfig) or base.get("embed_dim") is None or base.get("num_blocks") is None:
            raise ValueError(
                "backbone.embed_dim=equal_params asks for the width whose model has the parameters of the one "
                "`equal_params` states, but the config states none: add equal_params={embed_dim: <width>, "
                "num_blocks: <k>} (configs/experiment/fig4_blocks.yaml), or give backbone.embed_dim=<width>.")
        backbone.embed_dim = equal_params_width(int(backbone.depth), int(base.embed_dim), int(base.num_blocks),
                                                int(cfg.mixer.num_blocks))
    return cfg


_NAME_LIMIT = 120  # characters of a sanitized folder name; a file system allows 255 bytes


def sanitize(text: Any) -> str:
    """``text`` as one folder name: ``/`` and ``=`` become ``-``, ``,`` becomes ``_``; a name longer than
    :data:`_NAME_LIMIT` keeps its start and ends with a hash of the whole, so that a sweep job's folder
    (its overrides, a long path among them) stays within the file system's 255 bytes and stays unique.

    >>> sanitize("paper_model=table2/afno")
    'paper_model-table2-afno'
    >>> len(sanitize("data.root=/" + "x" * 400)) == _NAME_LIMIT
    True
    """
    name = str(text).replace("/", "-").replace("=", "-").replace(",", "_") or "run"
    if len(name) <= _NAME_LIMIT:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:12]
    return f"{name[:_NAME_LIMIT - len(digest) - 1]}-{digest}"


def _register_resolvers() -> None:
    resolvers = {
        "sanitize": sanitize,
        "or_default": lambda value, default: default if value in (None, "None", "null", "") else value,
        "datasetgan_category": _datasetgan_category,
        "datasetgan_classes": _datasetgan_classes,
        "name_classes": _name_classes,
        "scaled_lr": scaled_lr,
        "file_in": lambda folder, name: None if folder in (None, "None", "null", "") else str(Path(str(folder)).expanduser() / str(name)),
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=True)


_register_resolvers()
