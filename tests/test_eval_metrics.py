"""Tests of m3ddm_ray.evaluation.metrics: PSNR / SSIM against scikit-image, LPIPS and I3D with
RANDOM-INIT backbones (no published weights are available offline: these tests check the
definitions, parameter names, loading and call conventions, not published metric values), Fréchet
distance against closed forms, and the M3DDM+ BMSE blur proxy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from m3ddm_ray.errors import InputError, ModelLoadError
from m3ddm_ray.evaluation.metrics import (
    LPIPS,
    ClipScores,
    FVDFeatureExtractor,
    bmse,
    frechet_distance,
    mse,
    psnr,
    ssim,
    summarize_clips,
)
from m3ddm_ray.models.metric_nets import i3d
from m3ddm_ray.models.metric_nets.lpips import ALEXNET_FILENAME

# --------------------------------------------------------------------------------------------------
# Fixtures: a textured, moving RGB clip and degraded copies
# --------------------------------------------------------------------------------------------------


def _clip(t=3, h=40, w=56, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = []
    for k in range(t):
        r = 128 + 90 * np.sin(xx / 4.0 + k) * np.cos(yy / 6.0)
        g = 120 + 70 * np.cos((xx + 2 * yy) / 9.0 - k)
        b = 100 + 60 * np.sin((xx - yy) / 5.0) + rng.normal(0, 8, (h, w))
        frames.append(np.stack([r, g, b], axis=-1))
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def _degrade(gt: np.ndarray, kind: str) -> np.ndarray:
    rng = np.random.default_rng(1)
    if kind == "noise":
        out = gt.astype(np.float64) + rng.normal(0, 15, gt.shape)
    elif kind == "blur":
        out = gaussian_filter(gt.astype(np.float64), sigma=(0, 2.0, 2.0, 0))
    elif kind == "shift":
        out = np.roll(gt, shift=(2, -3), axis=(1, 2)).astype(np.float64)
    else:
        raise AssertionError(kind)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


GT = _clip()
DEGRADATIONS = ("noise", "blur", "shift")

# --------------------------------------------------------------------------------------------------
# PSNR / SSIM
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_psnr_matches_skimage_per_frame(kind):
    pred = _degrade(GT, kind)
    got = psnr(pred, GT)
    ref = np.array([sk_psnr(GT[t], pred[t], data_range=255) for t in range(len(GT))])
    assert got.shape == (len(GT),) and got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    assert np.all(got < 45)  # degraded: finite and clearly below "identical"


@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_ssim_gaussian_protocol_matches_skimage(kind):
    pred = _degrade(GT, kind)
    got = ssim(pred, GT)
    ref = np.array([
        sk_ssim(pred[t], GT[t], channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False)
        for t in range(len(GT))
    ])
    assert got.shape == (len(GT),) and got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    assert np.all(got < 0.99)


@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_ssim_uniform_window_matches_skimage_default(kind):
    pred = _degrade(GT, kind)
    got = ssim(pred, GT, window="uniform")
    ref = np.array([sk_ssim(pred[t], GT[t], channel_axis=-1, data_range=255) for t in range(len(GT))])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    # the two windows are different measures: make sure the option is not ignored
    assert np.abs(got - ssim(pred, GT)).max() > 1e-3


def test_perfect_reconstruction_gives_inf_psnr_and_unit_ssim():
    np.testing.assert_array_equal(psnr(GT, GT), np.full(len(GT), np.inf))
    np.testing.assert_array_equal(ssim(GT.copy(), GT), np.ones(len(GT)))
    np.testing.assert_array_equal(ssim(GT.copy(), GT, window="uniform"), np.ones(len(GT)))
    # one frame wrong, the others perfect: only that frame is finite / below 1
    pred = GT.copy()
    pred[1] = _degrade(GT, "noise")[1]
    p, s = psnr(pred, GT), ssim(pred, GT)
    assert np.isinf(p[0]) and np.isinf(p[2]) and np.isfinite(p[1])
    assert s[0] == 1.0 and s[2] == 1.0 and s[1] < 0.95


def test_psnr_and_mse_on_generated_region_only():
    mask = np.zeros(GT.shape[1:3], np.uint8)
    mask[:, :10] = 1  # a generated band on the left
    pred = GT.copy()
    pred[:, :, 20:] = 255 - pred[:, :, 20:]  # errors only in the known region
    assert np.all(np.isinf(psnr(pred, GT, mask=mask)))
    assert np.all(mse(pred, GT, mask=mask) == 0)
    pred2 = GT.astype(np.int16)
    pred2[:, :, :10] += 10  # +10 levels on every generated pixel / channel (no clipping below)
    pred2 = np.clip(pred2, 0, 255).astype(np.uint8)
    diff = pred2[:, :, :10].astype(np.float64) - GT[:, :, :10]
    expect = 10 * np.log10(255.0 ** 2 / (diff ** 2).reshape(len(GT), -1).mean(axis=1))
    np.testing.assert_allclose(psnr(pred2, GT, mask=mask), expect, rtol=1e-12)
    np.testing.assert_allclose(mse(pred2, GT), ((pred2 / 255.0 - GT / 255.0) ** 2).reshape(len(GT), -1).mean(1),
                               rtol=1e-12)
    assert np.all(np.isnan(psnr(pred2, GT, mask=np.zeros_like(mask))))


def test_frame_metrics_reject_bad_inputs():
    with pytest.raises(InputError, match="dtype"):
        psnr(GT.astype(np.float32), GT)
    with pytest.raises(InputError, match="shape"):
        ssim(GT[:, :, :-1], GT)
    with pytest.raises(InputError, match=">= 11"):
        ssim(GT[:, :10, :10], GT[:, :10, :10])
    with pytest.raises(InputError, match="window"):
        ssim(GT, GT, window="box")
    with pytest.raises(InputError, match="mask"):
        psnr(GT, GT, mask=np.ones((3, 3), np.uint8))


# --------------------------------------------------------------------------------------------------
# LPIPS (random-init AlexNet + heads)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lpips_random():
    return LPIPS(random_init=True, seed=0)


def _lpips_reference(trunk_sd, heads_sd, x0, x1):
    """Independent functional LPIPS (richzhang/PerceptualSimilarity v0.1 definition)."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(x):
        x = (x - shift) / scale
        out = []
        x = F.relu(F.conv2d(x, trunk_sd["features.0.weight"], trunk_sd["features.0.bias"], stride=4, padding=2))
        out.append(x)
        x = F.max_pool2d(x, 3, 2)
        x = F.relu(F.conv2d(x, trunk_sd["features.3.weight"], trunk_sd["features.3.bias"], padding=2))
        out.append(x)
        x = F.max_pool2d(x, 3, 2)
        for i in (6, 8, 10):
            x = F.relu(F.conv2d(x, trunk_sd[f"features.{i}.weight"], trunk_sd[f"features.{i}.bias"], padding=1))
            out.append(x)
        return out

    total = 0.0
    for k, (a, b) in enumerate(zip(feats(x0), feats(x1))):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = heads_sd[f"lin{k}.model.1.weight"]  # (1, C, 1, 1)
        total = total + ((a - b) ** 2 * w).sum(1).mean(dim=(1, 2))
    return total


