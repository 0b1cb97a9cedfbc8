"""Every plot shows the numbers it should: the data drawn (lines' y, image arrays, bars, panel
titles) read back from the matplotlib Figure and compared with the same numbers computed here
from the statistics, without the plotting code. And no plot changes the process's backend."""
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from zoo.instruments.histograms import HIST_BINS, hist_edges
from zoo.records.stats import RunStats
from zoo.report import colors, plots
from zoo.studies import plots as study_plots
from zoo.studies.records import RunRecord
from zoo.studies.tables import summary_rows

REPO = Path(__file__).resolve().parents[1]


def make_stats(grad_norm, hist_step=(), counts=None, zeros=None, time_grad=None, forget_gate=None,
               layers=None) -> RunStats:
    """A RunStats with the given numbers and every other array empty or NaN, of valid shapes."""
    g = np.asarray(grad_norm, dtype=np.float64)
    t, n_layers = g.shape
    h = len(hist_step)
    tg = np.zeros((h, 0, 0)) if time_grad is None else np.asarray(time_grad, dtype=np.float64)
    fg = np.zeros((h, 0)) if forget_gate is None else np.asarray(forget_gate, dtype=np.float64)
    stats = RunStats(
        step=np.arange(1, t + 1), loss=np.ones(t), metric=np.full(t, np.nan), finite=np.ones(t, bool),
        skipped=np.zeros(t, bool), variables=np.zeros(0, str), elements=np.zeros(0, str),
        var_grad_norm=np.zeros((t, 0)), grad_elements=np.zeros((t, 0)),
        penalty=np.zeros(t), aux_loss=np.zeros((t, 0)), grad_norm=g, grad_norm_total=g.copy(),
        grad_norm_clipped=g.copy(), weight_norm=np.ones_like(g),
        layers=np.array(layers or [f"block{i + 1:02d}_dense" for i in range(n_layers)]),
        aux_heads=np.array([], dtype=str), update_ratio=np.zeros_like(g), hist_step=np.array(hist_step, dtype=int),
        hist_counts=np.zeros((h, n_layers, HIST_BINS), int) if counts is None else np.asarray(counts),
        hist_zeros=np.zeros((h, n_layers), int) if zeros is None else np.asarray(zeros),
        hist_edges=hist_edges(), act_layers=np.array([], dtype=str), act_kinds=np.array([], dtype=str),
        act_stats=np.zeros((h, 0, 4)), epoch_step=np.array([t]), val_loss=np.array([np.nan]),
        val_metric=np.array([np.nan]), seq_layers=np.array([f"lstm{i}" for i in range(tg.shape[1])], dtype=str),
        time_grad=tg, gate_layers=np.array([f"lstm{i}" for i in range(fg.shape[1])], dtype=str), forget_gate=fg)
    stats.check()
    return stats


def vanishing_run(n_steps=50, n_layers=4, seed=0, rate=0.8):
    """Gradients that shrink towards the input and over time, all distinct."""
    rng = np.random.default_rng(seed)
    depth = np.arange(n_layers)
    steps = np.arange(n_steps)[:, None]
    return np.exp(rng.normal(size=(n_steps, n_layers)) * 0.1) * 10.0 ** (depth - n_layers) * rate ** (steps / 5)


