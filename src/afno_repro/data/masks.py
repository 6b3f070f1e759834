"""Random-walk inpainting masks (paper appendix A.2).

The paper hides pixels by "initially sampling uniformly from {(i, j)} and then apply[ing] the
transition function T((i, j)) = UniformSample({(i-1, j), (i+1, j), (i, j-1), (i, j+1)}) for 3136
steps", zeroing the visited pixels. It leaves open which grid the walk lives on, what happens at
the image border and whether the walk is stamped with a brush; :class:`RandomWalkMask` makes each
of those an option whose default is the plain reading of the text (pixel grid, 1-pixel brush,
moves off the image clipped, 3136 steps at every image size).

What the options mean for the masked fraction (measure it with
:meth:`RandomWalkMask.expected_masked_fraction`, report it with every inpainting result):

- ``grid="pixel"`` at 224x224: 3136 steps revisit many pixels and hide only about 1.9% of the
  image (a 2-D walk visits ~ ``pi * steps / log(steps)`` distinct sites).
- ``grid="token"`` with ``patch_size=4``: the walk runs on the 56x56 token grid (3136 = 56^2 is
  the token count) and hides whole 4x4 patches, about 25% of the image.
- ``brush_size=b`` stamps a ``b x b`` square at each visited pixel; the hidden area grows far
  less than ``b^2`` because the walk's path is dense (at 224, ``b=3`` hides ~3% instead of ~1.9%).
- ``border``: ``"clip"`` (a move off the image stays in place), ``"reflect"`` (it bounces back:
  from row 0 a move up lands on row 1) and ``"wrap"`` (the image is a torus). Clip and reflect
  keep the walk nearer the border and hide slightly fewer distinct pixels there than wrap.
- ``steps_scaling="area"`` scales the step count by ``H*W / reference_size^2`` so that small demo
  images are masked about as much as 224x224 images (64x64: 256 steps, ~2.5% hidden; a shorter
  walk revisits less); ``"fixed"`` keeps 3136 steps, which at 64x64 hides ~20% of the pixels.

Every mask is generated from a :class:`torch.Generator`. A batch drawn with one generator is
vectorised over the batch (no Python loop per mask or per step). Validation masks are fixed per
image: :meth:`RandomWalkMask.mask_for_index` derives the mask from ``(seed, index)`` alone, so it
does not depend on batch composition, shuffling or the number of data-loader workers.

Example
-------
>>> import torch
>>> from afno_repro.data.masks import RandomWalkMask, masked_fraction
>>> masks = RandomWalkMask()(8, 224, generator=torch.Generator().manual_seed(0))
>>> masks.shape, masks.dtype
(torch.Size([8, 224, 224]), torch.bool)
>>> 0.01 < float(masked_fraction(masks).mean()) < 0.03
True
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["RandomWalkMask", "masked_fraction", "derive_seed", "GRIDS", "BORDERS", "STEPS_SCALINGS"]

GRIDS = ("pixel", "token")
BORDERS = ("clip", "reflect", "wrap")
STEPS_SCALINGS = ("fixed", "area")
_CHOICES = {
    "grid": "token walks the token grid and hides whole patches (the paper experiments' reading, under which its "
            "numbers are attainable); pixel is the literal pixel walk.",
    "border": "clip keeps a step off the image in place (the default); reflect and wrap are the alternatives.",
    "steps_scaling": "area scales the 3136 steps with the image's area (smaller crops); fixed keeps them.",
}

# Chunking keeps the int64 walk buffers of one chunk (~ chunk * steps * 8 bytes each) inside the
# CPU caches' neighbourhood instead of allocating gigabytes for a large benchmark batch.
_CHUNK = 64


def derive_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for item ``index`` of a stream seeded by ``seed``.

    Neighbouring ``(seed, index)`` pairs give unrelated seeds (NumPy's ``SeedSequence`` hashing),
    so per-item generators seeded this way do not produce correlated masks.
    """
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def masked_fraction(masks: torch.Tensor) -> torch.Tensor:
    """Fraction of hidden pixels per mask.

    Parameters
    ----------
    masks: ``(..., H, W)`` boolean or 0/1 float masks (``True``/1 = hidden), e.g. the ``(n, H, W)``
        output of :class:`RandomWalkMask` or a ``(B, 1, H, W)`` batch mask.

    Returns
    -------
    Float tensor of shape ``masks.shape[:-2]``; ``.mean()`` gives the figure to report.
    """
    return masks.float().mean(dim=(-2, -1))


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise ValueError(
            f"image size {size!r} is not valid: give one positive int for a square image or a "
            "(height, width) pair of positive ints, e.g. size=224 or size=(224, 160)."
        )
    return int(size[0]), int(size[1])