def test_lpips_random_init_zero_for_identical_positive_for_different(lpips_random):
    a = _clip(t=3, h=64, w=64, seed=2)
    b = _degrade(a, "noise")
    same = lpips_random(a, a.copy())
    diff = lpips_random(a, b)
    assert same.shape == (3,) and same.dtype == np.float64 and diff.shape == (3,)
    np.testing.assert_array_equal(same, np.zeros(3))
    assert np.all(diff > 1e-4)
    assert "random-init" in lpips_random.metric_impl


def test_lpips_random_init_matches_functional_definition(lpips_random):
    a = _clip(t=2, h=64, w=72, seed=3)
    b = _degrade(a, "blur")
    got = lpips_random(a, b)
    trunk = lpips_random.net.net.state_dict()
    heads = lpips_random.net.heads_state_dict()
    to = lambda v: torch.from_numpy(v).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    with torch.no_grad():
        ref = _lpips_reference(trunk, heads, to(a), to(b)).double().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)


def test_lpips_parameter_names_and_strict_file_round_trip(lpips_random, tmp_path):
    trunk = lpips_random.net.net.state_dict()
    assert sorted(trunk) == sorted(f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias"))
    assert tuple(trunk["features.0.weight"].shape) == (64, 3, 11, 11)
    heads = lpips_random.net.heads_state_dict()
    assert {k: tuple(v.shape) for k, v in heads.items()} == {
        f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))
    }
    # torchvision-style file: features.* plus classifier.* (must be ignored)
    tv = dict(trunk)
    tv["classifier.1.weight"] = torch.zeros(4096, 9216)[:2, :3]
    tv["classifier.1.bias"] = torch.zeros(2)
    bpath, lpath = tmp_path / ALEXNET_FILENAME, tmp_path / "alex.pth"
    torch.save(tv, bpath)
    torch.save(heads, lpath)
    loaded = LPIPS(backbone_weights=bpath, linear_weights=lpath)
    a = _clip(t=2, h=48, w=48, seed=4)
    b = _degrade(a, "shift")
    np.testing.assert_array_equal(loaded(a, b), lpips_random(a, b))
    assert f"backbone={bpath} sha256:" in loaded.metric_impl and "random-init" not in loaded.metric_impl

    # strictness: a missing head, or a head of the wrong shape, is a ModelLoadError
    bad = dict(heads)
    del bad["lin4.model.1.weight"]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ModelLoadError, match="lin4"):
        LPIPS(backbone_weights=bpath, linear_weights=tmp_path / "bad.pth")
    bad = dict(heads)
    bad["lin0.model.1.weight"] = torch.zeros(1, 65, 1, 1)
    torch.save(bad, tmp_path / "bad2.pth")
    with pytest.raises(ModelLoadError, match="lin0"):
        LPIPS(backbone_weights=bpath, linear_weights=tmp_path / "bad2.pth")
    torch.save({"classifier.1.bias": torch.zeros(2)}, tmp_path / "nofeat.pth")
    with pytest.raises(ModelLoadError, match="features"):
        LPIPS(backbone_weights=tmp_path / "nofeat.pth", linear_weights=lpath)


