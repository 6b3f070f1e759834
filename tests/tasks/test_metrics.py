"""The inpainting metrics and loss, held to scikit-image and to hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from afno_repro.tasks import composite, image_quality_metrics, masked_mse


def noisy_pairs(n: int = 5, height: int = 40, width: int = 36, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth ground truths and predictions with a different noise level per image.

    Unequal noise levels make the per-image mean PSNR differ from the batch-pooled one, so a
    wrong reduction cannot pass.
    """
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 5, 5, generator=gen)
    target = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)
    noise_std = torch.logspace(-2.5, -0.7, n).view(n, 1, 1, 1)
    prediction = (target + noise_std * torch.randn(target.shape, generator=gen)).clamp(0, 1)
    return prediction, target


def to_hwc(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).double().numpy()


def test_psnr_is_the_mean_of_per_image_psnrs_as_in_scikit_image():
    prediction, target = noisy_pairs()
    expected = np.mean([
        peak_signal_noise_ratio(gt, pred, data_range=1)
        for gt, pred in zip(to_hwc(target), to_hwc(prediction))
    ])
    ours = image_quality_metrics()(prediction, target)["psnr"].item()
    assert ours == pytest.approx(expected, abs=1e-4)
    pooled = PeakSignalNoiseRatio(data_range=1.0)(prediction, target).item()
    assert abs(pooled - expected) > 0.5, "the test images no longer tell per-image from pooled PSNR"


def test_ssim_matches_scikit_image_gaussian_population_covariance():
    # gaussian_weights=True, sigma=1.5 (an 11x11 window at scikit-image's truncate=3.5) and
    # use_sample_covariance=False are Wang et al. (2004)'s SSIM, which torchmetrics implements;
    # scikit-image's defaults (7x7 uniform window, sample covariance) are a different SSIM.
    prediction, target = noisy_pairs(height=33, width=45, seed=1)
    expected = np.mean([
        structural_similarity(gt, pred, channel_axis=-1, data_range=1, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False)
        for gt, pred in zip(to_hwc(target), to_hwc(prediction))
    ])
    ours = image_quality_metrics()(prediction, target)["ssim"].item()
    assert ours == pytest.approx(expected, abs=1e-5)
    with_borders = StructuralSimilarityIndexMeasure(data_range=1.0)(prediction, target).item()
    assert abs(with_borders - expected) > 1e-2, "the test images no longer tell cropped from uncropped SSIM"


def test_metrics_average_over_images_not_over_batches():
    prediction, target = noisy_pairs(n=5, seed=2)
    all_at_once = image_quality_metrics()(prediction, target)
    metrics = image_quality_metrics()
    metrics.update(prediction[:4], target[:4])
    metrics.update(prediction[4:], target[4:])
    accumulated = metrics.compute()
    for name in ("psnr", "ssim"):
        assert accumulated[name].item() == pytest.approx(all_at_once[name].item(), abs=1e-5)


def masks_and_images(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    prediction = torch.randn(2, 3, 7, 9, generator=gen)
    target = torch.rand(2, 3, 7, 9, generator=gen)
    mask = (torch.rand(2, 1, 7, 9, generator=gen) < 0.3).float()
    return prediction, target, mask


def test_masked_mse_equals_a_hand_computation():
    prediction, target, mask = masks_and_images()
    errors = [
        float(prediction[b, c, i, j] - target[b, c, i, j]) ** 2
        for b, i, j in zip(*np.nonzero(mask[:, 0].numpy()))
        for c in range(3)
    ]
    assert len(errors) > 0
    assert masked_mse(prediction, target, mask).item() == pytest.approx(np.mean(errors), rel=1e-6)


def test_masked_mse_ignores_visible_pixels_and_sees_hidden_ones():
    prediction, target, mask = masks_and_images(seed=4)
    loss = masked_mse(prediction, target, mask)
    visible_changed = prediction + 5.0 * (1 - mask)
    assert masked_mse(visible_changed, target, mask).item() == pytest.approx(loss.item(), rel=1e-6)
    hidden_changed = prediction + 5.0 * mask
    assert masked_mse(hidden_changed, target, mask).item() > loss.item() + 1.0


def test_masked_mse_is_zero_with_a_finite_gradient_when_nothing_is_hidden():
    prediction = torch.randn(2, 3, 5, 5, requires_grad=True)
    loss = masked_mse(prediction, torch.rand(2, 3, 5, 5), torch.zeros(2, 1, 5, 5))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(prediction.grad, torch.zeros_like(prediction))


def test_composite_equals_the_hand_composite():
    prediction, target, mask = masks_and_images(seed=5)
    hidden = np.broadcast_to(mask.numpy() > 0.5, prediction.shape).copy()
    expected = np.where(hidden, np.clip(prediction.numpy(), 0, 1), target.numpy())
    ours = composite(prediction, target, mask)
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-7)
    assert torch.equal(ours[~torch.from_numpy(hidden)], target[~torch.from_numpy(hidden)])


def test_ssim_is_computed_in_float32_under_bf16_autocast():
    """Validation runs under autocast with bf16-mixed precision; the SSIM window is a convolution
    that autocast would run in bf16. The metric must give its float32 value there too."""
    torch.manual_seed(0)
    target = torch.rand(2, 3, 32, 32)
    preds = (target + 0.05 * torch.randn_like(target)).clamp(0, 1)
    reference = image_quality_metrics()(preds, target)["ssim"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = image_quality_metrics()(preds, target)["ssim"]
    assert abs(float(under_autocast) - float(reference)) < 1e-6