def _clip_walk(free: torch.Tensor, upper: int) -> torch.Tensor:
    """Clip the 1-D free walks ``free`` (rows = walks) to ``[0, upper]``: a move off stays put.

    A clipped walk is the free walk plus two non-decreasing "push" terms that act only on the
    boundaries: ``x = free + P - Q``. Given ``Q``, ``P`` is the one-sided Skorokhod push
    ``max(0, running max of -(free - Q))``, and symmetrically ``Q`` given ``P``. Starting from
    ``Q = 0`` and alternating, both pushes grow monotonically to the exact solution and reach it
    after (number of border-to-border crossings + 1) rounds, each a running maximum over the
    whole path. Only walks that leave the grid take part; rounds stop when no push changes.
    """
    leaves = torch.nonzero((free.amin(dim=1) < 0) | (free.amax(dim=1) > upper)).squeeze(1)
    if not leaves.numel():
        return free
    walk = free[leaves]
    upper_push = torch.zeros_like(walk)
    while True:
        lower_push = torch.cummax(upper_push - walk, dim=1).values.clamp_min_(0)
        new_upper_push = torch.cummax((walk + lower_push).sub_(upper), dim=1).values.clamp_min_(0)
        if torch.equal(new_upper_push, upper_push):
            break
        upper_push = new_upper_push
    free[leaves] = walk.add_(lower_push).sub_(upper_push)
    return free


def _bounded_walk(start: torch.Tensor, moves: torch.Tensor, size: int, border: str) -> torch.Tensor:
    """Positions ``(n, T)`` on ``[0, size)`` of walks from ``start`` with per-step ``moves``.

    ``moves`` is an int8 ``(n, T)`` tensor of -1/0/+1 whose first column is 0 (the start).
    """
    free = torch.cumsum(moves, dim=1, dtype=torch.int32).add_(start[:, None].int())
    if border == "clip":
        return _clip_walk(free, size - 1)
    if border == "wrap":
        return free.remainder_(size)
    # Folding a free walk with period 2L (L = size - 1) is a lumping of its Markov chain onto the
    # reflected walk (from the edge both neighbours fold onto the one inside), so the folded path
    # has exactly the reflected walk's law. L - |f - L| maps f in [0, 2L) to [0, L].
    last = size - 1
    if last == 0:
        return free.zero_()
    return free.remainder_(2 * last).sub_(last).abs_().neg_().add_(last)