def test_lpips_missing_weights_name_the_expected_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    expected = tmp_path / "th" / "hub" / "checkpoints" / ALEXNET_FILENAME
    with pytest.raises(ModelLoadError) as e:
        LPIPS()
    assert str(expected) in str(e.value) and "backbone_weights" in str(e.value)
    torch.save(LPIPS(random_init=True).net.net.state_dict(), tmp_path / "alexnet.pth")
    with pytest.raises(ModelLoadError) as e:
        LPIPS(backbone_weights=tmp_path / "alexnet.pth", linear_weights=tmp_path / "nope.pth")
    assert "nope.pth" in str(e.value) and "pip install lpips" in str(e.value)
    with pytest.raises(InputError):
        LPIPS(backbone_weights=tmp_path / "alexnet.pth", random_init=True)


def test_lpips_rejects_frames_too_small_for_alexnet(lpips_random):
    a = _clip(t=1, h=30, w=64)
    with pytest.raises(InputError, match=">= 31"):
        lpips_random(a, a)


# --------------------------------------------------------------------------------------------------
# I3D / FVD features (random-init)
# --------------------------------------------------------------------------------------------------


def test_i3d_same_padding_and_frame_minimum():
    assert i3d.same_padding(224, 7, 2) == (2, 3)  # even size: kernel - stride = 5, extra after
    assert i3d.same_padding(9, 7, 2) == (3, 3)  # odd size: kernel - size % stride = 6
    assert i3d.same_padding(5, 3, 1) == (1, 1)
    assert i3d.same_padding(4, 1, 1) == (0, 0)
    assert i3d.min_frames() == 9 and i3d.output_time_steps(16) == 1


