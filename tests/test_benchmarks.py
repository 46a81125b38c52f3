"""The benchmarks' pure parts: reading and summarising earlier reports.

The benchmarks train for minutes, so they are not run here; what is tested is
the bookkeeping their figures go through (a wrong mean, or a comparison of runs
from different recipes, would put a wrong number in the README).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import fidelity_seeds  # noqa: E402
import lab_vs_vae  # noqa: E402


def _report(path: Path, header: str, rows: list[dict]) -> Path:
    path.write_text("\n".join([header, "epoch   1/2: train -ELBO 1.0 (progress lines are skipped)",
                               *map(json.dumps, rows)]) + "\n")
    return path


HEADER = ("lab CVAE, 120 epochs per run, starts ['{init}'], seeds [0, 1], fidelity from 1000 "
          "samples per digit, classifier(s) shipped, noaug.pt; 1 threads, torch x, x86_64")


def _row(init, seed, nelbo, fid, fid_noaug, epochs=120):
    return {"init": init, "seed": seed, "epochs": epochs, "test_nelbo": nelbo, "fidelity": fid,
            "fidelity noaug.pt": fid_noaug}


def test_fidelity_summary_of_two_files_gives_means_sds_and_the_difference(tmp_path, capsys):
    a = _report(tmp_path / "a.txt", HEADER.format(init="open-relus"),
                [_row("open-relus", 0, 100.0, 0.94, 0.93), _row("open-relus", 1, 102.0, 0.96, 0.95)])
    b = _report(tmp_path / "b.txt", HEADER.format(init="label-neutral"),
                [_row("label-neutral", 0, 101.0, 0.95, 0.90), _row("label-neutral", 1, 101.0, 0.95, 0.92)])
    assert fidelity_seeds.main(["--summarise", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    # test -ELBO: mean 101, sample sd sqrt(2) = 1.41
    assert "open-relus: test negative ELBO 101.00 ± 1.41" in out
    assert "label-neutral: test negative ELBO 101.00 ± 0.00" in out
    # fidelity, shipped classifier: 95 ± 1.41 against 95 ± 0: difference 0, se sqrt(2/2) = 1.00
    assert "open-relus, classifier shipped: label fidelity 95.00 ± 1.41%" in out
    assert "minus label-neutral, classifier shipped: +0.00 points of fidelity" in out
    assert "standard error of the difference of means 1.00" in out
    # the second classifier is named from the header: 94 against 91, se sqrt(1 + 1) = 1.41
    assert "open-relus, classifier noaug.pt: label fidelity 94.00 ± 1.41%" in out
    assert "classifier noaug.pt: +3.00 points of fidelity, standard error of the difference of means 1.41" in out


def test_fidelity_summary_refuses_runs_of_different_lengths(tmp_path, capsys):
    a = _report(tmp_path / "a.txt", HEADER.format(init="open-relus"),
                [_row("open-relus", 0, 100.0, 0.94, 0.93, epochs=120)])
    b = _report(tmp_path / "b.txt", HEADER.format(init="label-neutral"),
                [_row("label-neutral", 0, 104.0, 0.86, 0.85, epochs=20)])
    assert fidelity_seeds.main(["--summarise", str(a), str(b)]) == 2
    assert "mix runs of different lengths" in capsys.readouterr().out


def test_fidelity_seeds_names_a_missing_classifier_and_how_to_train_it(capsys):
    with pytest.raises(SystemExit):
        fidelity_seeds.main(["--classifier", "no-such-classifier.pt", "--epochs", "1"])
    err = capsys.readouterr().err
    assert "no file 'no-such-classifier.pt'" in err and "python -m lab_utils.classifier" in err


SEEDS_HEADER = ("lab CVAE, 10 epochs per seed, init {init}, warm-up 0 steps, fast route, "
                "1 threads, torch x, x86_64")


def test_lab_vs_vae_reads_the_lab_figures_of_the_same_start_and_length(tmp_path):
    path = _report(tmp_path / "seeds.txt", SEEDS_HEADER.format(init="open-relus"),
                   [{"seed": 0, "test_nelbo": 107.84}, {"seed": 1, "test_nelbo": 107.27}])
    assert lab_vs_vae.lab_figures(str(path), "open-relus", 10) == [107.84, 107.27]


@pytest.mark.parametrize("init, epochs", [("label-neutral", 10), ("open-relus", 20)])
def test_lab_vs_vae_refuses_lab_figures_from_another_recipe(tmp_path, init, epochs):
    path = _report(tmp_path / "seeds.txt", SEEDS_HEADER.format(init="open-relus"),
                   [{"seed": 0, "test_nelbo": 107.84}])
    with pytest.raises(SystemExit, match=f"not a seeds.py report of {epochs} epochs from the {init} start"):
        lab_vs_vae.lab_figures(str(path), init, epochs)


def test_lab_vs_vae_default_reports_match_their_starts():
    """Each start's default lab report in results/ really is from that start."""
    for init, name in lab_vs_vae.LAB_REPORTS.items():
        assert f"init {init}," in (BENCHMARKS / "results" / name).read_text().splitlines()[0]
