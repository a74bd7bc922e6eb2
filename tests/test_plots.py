import matplotlib.pyplot as plt
import numpy as np
import pytest

from fpdm.common.plots import plot_residuals, plot_schedule, residual_figure

RECORD = {"steps": 3, "budget": 30, "settings": {"sampler": "ddim", "solver": "picard", "reuse": True,
                                                 "tol": 0.05},
          "residuals": [[1.0, 0.3, 0.04], [0.8, 0.2, 0.1, 0.03], [0.5, 0.01]]}


def test_residual_plot_reads_as_text_has_integer_ticks_and_draws_the_tolerance(tmp_path):
    fig = residual_figure(RECORD)
    ax = fig.axes[0]
    title = ax.get_title()
    assert title == "3 DDIM steps, budget 30, picard solver, reuse, tol 0.05"
    assert "None" not in title and "False" not in title
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    flat = [line for line in ax.get_lines() if np.ptp(line.get_ydata()) == 0]
    assert len(flat) == 1 and flat[0].get_ydata()[0] == 0.05  # the tolerance, dashed
    plt.close(fig)
    no_tol = residual_figure({**RECORD, "budget": None, "settings": {"sampler": "ddpm", "reuse": False}})
    assert no_tol.axes[0].get_title() == "3 DDPM steps, picard solver"
    assert not [line for line in no_tol.axes[0].get_lines() if np.ptp(line.get_ydata()) == 0]
    plt.close(no_tol)
    plot_residuals(RECORD, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no residual traces"):
        residual_figure({"residuals": [[], []]})


def test_schedule_plot(tmp_path):
    schedule = {"steps": 3, "iters": [1, 2, 3], "budget": 12, "timesteps": [999, 500, 0],
                "settings": {"sampler": "ddpm", "reuse": False, "cfg_scale": 1.0},
                "candidates": [{"steps": 3, "errors": [[1e-2, 1e-3, 1e-4]] * 3}]}
    plot_schedule(schedule, tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 1000