def test_i3d_videogpt_parameter_names_and_strict_round_trip(tmp_path):
    ext = FVDFeatureExtractor("videogpt", random_init=True, seed=1)
    sd = ext.model.state_dict()
    for key, shape in {
        "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7),
        "Conv3d_1a_7x7.bn.running_var": (64,),
        "Conv3d_2c_3x3.conv3d.weight": (192, 64, 3, 3, 3),
        "Mixed_3b.b0.conv3d.weight": (64, 192, 1, 1, 1),
        "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3),
        "Mixed_4f.b3b.conv3d.weight": (128, 528, 1, 1, 1),
        "Mixed_5b.b0.conv3d.weight": (256, 832, 1, 1, 1),
        "Mixed_5c.b2b.bn.weight": (128,),
        "logits.conv3d.weight": (400, 1024, 1, 1, 1),
        "logits.conv3d.bias": (400,),
    }.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith(("MaxPool", "avg_pool", "dropout")) or ".b3a." in k for k in sd)
    assert not any("conv3d.bias" in k for k in sd if not k.startswith("logits."))

    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save(sd, path)
    loaded = FVDFeatureExtractor("videogpt", path)
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert f"{path} sha256:" in loaded.metric_impl

    bad = dict(sd)
    del bad["Mixed_4c.b1a.conv3d.weight"]
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError, match="Mixed_4c.b1a.conv3d.weight"):
        FVDFeatureExtractor("videogpt", tmp_path / "bad.pt")
    bad = dict(sd)
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad2.pt")
    with pytest.raises(ModelLoadError, match="extra.weight"):
        FVDFeatureExtractor("videogpt", tmp_path / "bad2.pt")


def test_i3d_videogpt_random_init_forward_gives_400d_features():
    """Random-init I3D (12.7 M parameters) at 224 x 224 on CPU: the slowest test here (~6 s)."""
    ext = FVDFeatureExtractor("videogpt", random_init=True, seed=0, batch_size=2)
    vids = np.zeros((2, 9, 24, 32, 3), np.uint8)  # a black clip and a moving textured one
    vids[1] = _clip(t=9, h=24, w=32, seed=5)
    feats = ext(vids)
    assert feats.shape == (2, 400) and feats.dtype == np.float64
    assert np.isfinite(feats).all()
    assert np.abs(feats[0] - feats[1]).max() > 1e-6
    assert "random-init" in ext.metric_impl


def test_videogpt_preprocessing_resizes_short_side_and_centre_crops():
    ext = FVDFeatureExtractor("videogpt", random_init=True)
    v = np.full((9, 32, 64, 3), 128, np.uint8)
    v[:, :, :12] = 0  # left and right margins fall outside the centre crop (cols 16..47)
    v[:, :, 52:] = 255
    x = ext.preprocess([v])
    assert tuple(x.shape) == (1, 3, 9, 224, 224) and x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), (128 / 255 - 0.5) * 2, atol=1e-6)
    half = FVDFeatureExtractor("videogpt", random_init=True, input_range=0.5).preprocess([v])
    np.testing.assert_allclose(half.numpy(), 128 / 255 - 0.5, atol=1e-6)
    tall = ext.preprocess([np.zeros((9, 70, 30, 3), np.uint8)])
    assert tuple(tall.shape) == (1, 3, 9, 224, 224) and float(tall.min()) == -1.0
    with pytest.raises(InputError, match="at least 9"):
        ext(np.zeros((1, 8, 32, 32, 3), np.uint8))