def bin_of(log10_value: float) -> int:
    lo, hi = -45.0, 39.0
    return int((log10_value - lo) // ((hi - lo) / HIST_BINS))


def lines_of(ax):
    return {line.get_label(): line for line in ax.get_lines()}


# -- one run ----------------------------------------------------------------------------------------

def test_gradient_flow_draws_step_1_the_window_medians_the_zeros_and_every_step():
    g = vanishing_run(n_steps=50, n_layers=4)
    g[45:, 0] = 0.0  # the input layer's gradient is exactly 0 over the last window
    fig = plots.gradient_flow_figure(make_stats(g))
    left, right = fig.axes[0], fig.axes[1]
    drawn = lines_of(left)
    np.testing.assert_array_equal(drawn["step 1 (initialization)"].get_ydata(), g[0])
    # 50 steps: ten windows of 5; six of them drawn, spread from the first to the last
    for first, last in ((1, 5), (6, 10), (16, 20), (26, 30), (36, 40), (46, 50)):
        expected = np.median(g[first - 1:last], axis=0)
        shown = drawn[f"steps {first}-{last}"].get_ydata()
        np.testing.assert_allclose(shown[np.isfinite(shown)], expected[expected > 0])
        assert np.isnan(shown[expected == 0]).all()  # no logarithm: not drawn as a value ...
    zeros = drawn["gradient exactly 0 (every element)"]
    assert list(zeros.get_xdata()) == [0]  # ... but marked on the floor
    heat = right.get_images()[0].get_array()
    with np.errstate(divide="ignore"):
        expected = np.where(g.T > 0, np.log10(g.T), np.nan)
    np.testing.assert_allclose(np.ma.filled(heat.astype(float), np.nan), expected)


def hist_run():
    """Three layers, histograms at steps 1, 11, 21: each layer's entries in two bins and some
    exact zeros, the counts chosen by hand."""
    steps = [1, 11, 21]
    counts = np.zeros((3, 3, HIST_BINS), int)
    zeros = np.zeros((3, 3), int)
    for h in range(3):
        for layer in range(3):
            counts[h, layer, bin_of(-2 - layer - 3 * h)] = 30 + h
            counts[h, layer, bin_of(-1)] = 10 * (layer + 1)
            zeros[h, layer] = 5 * layer * h
    return make_stats(vanishing_run(25, 3), steps, counts, zeros)


def test_gradient_histograms_show_each_layers_shares_per_bin_and_its_zeros_at_the_last_step():
    stats = hist_run()
    fig = plots.gradient_histograms_figure(stats)
    assert len(fig.axes) == 3
    for layer, ax in enumerate(fig.axes):
        total = stats.hist_counts[:, layer].sum(axis=1) + stats.hist_zeros[:, layer]
        expected = stats.hist_counts[:, layer] / total[:, None]          # [H, B]
        image = ax.images[0]  # evenly spaced probe steps: one raster
        np.testing.assert_allclose(np.asarray(image.get_array()), expected.T)
        left, right, *_ = image.get_extent()
        np.testing.assert_allclose(np.linspace(left, right, 4), [-4, 6, 16, 26])  # one cell per histogram, centred on its step
        share = stats.hist_zeros[-1, layer] / total[-1]
        assert ax.get_title() == f"block{layer + 1:02d}_dense\nexactly 0 at step 21: {share:.1%}"


def test_unevenly_spaced_probe_steps_get_one_cell_each_centred_on_its_step():
    stats = hist_run()
    stats.hist_step = np.array([1, 11, 25])  # a step lost between two probe steps
    for layer, ax in enumerate(plots.gradient_histograms_figure(stats).axes):
        x_edges = ax.collections[0].get_coordinates()[0, :, 0]
        np.testing.assert_allclose(x_edges, [-4, 6, 18, 32])


def test_a_histogram_image_per_step_with_every_layer_and_its_zeros():
    stats = hist_run()
    for h in range(3):
        fig = plots.histogram_step_figure(stats, h)
        hist_ax, zero_ax = fig.axes[0], fig.axes[1]
        total = stats.hist_counts[h].sum(axis=1) + stats.hist_zeros[h]
        np.testing.assert_allclose(np.asarray(hist_ax.images[0].get_array()), stats.hist_counts[h] / total[:, None])
        np.testing.assert_allclose([bar.get_width() for bar in zero_ax.patches], stats.hist_zeros[h] / total)
        assert fig.texts[0].get_text().split(" ")[:2] == ["step", str(stats.hist_step[h])]
    # the series draws the same images, pixel for pixel, only faster; at most MAX_STEP_IMAGES,
    # first and last in
    images = list(plots.histogram_step_images(stats))
    assert [s for s, _ in images] == [1, 11, 21]
    for h, (_, image) in enumerate(images):
        fresh = plots.rgb(plots.histogram_step_figure(stats, h))
        assert image.dtype == np.uint8 and np.array_equal(image, fresh)
    assert list(plots.image_steps(45, 20)) == sorted(set(plots.image_steps(45, 20)))
    assert len(plots.image_steps(45, 20)) == 20 and plots.image_steps(45, 20)[[0, -1]].tolist() == [0, 44]


def test_painted_cells_are_the_pixels_matplotlib_draws_for_them_and_too_many_cells_are_drawn_by_it():
    """The series paints each histogram cell into the pixels matplotlib's own drawing of the cell
    covers; past 2**16 cells (196 layers) it lets matplotlib draw them. Both ways, each image
    equals the step's figure drawn afresh, pixel for pixel, with mass in many bins (every cell a
    different share), a share of exactly 0 and the step whose share is the colour scale's top."""
    rng = np.random.default_rng(3)
    for n_layers, painted in ((5, True), (196, False)):
        counts = np.zeros((2, n_layers, HIST_BINS), int)
        counts[:, :, 150:190] = rng.integers(0, 1000, (2, n_layers, 40))
        counts[1, 0, 170] = 10 ** 6  # one cell holds most of layer 0: the top of the colour scale
        stats = make_stats(vanishing_run(15, n_layers), [1, 11], counts, rng.integers(0, 500, (2, n_layers)))
        fig, show, changing = plots._step_figure(stats, "t", animated=True)
        fig.set_dpi(plots.STEP_IMAGE_DPI)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        found = plots.cell_pixels(canvas, changing[0], canvas.copy_from_bbox(fig.bbox))
        assert (found is not None) == painted
        if painted:  # every cell inside the axes' view has pixels; the data is put back
            pixels, cells = found
            assert len(pixels) > 0 and cells.max() < n_layers * HIST_BINS
            assert np.asarray(changing[0].get_array()).shape == (n_layers, HIST_BINS)
        for h, (step, image) in enumerate(plots.histogram_step_images(stats, "t")):
            assert step == [1, 11][h]
            assert np.array_equal(image, plots.rgb(plots.histogram_step_figure(stats, h, "t")))


def test_gradient_through_time_draws_each_recurrent_layers_curve_at_each_histogram_step():
    rng = np.random.default_rng(1)
    tg = np.abs(rng.normal(size=(3, 2, 7))) + 0.1
    stats = make_stats(vanishing_run(25, 3), [1, 11, 21], time_grad=tg)
    fig = plots.gradient_through_time_figure(stats)
    for s, ax in enumerate(fig.axes):
        assert ax.get_title() == f"into lstm{s}"
        for h, step in enumerate((1, 11, 21)):
            np.testing.assert_array_equal(lines_of(ax)[f"step {step}"].get_ydata(), tg[h, s])


def test_a_layer_whose_gradient_is_exactly_0_is_0_in_both_plots():
    """A dead ReLU layer (bias -100) passes no gradient: its kernel and the one below get exactly
    0, every element; the head does not. The flow plot marks exactly those layers on its floor and
    the histograms say 100 % zeros for them, 0 % for the head (before exact norms and exact
    histograms the two could disagree)."""
    import keras

    import zoo

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="feed"),
                              keras.layers.Dense(8, activation="relu", bias_initializer=keras.initializers.Constant(-100.0),
                                                 name="dead"),
                              keras.layers.Dense(8, activation="relu", bias_initializer="ones", name="after"),
                              keras.layers.Dense(2, name="head")])
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    monitor = zoo.GradientMonitor(histogram_every=2, mlflow=False, verbose=False)
    model.fit(rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 2, 64), batch_size=16, epochs=3,
              verbose=0, callbacks=[monitor])
    stats = monitor.stats
    names = [str(n) for n in stats.layers]
    exactly_zero = {n for n, col in zip(names, stats.grad_norm.T) if np.all(col == 0)}
    assert exactly_zero == {"feed", "dead", "after"}, names  # "after" sees only zeros from "dead"
    flow = lines_of(plots.gradient_flow_figure(stats).axes[0])
    assert {names[int(i)] for i in flow["gradient exactly 0 (every element)"].get_xdata()} == exactly_zero
    for ax in plots.gradient_histograms_figure(stats).axes:
        name, said = ax.get_title().split("\n")
        assert said.endswith("100.0%" if name in exactly_zero else ": 0.0%"), ax.get_title()


