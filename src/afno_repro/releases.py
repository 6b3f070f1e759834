"""What the datasets' public releases hold, in one place: DatasetGAN's categories and the paper datasets'
training split sizes. Plain data with no imports, so the config checks that read it stay fast.

DatasetGAN (Zhang et al., 2021; the paper's few-shot data, A.4) releases per category a test folder under
``testing_data/``, its number of part classes (background included) and a handful of annotated training
images: the loaders (:mod:`afno_repro.data.segmentation`), the synthetic layouts the tests and the
preflight write (:mod:`afno_repro.data.layouts`) and the configs' class counts all read them from here.
"""

from __future__ import annotations

__all__ = ["DATASETGAN", "DATASETGAN_CLASSES", "PAPER_TRAIN_IMAGES"]

# category -> (test folder under testing_data/, class count, annotated training images)
DATASETGAN = {"face": ("face_34_class", 34, 16), "car": ("car_20_class", 20, 16), "cat": ("cat_16_class", 16, 30)}
DATASETGAN_CLASSES = {category: classes for category, (_, classes, _) in DATASETGAN.items()}

# Training images per epoch of the paper's datasets (their published split sizes), for synthetic data.
PAPER_TRAIN_IMAGES = {"imagenet": 1_281_167, "cityscapes": 2_975,
                      **{f"datasetgan/{category}": images for category, (_, _, images) in DATASETGAN.items()}}