class _RecordingI3D(torch.nn.Module):
    """Stand-in for StyleGAN-V's TorchScript I3D that reports how it was called."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        n = x.shape[0]
        info = torch.stack([
            x.amin(dim=(1, 2, 3, 4)), x.amax(dim=(1, 2, 3, 4)),
            torch.full((n,), float(rescale)), torch.full((n,), float(resize)),
            torch.full((n,), float(return_features)),
            torch.full((n,), float(x.shape[1])), torch.full((n,), float(x.shape[2])),
            torch.full((n,), float(x.shape[3])), torch.full((n,), float(x.shape[4])),
            torch.full((n,), 1.0 if x.dtype == torch.float32 else 0.0),
        ], dim=1)
        return torch.cat([info, torch.zeros(n, 390)], dim=1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.* deprecation notices
def test_styleganv_torchscript_loaded_and_called_with_published_convention(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(_RecordingI3D()), str(path))
    ext = FVDFeatureExtractor("stylegan-v", path, batch_size=2)
    v = np.random.default_rng(0).integers(1, 255, size=(3, 5, 20, 24, 3), dtype=np.uint8)
    v[:, 0, 0, 0] = (0, 255, 7)  # make the extremes present
    feats = ext(v)
    assert feats.shape == (3, 400)
    np.testing.assert_allclose(feats[:, 0], -1.0)  # x / 127.5 - 1 -> exactly [-1, 1]
    np.testing.assert_allclose(feats[:, 1], 1.0)
    np.testing.assert_array_equal(feats[:, 2:5], [[0, 1, 1]] * 3)  # rescale=False, resize=True, feats
    np.testing.assert_array_equal(feats[:, 5:10], [[3, 5, 20, 24, 1]] * 3)  # (N, 3, T, H, W) float32
    assert f"{path} sha256:" in ext.metric_impl


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fvd_missing_or_wrong_weights_raise_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="i3d_pretrained_400.pt"):
        FVDFeatureExtractor("videogpt", tmp_path / "missing.pt")
    with pytest.raises(ModelLoadError, match="dropbox"):
        FVDFeatureExtractor("stylegan-v", tmp_path / "i3d_torchscript.pt")
    with pytest.raises(ModelLoadError, match="no weights path"):
        FVDFeatureExtractor("videogpt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "sd.pt")  # a state dict is not TorchScript
    with pytest.raises(ModelLoadError, match="TorchScript"):
        FVDFeatureExtractor("stylegan-v", tmp_path / "sd.pt")
    with pytest.raises(InputError, match="kind"):
        FVDFeatureExtractor("tf-hub", random_init=True)


# --------------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------------


def _exact_moments(rng, n, mean, cov):
    """n samples whose sample mean / unbiased sample covariance are exactly ``mean`` / ``cov``."""
    d = len(mean)
    z = rng.normal(size=(n, d))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # whiten: cov(z) = I
    return z @ np.linalg.cholesky(cov).T + mean


def test_frechet_distance_identical_sets_is_zero():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
    assert frechet_distance(f, f.copy()) == pytest.approx(0.0, abs=1e-8)
    g = rng.normal(size=(6, 12))  # fewer samples than dims: singular covariances
    assert frechet_distance(g, g.copy()) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_diagonal_gaussians_analytic():
    rng = np.random.default_rng(1)
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    sd_a, sd_b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 1.0, 0.5])
    a = _exact_moments(rng, 500, mu_a, np.diag(sd_a ** 2))
    b = _exact_moments(rng, 400, mu_b, np.diag(sd_b ** 2))
    expect = np.sum((mu_a - mu_b) ** 2) + np.sum((sd_a - sd_b) ** 2)  # 7.25 + 5 = 12.25
    assert frechet_distance(a, b) == pytest.approx(expect, rel=1e-9)


def test_frechet_distance_general_2d_gaussians_closed_form():
    # for 2 x 2 matrices with positive eigenvalues, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M))
    rng = np.random.default_rng(2)
    s_a = np.array([[2.0, 0.8], [0.8, 1.0]])
    s_b = np.array([[0.5, -0.3], [-0.3, 1.5]])
    mu_a, mu_b = np.array([0.3, -1.0]), np.array([-0.2, 0.4])
    m = s_a @ s_b
    tr_sqrt = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    expect = np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * tr_sqrt
    got = frechet_distance(_exact_moments(rng, 50, mu_a, s_a), _exact_moments(rng, 80, mu_b, s_b))
    assert got == pytest.approx(expect, rel=1e-9)
    # swapping the sets does not change the distance
    assert frechet_distance(_exact_moments(rng, 80, mu_b, s_b), _exact_moments(rng, 50, mu_a, s_a)) == \
        pytest.approx(expect, rel=1e-9)


def test_frechet_distance_rejects_bad_inputs():
    with pytest.raises(InputError, match="at least 2"):
        frechet_distance(np.zeros((1, 4)), np.zeros((5, 4)))
    with pytest.raises(InputError, match="dims"):
        frechet_distance(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(InputError, match="NaN"):
        frechet_distance(np.full((3, 2), np.nan), np.zeros((3, 2)))


# --------------------------------------------------------------------------------------------------
# BMSE
# --------------------------------------------------------------------------------------------------


def test_bmse_equals_m3ddm_plus_reference_formula_and_ignores_channel_order():
    f = _clip(t=3, h=40, w=50, seed=7)
    ref = []
    for frame in f[..., ::-1]:  # the reference reads BGR frames with OpenCV
        x = frame.astype(np.float32) / 255.0
        ref.append(np.mean((x - gaussian_filter(x, 5)) ** 2))
    got = bmse(f)
    assert got.shape == (3,) and got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    np.testing.assert_allclose(bmse(f[..., ::-1].copy()), got, rtol=1e-12)


def test_bmse_decreases_with_blur_and_is_zero_for_flat_frames():
    f = _clip(t=2, h=64, w=64, seed=8)
    sigmas = (0.0, 0.7, 1.5, 3.0, 6.0)
    vals = []
    for s in sigmas:
        g = f if s == 0 else np.clip(np.rint(gaussian_filter(f.astype(np.float64), (0, s, s, 0))), 0, 255)
        vals.append(bmse(g.astype(np.uint8)).mean())
    assert all(a > b for a, b in zip(vals, vals[1:])), vals  # more blur -> smaller BMSE
    assert vals[-1] < 0.5 * vals[0]
    np.testing.assert_array_equal(bmse(np.full((2, 20, 20, 3), 77, np.uint8)), 0.0)


def test_bmse_mask_variant():
    f = _clip(t=2, h=48, w=64, seed=9)
    f[:, :, 32:] = 128  # right half flat
    mask = np.zeros((48, 64), np.uint8)
    np.testing.assert_allclose(bmse(f, mask=np.ones_like(mask)), bmse(f), rtol=1e-12)
    assert np.all(np.isnan(bmse(f, mask=mask)))
    left, right = mask.copy(), mask.copy()
    left[:, :24] = 1
    right[:, 40:] = 1
    assert np.all(bmse(f, mask=left) > 5 * bmse(f, mask=right))


# --------------------------------------------------------------------------------------------------
# ClipScores / summarize_clips
# --------------------------------------------------------------------------------------------------


def test_clip_scores_row_and_dataset_summary(lpips_random):
    gt = _clip(t=3, h=48, w=64, seed=10)
    mask = np.zeros((48, 64), np.uint8)
    mask[:, :16] = 1
    mask[:, 48:] = 1
    pred = gt.copy()
    pred[:, mask.astype(bool)] = _degrade(gt, "blur")[:, mask.astype(bool)]  # blurred border only

    row = ClipScores(lpips=lpips_random)(pred, gt, mask)
    assert row["psnr"] == pytest.approx(psnr(pred, gt).mean())
    assert row["psnr_generated"] == pytest.approx(psnr(pred, gt, mask=mask).mean())
    assert row["psnr_generated"] < row["psnr"]  # the error is concentrated in the generated band
    assert row["ssim"] == pytest.approx(ssim(pred, gt).mean())
    assert row["lpips"] == pytest.approx(lpips_random(pred, gt).mean()) and row["lpips"] > 0
    assert row["bmse"] == pytest.approx(bmse(pred).mean())
    assert row["bmse"] < row["bmse_gt"]  # blurred output is less sharp than the truth
    assert row["num_frames"] == 3
    impl = row["metric_impl"]
    assert set(impl) == {"psnr", "ssim", "lpips", "bmse"}
    assert "random-init" in impl["lpips"] and "M3DDM-Plus" in impl["bmse"]

    no_lpips = ClipScores()(gt, gt, mask)
    assert math.isnan(no_lpips["lpips"]) and no_lpips["metric_impl"]["lpips"] == "not computed"
    assert no_lpips["psnr"] == math.inf and no_lpips["ssim"] == 1.0

    row2 = ClipScores(lpips=lpips_random)(gt, gt, mask)  # perfect clip: psnr inf
    summary = summarize_clips([row, row2])
    assert summary["num_clips"] == 2 and summary["num_frames"] == 6
    assert summary["psnr"] == pytest.approx(row["psnr"]) and summary["psnr_nonfinite"] == 1
    assert summary["ssim"] == pytest.approx((row["ssim"] + 1.0) / 2)
    with pytest.raises(InputError, match="metric_impl"):
        summarize_clips([row, no_lpips])
