"""Sample figures: decoder means by default, draws on request, stand-in data named in the title and caption."""

from __future__ import annotations

from types import SimpleNamespace

import jinja2
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.text import Text

from evae.config import TrainConfig
from evae.data.registry import get_spec
from evae.report import figures
from evae.train.trainer import train
from tests.conftest import REPO

TINY = {
    "mnist_subset": dict(architecture="vae", max_train_images=200, max_val_images=50),
    "celeba_standin": dict(architecture="convvae64", latent_dim=8, hidden=4, batch_size=8),
}
# the columns of each figure's grid that hold generated images (28x28 cells, 1 pixel apart)
GENERATED = {
    "unconditional_samples": np.s_[:, :], "exemplar_samples": np.s_[:, 59:], "interpolations": np.s_[:, 30:-30],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One briefly trained Gaussian-prior run per dataset: name -> run folder."""
    out = {}
    for dataset, settings in TINY.items():
        cfg = TrainConfig(dataset=dataset, prior="gaussian", max_epochs=1, warmup_epochs=1, device="cpu", **settings)
        out[dataset] = tmp_path_factory.mktemp(dataset)
        train(cfg, out[dataset], progress=False)
    return out


@pytest.fixture
def drawn(monkeypatch):
    """Every figure drawn: its image grids and all its text (titles), instead of a PNG."""
    figs, grids, show = [], [], figures._show

    def record_show(ax, grid, title):
        grids.append(grid)
        show(ax, grid, title)

    def record_save(fig, out):
        figs.append({"grids": grids[:], "text": " | ".join(t.get_text() for t in fig.findobj(Text))})
        grids.clear()
        plt.close(fig)

    monkeypatch.setattr(figures, "_show", record_show)
    monkeypatch.setattr(figures, "_save", record_save)
    return figs


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_binary_models_show_decoder_means_unless_asked_for_draws(name, runs, drawn, tmp_path):
    target = [runs["mnist_subset"]] if name == "unconditional_samples" else runs["mnist_subset"]
    getattr(figures, name)(target, tmp_path / "means.png")
    getattr(figures, name)(target, tmp_path / "draws.png", draws=True)
    means, draws = (fig["grids"][0][GENERATED[name]] for fig in drawn)
    assert ((means > 0.02) & (means < 0.98)).mean() > 0.05  # gray levels
    assert set(np.unique(draws)) == {0.0, 1.0}  # binary draws
    assert "decoder means" in drawn[0]["text"] and "draws from the decoder" in drawn[1]["text"]
    assert "STAND-IN" not in drawn[0]["text"]


def test_colour_figures_name_the_stand_in_and_show_mean_levels(runs, drawn, tmp_path):
    figures.exemplar_samples(runs["celeba_standin"], tmp_path / "f.png", n_exemplars=2, per_exemplar=3, budget="SMOKE")
    ((grid,),) = [fig["grids"] for fig in drawn]
    samples = grid[:, 2 * 65 + 1 :]  # right of the exemplar and the blank (64x64 cells)
    assert grid.shape[-1] == 3 and 0 <= grid.min() and grid.max() <= 1
    assert not np.isin(samples, np.arange(256) / 255).all()  # mean levels, not drawn levels
    text = drawn[0]["text"]
    assert "STAND-IN: synthetic faces, not CelebA" in text and "decoder means" in text and "SMOKE" in text


CAPTIONS = {"model_figure": "tsne", "unconditional_samples": None}


@pytest.mark.parametrize("caption", sorted(CAPTIONS))
@pytest.mark.parametrize("dataset", ["omniglot_raw28", "celeba_standin", "celeba_sample", "mnist_subset"])
def test_captions_say_what_stand_in_data_are_as_the_registry_does(caption, dataset):
    """The rules pass the registry's ``stand_in`` (common.smk: stand_in) as ``params.stand_in``; a dataset's name
    says nothing (omniglot_raw28 is a stand-in, celeba_sample is real CelebA)."""
    what = get_spec(dataset).stand_in
    snakemake = SimpleNamespace(wildcards=SimpleNamespace(dataset=dataset, figure=CAPTIONS[caption]),
                                params=SimpleNamespace(stand_in=what))
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # as Snakemake's report renders captions
    text = env.from_string((REPO / "workflow" / "report" / f"{caption}.rst").read_text()).render(snakemake=snakemake)
    note = f". STAND-IN data: {dataset} is {what}."  # a sentence of its own
    assert (note in text) if what else ("STAND-IN" not in text)