# -- a study ----------------------------------------------------------------------------------------

def test_study_flow_panels_show_the_first_and_the_last_window_not_the_same_one():
    """The 'first' and 'last' panels once both drew the last window."""
    groups = {"init=small": [make_stats(vanishing_run(seed=s, rate=0.5)) for s in (0, 1)],
              "init=he": [make_stats(vanishing_run(seed=s + 5, rate=1.0)) for s in (0, 1)]}
    fig = study_plots.gradient_flow_variants_figure(groups)
    start, end = fig.axes[0], fig.axes[1]
    assert start.get_title() == "first window: steps 1-5 of 50" and end.get_title() == "last window: steps 46-50 of 50"
    for ax, rows in ((start, slice(0, 5)), (end, slice(45, 50))):
        for variant, runs in groups.items():
            per_seed = [np.median(s.grad_norm[rows], axis=0) for s in runs]
            expected = np.sqrt(per_seed[0] * per_seed[1])  # geometric mean of two seeds
            line = lines_of(ax)[variant]
            np.testing.assert_allclose(line.get_ydata(), expected)
            np.testing.assert_allclose(line.get_xdata(), np.linspace(0, 1, 4))
    small = lines_of(start)["init=small"].get_ydata() / lines_of(end)["init=small"].get_ydata()
    assert np.all(small > 100)  # 0.5 ** 9 between the windows' middles
    assert lines_of(start)["init=small"].get_color() != lines_of(start)["init=he"].get_color()


