"""The sbc analysis through the CLI: comparisons/configs/sbc_linear_regression.toml at its tiny profile."""

import numpy as np
import pytest

from comparisons.config import CONFIG_DIR
from comparisons.run import main
from toolkit.dims import ENGINE, SBC_QUANTITY, SIMULATION
from toolkit.io import read_netcdf

CONFIG = ("--config", str(CONFIG_DIR / "sbc_linear_regression.toml"), "--profile", "tiny", "--no-progress")


def test_the_sbc_config_ranks_the_closed_form_engine(tmp_path, capsys):
    out = tmp_path / "sbc"
    assert main([*CONFIG, "--set", 'analysis.sbc.engines=["closed_form"]', "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "**SBC of the closed_form engine** passes" in printed
    metrics = read_netcdf(out / "metrics.nc")
    assert metrics["sbc_rank"].dims == (ENGINE, SIMULATION, SBC_QUANTITY)
    assert list(metrics[SBC_QUANTITY].values) == [f"w[{i}]" for i in range(5)] + ["y_next"]
    assert metrics.sizes[SIMULATION] == 40 and bool(metrics["sbc_passed"].sel({ENGINE: "closed_form"}))
    ranks = metrics["sbc_rank"].values
    assert np.all((ranks > 0) & (ranks < 1))
    assert list(metrics["sbc_site"].values) == ["w"] * 5 + ["y_next"]
    p = metrics["sbc_pvalue"].sel({ENGINE: "closed_form"})
    np.testing.assert_allclose(metrics["sbc_pvalue_adjusted"].sel({ENGINE: "closed_form"}), np.minimum(1, 6 * p))
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Simulation-based calibration of the Bayes engines" in report
    assert (out / "figures" / "sbc_ecdf.png").exists()


@pytest.mark.parametrize(("override", "message"), [
    ('analysis.sbc.engines=["enumeration"]', "analysis.sbc.engines: enumeration does not apply to this prior"),
    ("analysis.sbc.num_draws=1000", "num_draws=1000 exceeds the 4 x 100 MCMC draws kept"),
])
def test_an_engine_that_cannot_be_checked_stops_the_run_first(tmp_path, capsys, override, message):
    assert main([*CONFIG, "--set", override, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
