"""What the datasets' public releases hold, in one place: DatasetGAN's categories and the paper datasets'
training split sizes. Plain data with no imports, so the config checks that read it stay fast.

DatasetGAN (Zhang et al., 2021; the paper's few-shot data, A.4) releases per category a test folder under
``testing_data/``, its number of part classes (background included) and a handful of annotated training
images: the loaders (:mod:`afno_repro.data.segmentation`), the synthetic layouts the preflight writes
(:mod:`afno_repro.data.layouts`) and the configs' class counts all read them from here. The tests' fixtures
(``tests/layouts.py``) keep their own copy on purpose: an independent expectation, so a wrong value here
fails a test instead of being written into the fixture and read back.
"""

from __future__ import annotations

__all__ = ["DATASETGAN", "DATASETGAN_CLASSES", "DATASETGAN_IMAGE_SIZE", "DDPM_SEGMENTATION", "DDPM_COUNT_SIZE", "PAPER_TRAIN_IMAGES"]

# category -> (test folder under testing_data/, class count, annotated training images)
DATASETGAN = {"face": ("face_34_class", 34, 16), "car": ("car_20_class", 20, 16), "cat": ("cat_16_class", 16, 30)}
DATASETGAN_CLASSES = {category: classes for category, (_, classes, _) in DATASETGAN.items()}
# (width, height) of the training images per category (face 512x512; car the 512x384 frame of its annotations,
# rows 64:448 of the generator's 512x512 output; cat 256x256).
DATASETGAN_IMAGE_SIZE = {"face": (512, 512), "car": (512, 384), "cat": (256, 256)}

# Training images per epoch of the paper's datasets (their published split sizes), for synthetic data.
PAPER_TRAIN_IMAGES = {"imagenet": 1_281_167, "cityscapes": 2_975,
                      **{f"datasetgan/{category}": images for category, (_, _, images) in DATASETGAN.items()}}

# The DDPM-segmentation release (Baranchuk et al., ICLR 2022), a second common few-shot layout:
#   <root>/<name>/real/{train,test}/<stem>.{png,jpg} + <stem>.npy
# name -> (label ids in its masks, the unscored label, training images, test images), as the release's own
# experiments/<name>/ddpm.json give them (number_class, ignore_label, training_number, testing_number): its
# interpreter trains and scores on the first training_number / testing_number images in sorted order, and
# leaves the unscored label out of training and of the mIoU. bedroom_28's masks use ids 0 ... 28, 0 being
# unscored: its 28 classes are ids 1 ... 28.
DDPM_SEGMENTATION = {
    "bedroom_28": (29, 0, 40, 20),
    "ffhq_34": (34, 255, 20, 20),
    "cat_15": (15, 255, 30, 20),
    "horse_21": (21, 255, 30, 30),
    "celeba_19": (19, 255, 20, 500),
    "ade_bedroom_30": (30, 255, 50, 650),
}
# DDPM-segmentation's clean-up of its training masks counts each class's pixels at the resolution it trains at,
# 256 x 256 (a class under 20 pixels there becomes the unscored label: configs/data/ddpm_segmentation.yaml).
DDPM_COUNT_SIZE = 256