def test_study_time_panels_and_forget_gate():
    rng = np.random.default_rng(2)
    runs = []
    for seed in range(2):
        tg = np.abs(rng.normal(size=(3, 1, 6))) + 0.1
        runs.append(make_stats(vanishing_run(25, 3, seed), [1, 11, 21], time_grad=tg,
                               forget_gate=rng.uniform(size=(3, 1))))
    fig = study_plots.gradient_through_time_variants_figure({"cell=lstm": runs})
    for ax, h in ((fig.axes[0], 0), (fig.axes[1], -1)):
        curves = [s.time_grad[h, 0] / s.time_grad[h, 0, -1] for s in runs]
        np.testing.assert_allclose(lines_of(ax)["cell=lstm"].get_ydata(), np.sqrt(curves[0] * curves[1]))
    gate = lines_of(fig.axes[2])["cell=lstm"]
    np.testing.assert_array_equal(gate.get_xdata(), [1, 11, 21])
    np.testing.assert_allclose(gate.get_ydata(), (runs[0].forget_gate[:, 0] + runs[1].forget_gate[:, 0]) / 2)


def record(std, seed, grad, loss):
    return RunRecord(f"r{std}{seed}", {"data.standardize": std, "seed": str(seed)},
                     {"summary/grad_first_init": grad, "final/train_loss": loss}, "FINISHED", "finished")


def test_final_metrics_are_dots_at_the_tables_numbers_on_honest_axes():
    """1.03 against 0.656 (the issue's numbers) as dots: on a log axis spanning at least two
    decades for a gradient norm, on a linear axis from 0 for a loss; whiskers are the spread."""
    found = [record("False", 0, 1.03, 2.1), record("False", 1, 1.03, 2.2),
             record("True", 0, 0.5, 2.0), record("True", 1, 0.86, 2.06)]
    metrics = ["summary/grad_first_init", "final/train_loss"]
    rows = summary_rows(found, ["data.standardize"], metrics)
    fig = study_plots.final_metrics_figure(rows, metrics)
    grad_ax, loss_ax = fig.axes
    dots = [line for line in grad_ax.get_lines() if line.get_marker() not in (None, "None", "", "_")]
    geo_true = math.sqrt(0.5 * 0.86)
    np.testing.assert_allclose([d.get_ydata()[0] for d in dots], [1.03, geo_true])
    assert grad_ax.get_yscale() == "log" and not grad_ax.patches  # no bars
    lo, hi = grad_ax.get_ylim()
    assert math.log10(hi / lo) >= 2
    spread = 10 ** np.std(np.log10([0.5, 0.86]), ddof=1)
    whisker = grad_ax.collections[-1].get_segments()[0][:, 1]  # the True variant's
    np.testing.assert_allclose(sorted(whisker), [geo_true / spread, geo_true * spread])
    assert [t.get_text() for t in grad_ax.texts] == ["1.03 ×/÷ 1", f"{geo_true:.3g} ×/÷ {spread:.3g}"]
    loss_dots = [line for line in loss_ax.get_lines() if line.get_marker() not in (None, "None", "", "_")]
    np.testing.assert_allclose([d.get_ydata()[0] for d in loss_dots], [2.15, 2.03])
    assert loss_ax.get_yscale() == "linear" and loss_ax.get_ylim()[0] == 0
    assert [t.get_text() for t in loss_ax.get_xticklabels()] == ["standardize=False", "standardize=True"]
    assert dots[0].get_color() != dots[1].get_color()


