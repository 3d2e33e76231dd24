"""The dSprites renderer against genuine frames, the paper's four splits, R^2 and the models' shapes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from iclr_lib import in_domain as idg

FULL = idg.DSPRITES_SIZES


@pytest.fixture(scope="module")
def full_grid():
    return idg.factor_grid(FULL)


def test_split_test_fractions_on_the_full_dsprites_grid(full_grid):
    fractions = {s: idg.make_split(full_grid, FULL, s).mean() for s in idg.SPLITS}
    assert fractions["extrapolation"] == pytest.approx(0.674, abs=5e-4)
    assert fractions["interpolation"] == pytest.approx(0.674, abs=5e-4)
    assert fractions["composition"] == pytest.approx(0.739, abs=5e-4)
    assert fractions["random"] == pytest.approx(fractions["extrapolation"], abs=1e-5)


@pytest.mark.parametrize("split", idg.SPLITS)
def test_splits_are_disjoint_covering_and_keep_every_shape(split):
    sizes = (3, 6, 10, 16, 16)
    grid = idg.factor_grid(sizes)
    test = idg.make_split(grid, sizes, split)
    assert test.dtype == bool and test.shape == (len(grid),) and 0 < test.mean() < 1   # train = ~test covers the rest
    for shape in range(3):
        assert (~test & (grid[:, 0] == shape)).any() and (test & (grid[:, 0] == shape)).any()


def test_extrapolation_and_interpolation_test_values():
    sizes = (3, 6, 10, 16, 16)
    grid = idg.factor_grid(sizes)
    extra = idg.make_split(grid, sizes, "extrapolation")
    inter = idg.make_split(grid, sizes, "interpolation")
    for k in range(1, 5):
        train_values = np.unique(grid[~extra, k])
        assert train_values.max() == sizes[k] - 1 - int(np.ceil(sizes[k] * 0.2))    # the top values are held out
        train_values = np.unique(grid[~inter, k])
        held_out = np.setdiff1d(np.arange(sizes[k]), train_values)
        assert len(held_out) and held_out.min() > train_values.min() and held_out.max() < train_values.max()


def test_composition_sees_every_value_but_never_the_corner():
    sizes = (3, 6, 10, 16, 16)
    grid = idg.factor_grid(sizes)
    test = idg.make_split(grid, sizes, "composition")
    for k in range(1, 5):
        assert np.array_equal(np.unique(grid[~test, k]), np.arange(sizes[k])), f"factor {k}: a value never trained"
    # every training image has at least one factor in its low set; the test images have none
    q = 1 - (1 - 0.8 ** 4) ** (1 / 4)
    low = {k: int(np.floor(sizes[k] * q)) for k in range(1, 5)}
    in_low = np.any([grid[:, k] < low[k] for k in low if low[k] > 0], axis=0)
    assert np.array_equal(in_low, ~test)


def test_composition_refuses_a_grid_where_one_factor_would_decide():
    # chapter 10's old quick grid: only the orientation (10 values) had a non-empty low set, so training
    # saw orientation 0 alone and 90 % of the grid was test
    sizes = (3, 6, 10, 8, 8)
    with pytest.raises(ValueError, match="at least two factors"):
        idg.make_split(idg.factor_grid(sizes), sizes, "composition")


@pytest.mark.parametrize("sizes, participating", [((3, 6, 40, 8, 8), 1), ((3, 6, 10, 9, 9), 3),
                                                  ((3, 6, 40, 16, 16), 3), ((3, 6, 10, 16, 16), 3), ((2, 9, 9), 2),
                                                  ((1, 6, 40, 32, 32), 3)])
def test_composition_on_small_grids_trains_every_value(sizes, participating):
    grid = idg.factor_grid(sizes)
    if participating < 2:
        with pytest.raises(ValueError, match="at least two factors"):
            idg.make_split(grid, sizes, "composition")
        return
    test = idg.make_split(grid, sizes, "composition")
    for k in range(1, len(sizes)):
        assert np.array_equal(np.unique(grid[~test, k]), np.arange(sizes[k])), f"{sizes}: factor {k} value untrained"
    assert 0.3 < test.mean() < 0.9


def test_r2_is_zero_for_the_grid_mean_and_one_for_a_perfect_prediction():
    sizes = (3, 6, 10)
    y = idg.targets(idg.factor_grid(sizes), sizes)
    assert np.allclose(idg.r2_per_factor(y, y, sizes), 1.0)
    assert np.allclose(idg.r2_per_factor(np.full_like(y, 0.5), y, sizes), 0.0, atol=1e-6)
    # on a test subset the variance still comes from the full grid
    top = y[:, 1] == 1.0
    assert idg.r2_per_factor(np.full_like(y[top], 0.5), y[top], sizes)[1] < -1


def test_collapse_ratio():
    assert idg.collapse_ratio(np.array([0.9]), np.array([0.9]), 0.6) == pytest.approx(1.0)
    assert idg.collapse_ratio(np.array([0.6]), np.array([0.9]), 0.6) == pytest.approx(0.0)


def test_renderer_matches_the_genuine_dsprites_frames(mirror, isolated_cache):
    iou = idg.reference_iou(idg.load_dsprites_reference())
    assert min(iou["square"]) >= 0.95 and min(iou["ellipse"]) >= 0.85 and np.mean(iou["ellipse"]) >= 0.95
    assert np.mean(iou["heart"]) >= 0.85 and len(iou["heart"]) == 78


def test_renderer_geometry():
    square = idg.render_dsprites(np.array([[0, 5, 0, 0, 0]]))[0]
    assert square.sum() == 400 and square[6:26, 6:26].all()                   # 20 x 20 px at (16, 16)
    small = idg.render_dsprites(np.array([[0, 0, 0, 31, 31]]))[0]
    assert small.sum() == 100 and small[43:53, 43:53].all()                   # 10 x 10 px at (48, 48)
    turned = idg.render_dsprites(np.array([[1, 5, 10, 15, 15]]))[0]          # ellipse turned by ~92 degrees
    rows, cols = np.nonzero(turned)
    assert np.ptp(rows) > np.ptp(cols)
    assert idg.render_dsprites(np.array([[2, 3, 0, 5, 5]]), size=32).shape == (1, 32, 32)
    with pytest.raises(ValueError, match="factor indices"):
        idg.render_dsprites(np.array([[3, 0, 0, 0, 0]]))


@pytest.mark.parametrize("name", ["mlp", "cnn", "coordconv", "resnet"])
def test_models_map_images_to_factor_predictions(name):
    model = idg.make_model(name, 5, 32)
    assert model(torch.zeros(4, 1, 32, 32)).shape == (4, 5)


def test_a_cnn_learns_position_and_the_pca_readout_trains_only_its_head():
    sizes = (1, 1, 1, 8, 8)
    grid = idg.factor_grid(sizes)
    full = np.stack([grid[:, 0], grid[:, 1] + 5, grid[:, 2], grid[:, 3] * 4 + 2, grid[:, 4] * 4 + 2], 1)
    images, y = idg.render_dsprites(full, 32), idg.targets(grid, sizes)
    assert np.all(y[:, :3] == 0)                                            # single-valued factors
    cnn = idg.fit_regressor(idg.make_model("cnn", 5, 32), images, y, epochs=60, lr=3e-3)
    r2 = idg.r2_per_factor(idg.predict(cnn, images)[:, 3:], y[:, 3:], sizes[3:])    # the two varied factors
    assert r2[0] > 0.8 and r2[1] > 0.8
    pca = idg.PCAReadout(images, 5, 5)
    frozen = pca.components.clone()
    idg.fit_regressor(pca, images, y, epochs=2)
    assert torch.equal(frozen, pca.components)
    with pytest.raises(ValueError, match="model must be"):
        idg.make_model("vit", 5, 32)
