"""afno-repro: a reproduction of Adaptive Fourier Neural Operators (Guibas et al., ICLR 2022)."""

__version__ = "0.1.0"
