"""Biharmonic fills kept on disk, so that every row scored on the same images fills them once.

Every row of an inpainting table (Table 2's four mixers, each point of Figure 4's sweeps) is tested on
the same images with the same seeded masks, and the biharmonic baseline's fill of an image does not
depend on the model: ~0.1 s of one CPU core per 224x224 image, ~1.5 core-hours for ImageNet's 50,000
validation images, repeated for each row. :class:`FillCache` stores each fill under a key made of the
image's and the mask's content (and scikit-image's version, whose solver makes the fill), so a later
row reads it back instead of solving again, and a changed image, mask, resolution or solver can never
be served a stale fill.

Only the hidden pixels are stored (``inpaint_biharmonic`` returns the visible ones unchanged), in
float32, the precision the fills are scored in: a fill read back is bit for bit the fill computed,
as :func:`~afno_repro.tasks.baselines.biharmonic` hands it to the metrics. At 224x224 with a quarter
of the pixels hidden that is ~150 KB per image (~7.5 GB for ImageNet's validation set); each fill is
one ``.npy`` file under ``<directory>/<first two hex digits of the key>/``. Delete the directory to
reclaim the space: nothing else refers to it.

A cache never costs a run its numbers or its work: an unreadable or corrupt entry is a miss (solved
again and rewritten), and a directory that cannot be written is reported once and the fills are
computed as if there were no cache.

Example
-------
>>> import numpy as np, tempfile
>>> cache = FillCache(tempfile.mkdtemp())
>>> image, hidden = np.random.default_rng(0).random((8, 8, 3)), np.zeros((8, 8), bool)
>>> hidden[2:4, 2:4] = True
>>> key = cache.key(image, hidden)
>>> cache.load(key, image, hidden) is None
True
>>> cache.save(key, image + 1.0, hidden)
>>> bool((cache.load(key, image, hidden)[hidden] == np.float32(image[hidden] + 1.0)).all())
True
>>> cache.counts()
{'read': 1, 'computed': 1}
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import skimage

__all__ = ["FillCache"]

# Part of every key: a new storage format, or a solver that fills differently, gets new keys.
_FORMAT = b"afno-repro biharmonic fill, hidden pixels as float32, v1"


class FillCache:
    """Biharmonic fills on disk, keyed by the content of ``(image, hidden pixels)``; see the module notes.

    Parameters
    ----------
    directory
        Where the fills are kept (made when the first one is written). Shared safely by several
        processes and runs: each entry is written to a temporary file and renamed into place.

    Notes
    -----
    :meth:`counts` says how many fills this object read back and how many it was handed to store,
    i.e. computed (one process: under DDP each rank counts its own shard).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self._read = 0
        self._computed = 0
        self._writable = True

    @staticmethod
    def key(image: np.ndarray, hidden: np.ndarray) -> str:
        """The content key of one fill: ``image`` ``(H, W, 3)`` float64, ``hidden`` ``(H, W)`` bool."""
        digest = hashlib.blake2b(_FORMAT, digest_size=20)
        digest.update(f"scikit-image {skimage.__version__} {image.shape} {image.dtype}".encode())
        digest.update(np.ascontiguousarray(image))
        digest.update(np.packbits(hidden))
        return digest.hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.npy"

    def load(self, key: str, image: np.ndarray, hidden: np.ndarray) -> np.ndarray | None:
        """The stored fill of ``image`` (float32 ``(H, W, 3)``), or ``None`` when there is none to read.

        An entry that cannot be read or does not hold one value per hidden pixel and channel (a file
        cut short by a full disk, say) is reported and treated as missing: the fill is solved again
        and the entry rewritten.
        """
        path = self._path(key)
        try:
            values = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            warnings.warn(f"biharmonic fill cache: {path} is unreadable ({error}); solving that fill again.",
                          stacklevel=2)
            return None
        if values.dtype != np.float32 or values.shape != (int(hidden.sum()), image.shape[-1]):
            warnings.warn(f"biharmonic fill cache: {path} holds {values.dtype} {values.shape}, not one float32 "
                          f"value per hidden pixel and channel; solving that fill again.", stacklevel=2)
            return None
        fill = image.astype(np.float32)
        fill[hidden] = values
        self._read += 1
        return fill

    def save(self, key: str, fill: np.ndarray, hidden: np.ndarray) -> None:
        """Store the computed ``fill`` ``(H, W, 3)`` of the image with ``hidden`` pixels under ``key``."""
        self._computed += 1
        if not self._writable:
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{key}.", suffix=".tmp", delete=False) as handle:
                np.save(handle, fill[hidden].astype(np.float32))
            os.replace(handle.name, path)
        except OSError as error:
            self._writable = False
            warnings.warn(
                f"biharmonic fill cache: cannot write below {self.directory} ({error}); this run computes its fills "
                "without storing them (its numbers are unaffected). Point task.baseline_cache at a writable folder, "
                "or set task.baseline_cache=null to switch the cache off.", stacklevel=2)
            try:
                os.unlink(handle.name)
            except (OSError, NameError):
                pass

    def counts(self) -> dict[str, int]:
        """``{"read": fills read back, "computed": fills handed to :meth:`save`}`` by this object."""
        return {"read": self._read, "computed": self._computed}