def test_variant_styles_stay_distinct_past_ten_and_run_colours_avoid_the_recent_ones():
    looks = {tuple(colors.style(i).values()) for i in range(40)}
    assert len(looks) == 40
    assert colors.next_color([]) == colors.PALETTE[0]
    assert colors.next_color([colors.PALETTE[0], None]) == colors.PALETTE[1]
    recent = list(reversed(colors.PALETTE))  # newest first: PALETTE[0] is the oldest
    assert colors.next_color(recent) == colors.PALETTE[0]


# -- no backend chosen ------------------------------------------------------------------------------

def test_drawing_never_changes_the_users_backend(tmp_path):
    """A notebook's inline backend survives drawing every plot and a whole zoo.train(): nothing
    calls matplotlib.use; figures are Figure objects without pyplot."""
    script = textwrap.dedent(f"""
        import matplotlib, sys
        sys.path.insert(0, {str(REPO / 'tests')!r})
        before = matplotlib.get_backend()
        import matplotlib.pyplot as plt
        import zoo
        from zoo.report import plots
        from zoo.studies import plots as study_plots
        from test_plots import hist_run, make_stats, vanishing_run
        stats = hist_run()
        plots.gradient_flow(stats, {str(tmp_path / 'a.png')!r})
        plots.gradient_histograms(stats, {str(tmp_path / 'b.png')!r})
        list(plots.histogram_step_images(stats))
        study_plots.gradient_flow_variants({{"x": [make_stats(vanishing_run())]}}, {str(tmp_path / 'c.png')!r})
        result = zoo.train(["model.depth=3", "trainer.epochs=1"])
        assert result.stats is not None
        print(before, "|", matplotlib.get_backend(), "|", len(plt.get_fignums()))
    """)
    env = {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    before, after, open_figures = (part.strip() for part in out.stdout.strip().splitlines()[-1].split("|"))
    assert before == after == "module://matplotlib_inline.backend_inline"
    assert open_figures == "0"  # nothing left in pyplot's registry for the notebook to show
    for name in ("a.png", "b.png", "c.png"):
        assert (tmp_path / name).stat().st_size > 10_000


# -- zoo.compare's figure -----------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", "_bn_projection_shortcut"])
def test_compare_figure_keeps_layer_names_clear_of_the_header_and_inside_the_page(suffix):
    """b's rotated layer names above the panel ran through the subtitle; now the panels make room
    for names of any length, measured on the rendered text."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from zoo.analysis.comparison import Comparison, Probed, figure, table
    from zoo.records.verdict import Verdict

    def probed(label, names):
        g = np.abs(np.random.default_rng(0).normal(size=(4, len(names)))) + 0.1
        return Probed(label, tuple(names), g, np.full(4, 2.3), verdict=Verdict("healthy", "ok"))

    names = [f"stage{s}_block{b}_conv{c}" for s in (1, 2, 3) for b in (1, 2) for c in (1, 2)] + ["head"]
    c = Comparison(probed("plain", names), probed("residual", [n + suffix for n in names[:-1]] + ["head"]),
                   "model.residual", 4, 64)
    c.table = table(c.a, c.b)
    fig = figure(c)
    renderer = FigureCanvasAgg(fig).get_renderer()
    header_bottom = min(t.get_window_extent(renderer).y0 for t in fig.texts if t.get_text())
    flow, ratio = fig.axes[0], fig.axes[1]
    above = flow.get_tightbbox(renderer)  # with b's names on the secondary axis
    assert above.y1 < header_bottom
    b_names = [t for ax in flow.child_axes for t in ax.get_xticklabels() if t.get_text()]
    assert len(b_names) == (len(names) if suffix else 0)  # the same names: once, below
    assert all(t.get_window_extent(renderer).y1 < header_bottom for t in b_names)
    assert ratio.get_tightbbox(renderer).y0 >= 0  # a's names and the axis label are on the page