def _dilate(grid: torch.Tensor, brush_size: int, dim: int) -> torch.Tensor:
    """Spread each hidden pixel along ``dim`` to ``i - (b-1)//2 ... i + b//2`` (cut at the border).

    A square brush is separable, so two 1-D dilations by shifted ORs (``b - 1`` each) replace a
    ``b x b`` max-pool on floats and stay on compact boolean tensors.
    """
    out = grid.clone()
    length = grid.shape[dim]
    for shift in range(1, min(brush_size // 2, length - 1) + 1):
        out.narrow(dim, shift, length - shift).logical_or_(grid.narrow(dim, 0, length - shift))
    for shift in range(1, min((brush_size - 1) // 2, length - 1) + 1):
        out.narrow(dim, 0, length - shift).logical_or_(grid.narrow(dim, shift, length - shift))
    return out


class RandomWalkMask:
    """Random-walk pixel masks for inpainting (paper appendix A.2).

    A mask starts at a position drawn uniformly on the grid, then takes ``steps`` steps, each to
    one of the four neighbours (up, down, left, right) with probability 1/4; every visited
    position is hidden. See the module docstring for what each option does to the masked
    fraction.

    Parameters
    ----------
    steps: number of walk steps; the paper's 3136 is the default.
    grid: ``"pixel"`` (paper reading) walks on the pixel grid; ``"token"`` walks on the
        ``(H / patch_size, W / patch_size)`` token grid and hides each visited token's patch.
    brush_size: side of the square (in pixels) stamped at each visited pixel; 1 = the visited
        pixel only (paper reading). The square covers rows ``i - (b-1)//2 ... i + b//2`` and is
        cut at the image border.
    border: ``"clip"`` (paper reading: a move off the image keeps the walker in place),
        ``"reflect"`` or ``"wrap"``.
    steps_scaling: ``"fixed"`` (paper: ``steps`` whatever the image size) or ``"area"``
        (``round(steps * H * W / reference_size**2)`` steps).
    reference_size: image side the paper's step count refers to (224), for ``"area"`` scaling.
    patch_size: token side in pixels for ``grid="token"`` (4 for ViT-B/4).

    Shape contract
    --------------
    ``mask(n, size, generator)`` returns a boolean ``(n, H, W)`` tensor, ``True`` = hidden pixel.

    Example
    -------
    >>> import torch
    >>> from afno_repro.data.masks import RandomWalkMask
    >>> masker = RandomWalkMask(grid="token", patch_size=4)
    >>> masks = masker(4, (32, 48), generator=torch.Generator().manual_seed(0))
    >>> masks.shape
    torch.Size([4, 32, 48])
    >>> bool((masker.mask_for_index(7, seed=1, size=32) == masker.mask_for_index(7, seed=1, size=32)).all())
    True
    """

    def __init__(
        self,
        steps: int = 3136,
        grid: str = "pixel",
        brush_size: int = 1,
        border: str = "clip",
        steps_scaling: str = "fixed",
        reference_size: int = 224,
        patch_size: int = 4,
    ) -> None:
        for option, value, valid in (("grid", grid, GRIDS), ("border", border, BORDERS), ("steps_scaling", steps_scaling, STEPS_SCALINGS)):
            if value not in valid:
                close = difflib.get_close_matches(str(value), valid, n=1)
                guess = f" Did you mean data.mask.{option}={close[0]}?" if close else ""
                raise ValueError(f"data.mask.{option}={value!r} is not one of {', '.join(valid)}.{guess} "
                                 f"{_CHOICES[option]}")
        for option, value, lowest in (("steps", steps, 0), ("brush_size", brush_size, 1), ("reference_size", reference_size, 1), ("patch_size", patch_size, 1)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lowest:
                raise ValueError(f"data.mask.{option}={value!r} is not valid: it must be a whole number >= {lowest}.")
        self.steps = int(steps)
        self.grid = grid
        self.brush_size = int(brush_size)
        self.border = border
        self.steps_scaling = steps_scaling
        self.reference_size = int(reference_size)
        self.patch_size = int(patch_size)

    def __repr__(self) -> str:
        options = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in ("steps", "grid", "brush_size", "border", "steps_scaling", "reference_size", "patch_size")
        )
        return f"RandomWalkMask({options})"

    def walk_grid(self, size: int | Sequence[int]) -> tuple[int, int]:
        """The ``(rows, cols)`` grid the walk lives on for an image of ``size``."""
        height, width = _size_pair(size)
        if self.grid == "pixel":
            return height, width
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"a token-grid mask needs the image size {(height, width)} to be divisible by "
                f"patch_size={self.patch_size}. Choose an image size that is a multiple of the patch "
                "size, or use mask.grid='pixel'."
            )
        return height // self.patch_size, width // self.patch_size

    def num_steps(self, size: int | Sequence[int]) -> int:
        """Steps taken for an image of ``size`` (differs from ``steps`` only for ``"area"``)."""
        height, width = _size_pair(size)
        if self.steps_scaling == "fixed":
            return self.steps
        return round(self.steps * height * width / self.reference_size**2)

    def walk(self, n: int, size: int | Sequence[int], generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` walks; returns row and column positions, each ``(n, num_steps + 1)``.

        Positions are on the :meth:`walk_grid` (tokens for ``grid="token"``); column 0 is the start.
        """
        rows, cols = self.walk_grid(size)
        steps = self.num_steps(size)
        start = torch.randint(0, rows * cols, (n,), generator=generator)
        directions = torch.randint(0, 4, (n, steps), generator=generator, dtype=torch.int8)
        return self._walk_from(start, directions, rows, cols)

    def _walk_from(self, start: torch.Tensor, directions: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        # direction 0/1 = down/up (row +-1), 2/3 = right/left (column +-1); a zero first column
        # makes position 0 of each path the start itself.
        row_moves = torch.zeros(directions.shape[0], directions.shape[1] + 1, dtype=torch.int8)
        col_moves = torch.zeros_like(row_moves)
        torch.sub((directions == 0).to(torch.int8), (directions == 1).to(torch.int8), out=row_moves[:, 1:])
        torch.sub((directions == 2).to(torch.int8), (directions == 3).to(torch.int8), out=col_moves[:, 1:])
        row_path = _bounded_walk(torch.div(start, cols, rounding_mode="floor"), row_moves, rows, self.border)
        col_path = _bounded_walk(start % cols, col_moves, cols, self.border)
        return row_path, col_path

    def _paint(self, row_path: torch.Tensor, col_path: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Hide the visited positions in ``out``, a zeroed ``(n, H, W)`` bool tensor; returns it.

        Painting straight into the caller's output avoids concatenating per-chunk masks, which
        costs as much as drawing the walks.
        """
        n, height, width = out.shape
        rows, cols = self.walk_grid((height, width))
        grid = out.view(-1) if self.grid == "pixel" else torch.zeros(n * rows * cols, dtype=torch.bool)
        offsets = torch.arange(0, n * rows * cols, rows * cols, dtype=torch.int32)[:, None]
        grid[row_path.mul_(cols).add_(col_path).add_(offsets).view(-1).long()] = True
        if self.grid == "token":
            p = self.patch_size
            # widen columns first, then copy whole rows: much faster than one 5-D broadcast copy
            wide = grid.view(n * rows * cols, 1).expand(-1, p).reshape(n, rows, 1, cols * p)
            out.view(n, rows, p, cols * p).copy_(wide.expand(n, rows, p, cols * p))
        if self.brush_size > 1:
            out.copy_(_dilate(_dilate(out, self.brush_size, dim=1), self.brush_size, dim=2))
        return out

    def __call__(self, n: int, size: int | Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` masks of ``size`` (an int or ``(H, W)``) from ``generator``.

        Returns a boolean ``(n, H, W)`` tensor, ``True`` = hidden. The same generator state gives
        the same masks; ``None`` uses torch's global generator.
        """
        size = _size_pair(size)
        if n < 0:
            raise ValueError(f"cannot draw n={n} masks; n must be >= 0.")
        masks = torch.zeros(n, *size, dtype=torch.bool)
        for first in range(0, n, _CHUNK):
            chunk = masks[first : first + _CHUNK]
            self._paint(*self.walk(chunk.shape[0], size, generator), out=chunk)
        return masks

    def from_seeds(self, seeds: Sequence[int] | torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
        """One mask per seed, each drawn from its own generator; ``(len(seeds), H, W)`` bool.

        The mask for a seed does not depend on the other seeds in the call, which makes masks
        reproducible per item whatever the batching. The random draws loop over seeds (cheap);
        the walk and painting stay vectorised over the batch.
        """
        size = _size_pair(size)
        rows, cols = self.walk_grid(size)
        steps = self.num_steps(size)
        seeds = [int(s) for s in seeds]
        if not seeds:
            return torch.zeros(0, *size, dtype=torch.bool)
        starts, directions = [], []
        for seed in seeds:
            generator = torch.Generator().manual_seed(seed)
            starts.append(torch.randint(0, rows * cols, (1,), generator=generator))
            directions.append(torch.randint(0, 4, (1, steps), generator=generator, dtype=torch.int8))
        path = self._walk_from(torch.cat(starts), torch.cat(directions), rows, cols)
        return self._paint(*path, out=torch.zeros(len(seeds), *size, dtype=torch.bool))

    def mask_for_index(self, index: int, seed: int, size: int | Sequence[int]) -> torch.Tensor:
        """The fixed validation mask ``(H, W)`` of image ``index`` under ``seed``."""
        return self.from_seeds([derive_seed(seed, index)], size)[0]

    def masks_for_indices(self, indices: Sequence[int] | torch.Tensor, seed: int, size: int | Sequence[int]) -> torch.Tensor:
        """:meth:`mask_for_index` for many images at once; ``(len(indices), H, W)`` bool."""
        return self.from_seeds([derive_seed(seed, int(i)) for i in indices], size)

    def expected_masked_fraction(self, size: int | Sequence[int], n: int = 256, seed: int = 0) -> float:
        """Masked fraction at ``size`` measured on ``n`` masks drawn with ``seed``."""
        masks = self(n, size, generator=torch.Generator().manual_seed(seed))
        return float(masked_fraction(masks).mean())
