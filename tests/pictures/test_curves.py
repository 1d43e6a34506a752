"""results.png and PR_curve.png (optkit/pictures/curves.py): which panels and lines a figure has, that the
PNG files are written whole (or not at all), for detector and classifier results, one epoch, gaps."""

from __future__ import annotations

import errno
import warnings

import numpy as np
import pytest
from PIL import Image

from optkit.io import WriteError
from optkit.pictures import curves

DETECT_COLUMNS = (
    "epoch,train_box_loss,train_cls_loss,train_dfl_loss,val_box_loss,val_cls_loss,val_dfl_loss,"
    "precision,recall,map50,map,lr_weights,lr_norm,lr_bias,time"
)
CLASSIFY_COLUMNS = "epoch,train_loss,val_loss,top1,top5,lr_weights,lr_norm,lr_bias,time"


@pytest.fixture(autouse=True)
def _close_figures():
    """The figures the tests inspect are not saved (saving closes them): close them after each test."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _detect_csv(path, epochs: int):
    rng = np.random.default_rng(0)
    lines = [DETECT_COLUMNS]
    for e in range(1, epochs + 1):
        losses = [f"{2.0 / e + 0.05 * rng.random():.5f}" for _ in range(6)]
        metrics = [f"{1 - 1 / (e + 1):.5f}" for _ in range(4)]
        lines.append(",".join([str(e), *losses, *metrics, "0.01", "0.01", "0.01", f"{3.5 * e:.3f}"]))
    path.write_text("\n".join(lines) + "\n")
    return path


def _png_size(path):
    with Image.open(path) as im:
        im.verify()  # the whole file decodes: not truncated
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def _titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_visible()]


def test_detector_results_png_has_a_panel_per_loss_pair_and_metric(tmp_path):
    csv = _detect_csv(tmp_path / "results.csv", epochs=5)
    epochs, series = curves.read_results_columns(csv)
    assert list(epochs) == [1, 2, 3, 4, 5]
    assert not any(c.startswith("lr_") or c in ("epoch", "time") for c in series)
    fig = curves.results_figure(epochs, series)
    assert _titles(fig) == ["box loss", "cls loss", "dfl loss", "precision", "recall", "mAP50", "mAP50-95"]
    rows, cols, places = curves.panel_layout(3, 4)
    assert (rows, cols) == (2, 4) and places == [0, 1, 2, 4, 5, 6, 7]  # metrics start the second row
    box = next(ax for ax in fig.axes if ax.get_title() == "box loss")
    assert [t.get_text() for t in box.get_legend().get_texts()] == ["train", "val"]
    np.testing.assert_allclose(box.get_lines()[1].get_ydata(), series["val_box_loss"])

    curves.plot_results(csv, tmp_path / "results.png")
    w, h = _png_size(tmp_path / "results.png")
    assert 1000 <= w <= 2400 and 400 <= h <= 1200


def test_classifier_results_one_epoch_one_row(tmp_path):
    csv = tmp_path / "results.csv"
    csv.write_text(CLASSIFY_COLUMNS + "\n1,2.3,2.1,0.31,0.78,0.01,0.01,0.01,3.2\n")
    epochs, series = curves.read_results_columns(csv)
    fig = curves.results_figure(epochs, series)
    assert _titles(fig) == ["loss", "top-1", "top-5"]
    for ax in fig.axes:
        low, high = ax.get_xlim()
        assert low <= 0 and high >= 2  # whole epochs around the single point, not 0.95 .. 1.05
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "identical limits" or empty-mean warnings either
        curves.plot_results(csv, tmp_path / "results.png")
    w, h = _png_size(tmp_path / "results.png")
    assert 800 <= w <= 1600 and 200 <= h <= 600


def test_empty_and_nan_cells_are_gaps_and_an_empty_column_says_so(tmp_path):
    csv = tmp_path / "results.csv"
    csv.write_text(
        CLASSIFY_COLUMNS + "\n"
        "1,2.3,,,0.7,0.01,0.01,0.01,1.0\n"
        "2,nan,2.0,,0.8,0.01,0.01,0.01,1.0\n"
        "3,2.1,1.9,,,0.01,0.01,0.01,1.0\n"
    )
    epochs, series = curves.read_results_columns(csv)
    assert np.isnan(series["val_loss"][0]) and np.isnan(series["train_loss"][1])
    fig = curves.results_figure(epochs, series)
    top1 = next(ax for ax in fig.axes if ax.get_title() == "top-1")
    assert not top1.get_lines() and [t.get_text() for t in top1.texts] == ["no values"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        curves.plot_results(csv, tmp_path / "results.png")
    _png_size(tmp_path / "results.png")


def test_header_only_csv_still_draws(tmp_path):
    csv = tmp_path / "results.csv"
    csv.write_text(DETECT_COLUMNS + "\n")
    curves.plot_results(csv, tmp_path / "results.png")
    _png_size(tmp_path / "results.png")


def test_unpaired_losses_keep_their_split_in_the_title():
    losses, metrics = curves.results_panels(["train_loss", "val_other", "top1", "weird_col"])
    assert losses == [("train loss", ["train_loss"]), ("val other", ["val_other"])]
    assert metrics == [("top-1", ["top1"]), ("weird col", ["weird_col"])]


def test_smoothed_line_only_past_ten_epochs(tmp_path):
    for epochs, lines in ((10, 1), (11, 2)):
        csv = _detect_csv(tmp_path / f"r{epochs}.csv", epochs)
        fig = curves.results_figure(*curves.read_results_columns(csv))
        recall = next(ax for ax in fig.axes if ax.get_title() == "recall")
        assert len(recall.get_lines()) == lines


def test_smoothing_keeps_a_constant_and_calms_noise():
    np.testing.assert_allclose(curves.smoothed(np.full(30, 0.5)), 0.5)
    noise = np.random.default_rng(1).normal(size=200)
    assert curves.smoothed(noise).std() < 0.5 * noise.std()


def _pr_inputs():
    recall = np.linspace(0, 1, 101)
    precision = np.stack([np.clip(1.2 - recall, 0, 1), np.clip(1.0 - recall, 0, 1), np.full(101, -1.0)])
    return recall, precision, np.array([0.9, 0.6, -1.0])


def test_pr_curve_skips_a_class_without_ground_truth(tmp_path):
    recall, precision, ap = _pr_inputs()
    fig = curves.pr_figure(recall, precision, ["cat", "dog", "bird"], ap)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["cat 0.900", "dog 0.600", "all classes 0.750 mAP@0.5"]
    mean = ax.get_lines()[-1]
    assert mean.get_linewidth() > ax.get_lines()[0].get_linewidth()  # the thick line is the mean
    np.testing.assert_allclose(mean.get_ydata(), (precision[0] + precision[1]) / 2)
    assert ax.get_xlim() == (0, 1) and ax.get_ylim()[0] == 0 and ax.get_ylim()[1] <= 1.02

    curves.plot_pr_curve(recall, precision, ["cat", "dog", "bird"], ap, tmp_path / "PR_curve.png")
    w, h = _png_size(tmp_path / "PR_curve.png")
    assert 700 <= w <= 1400 and 500 <= h <= 1000


def test_pr_curve_with_many_classes_names_only_the_mean(tmp_path):
    recall = np.linspace(0, 1, 101)
    precision = np.tile(np.clip(1.1 - recall, 0, 1), (12, 1))
    fig = curves.pr_figure(recall, precision, {k: f"c{k}" for k in range(12)}, np.full(12, 0.5))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["all classes 0.500 mAP@0.5"]
    assert len(fig.axes[0].get_lines()) == 13


def test_pr_curve_without_any_ground_truth_and_bad_shapes(tmp_path):
    recall = np.linspace(0, 1, 101)
    curves.plot_pr_curve(recall, np.full((2, 101), -1.0), ["a", "b"], [-1, -1], tmp_path / "PR_curve.png")
    _png_size(tmp_path / "PR_curve.png")
    with pytest.raises(ValueError, match=r"expected \[2 classes, 101 recall points\]"):
        curves.plot_pr_curve(recall, np.zeros((2, 50)), ["a", "b"], [0.1, 0.2], tmp_path / "x.png")


def test_missing_folder_is_made_and_a_file_in_the_way_is_one_clear_error(tmp_path):
    csv = _detect_csv(tmp_path / "results.csv", epochs=2)
    curves.plot_results(csv, tmp_path / "run" / "sub" / "results.png")
    _png_size(tmp_path / "run" / "sub" / "results.png")

    (tmp_path / "blocker").write_text("a file, not a folder")
    target = tmp_path / "blocker" / "run" / "results.png"
    with pytest.raises(WriteError, match=r"cannot write .*results\.png: .*blocker is a file, not a folder"):
        curves.plot_results(csv, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "results.csv", "run"]


def test_a_failed_write_leaves_the_previous_png_and_no_temp_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    csv = _detect_csv(tmp_path / "results.csv", epochs=2)
    target = tmp_path / "results.png"
    target.write_bytes(b"previous")

    def half_then_full_disk(self, f, **kwargs):
        f.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", half_then_full_disk)
    with pytest.raises(WriteError, match="no space left on .*results.png.*previous results.png is unchanged"):
        curves.plot_results(csv, target)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.png"]
