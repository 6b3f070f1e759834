"""user_message: our message, without the worker traceback torch wraps around a DataLoader worker's error."""

import pytest
from torch.utils.data import DataLoader, Dataset

from afno_repro.data import DataError, InpaintingDataModule, load_image, user_message
from afno_repro.data.imagenet import IMAGENET_ARCHIVE

MESSAGE = "image file 'n01440764_0.JPEG' is corrupt: first line.\n  an indented second line: re-extract it."


class _FailingImages(Dataset):
    """Raises ``MESSAGE`` as a DataError caused by an OSError, as the image loader does."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        try:
            raise OSError("image file is truncated")
        except OSError as error:
            raise DataError(MESSAGE) from error


def test_message_of_an_error_raised_in_this_process_is_its_own():
    assert user_message(DataError(MESSAGE)) == MESSAGE
    assert user_message(KeyError("missing")) == "'missing'"


def test_worker_traceback_is_removed_and_the_type_kept():
    with pytest.raises(DataError) as error:
        next(iter(DataLoader(_FailingImages(), num_workers=1)))
    assert "DataLoader worker process 0" in str(error.value) and "Traceback" in str(error.value)
    assert user_message(error.value) == MESSAGE


def test_a_worker_error_from_the_datamodule_reads_as_in_process(imagenet_root, imagenet_classes):
    corrupt = imagenet_root / "val" / imagenet_classes[0] / f"{imagenet_classes[0]}_0.JPEG"
    corrupt.write_bytes(b"this is not a JPEG")
    with pytest.raises(DataError) as in_process:
        load_image(str(corrupt), dataset=IMAGENET_ARCHIVE)
    loader = InpaintingDataModule(name="imagenet", root=imagenet_root, image_size=16, batch_size=2, num_workers=1).test_dataloader()
    with pytest.raises(DataError) as from_worker:
        next(iter(loader))
    assert user_message(from_worker.value) == str(in_process.value)


def test_a_wrapper_without_an_exception_line_is_returned_whole():
    odd = RuntimeError("Caught DataError in DataLoader worker process 3.\nOriginal Traceback (most recent call last):\n  File \"x.py\", line 1\n")
    assert user_message(odd) == str(odd)
