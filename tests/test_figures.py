"""Sample figures: decoder means by default, draws on request, stand-in data named in the title and caption;
cyclic generation's chains."""

from __future__ import annotations

import math
from types import SimpleNamespace

import jinja2
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.text import Text

from baselines.gaussian import GaussianPrior
from evae.config import TrainConfig
from evae.data.registry import get_spec
from evae.models.base import LatentVariableModel
from evae.models.celeba import ConvVAE64
from evae.priors.exemplar import ExemplarPrior
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
    """One briefly trained exemplar-prior run per dataset: name -> run folder."""
    out = {}
    for dataset, settings in TINY.items():
        cfg = TrainConfig(dataset=dataset, prior="exemplar", max_epochs=1, warmup_epochs=1, device="cpu", **settings)
        out[dataset] = tmp_path_factory.mktemp(dataset)
        train(cfg, out[dataset], progress=False)
    return out


@pytest.fixture
def drawn(monkeypatch):
    """Every figure drawn: its image grids, all its text (titles) and the figure itself, instead of a PNG."""
    figs, grids, show = [], [], figures._show

    def record_show(ax, grid, title):
        grids.append(grid)
        show(ax, grid, title)

    def record_save(fig, out):
        figs.append({"grids": grids[:], "text": " | ".join(t.get_text() for t in fig.findobj(Text)), "fig": fig})
        grids.clear()
        plt.close(fig)

    monkeypatch.setattr(figures, "_show", record_show)
    monkeypatch.setattr(figures, "_save", record_save)
    return figs


def test_every_figure_of_a_binary_dataset_draws_from_a_two_level_model(tmp_path, drawn):
    """The HVAE's figures, each titled with it: t-SNE of its top latent's encoder means, the exemplar prior on z2
    against its kNN truncation."""
    cfg = TrainConfig(dataset="mnist_subset", architecture="hvae", prior="exemplar", max_epochs=1, warmup_epochs=1,
                      device="cpu", max_train_images=200, max_val_images=50)
    train(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    figures.exemplar_samples(run, tmp_path / "f.png", n_exemplars=2, per_exemplar=3)
    figures.interpolations(run, tmp_path / "f.png", pairs=2, steps=3)
    figures.tsne(run, tmp_path / "f.png", points=40)
    figures.unconditional_samples([run], tmp_path / "f.png", n=4)
    figures.cyclic_generation(run, tmp_path / "f.png", chains=2, steps=3)
    figures.prior_comparison(run, tmp_path / "f.png", ks=[1, 10])
    assert len(drawn) == 6 and all("hvae" in fig["text"] for fig in drawn), [fig["text"] for fig in drawn]
    gaps = figures.prior_comparison_data(run, [1, 10, 200])
    assert (gaps["gap_mean"].diff().dropna() < 0).all() and abs(gaps["gap_max"].iloc[-1]) < 1e-3  # k = N: exact


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


def test_panels_of_a_stand_in_name_it_once_in_the_figure_title(runs, drawn, tmp_path):
    """One panel a prior: the stand-in note would overrun the panels' short titles, so it sits above them once."""
    figures.unconditional_samples([runs["celeba_standin"]] * 3, tmp_path / "f.png", n=4)
    assert drawn[0]["text"].count("STAND-IN: synthetic faces, not CelebA") == 1


class KnownMaps(LatentVariableModel):
    """Images of 4 pixels, encoder mean 2x - 1, decoder mean sigmoid(z); records what each is given."""

    latent_dim = 4

    def __init__(self, prior):
        super().__init__(prior, image_shape=(1, 2, 2))
        self.encoded, self.decoded = [], []

    def encode(self, x):
        self.encoded.append(x.clone())
        return 2 * x - 1, torch.zeros_like(x)

    def decode(self, z):
        self.decoded.append(z.clone())
        return torch.sigmoid(z)


class KnownLevels(KnownMaps):
    """`KnownMaps` encoding pixel levels 0..255, as the colour models do."""

    def as_input(self, images):
        return images * 255


def known_maps(scale: float = 0.3, model_class=KnownMaps) -> KnownMaps:
    """A `KnownMaps` model with an exemplar prior of learned kernel scale ``scale``."""
    prior = ExemplarPrior(torch.rand(5, 4))
    prior.logvar.data.fill_(2 * math.log(scale))
    return model_class(prior)


@pytest.mark.parametrize("model_class, levels", [(KnownMaps, 1), (KnownLevels, 255)])
def test_cyclic_chains_feed_each_decoder_mean_back_and_draw_from_the_learned_kernel(model_class, levels):
    model, n, steps = known_maps(0.3, model_class), 3, 4
    chains = figures.cyclic_chains(model, steps, n, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the same draws, in the order the chain makes them
    assert chains.shape == (n, steps + 1, 4)
    assert torch.equal(chains[:, 0], torch.rand(n, 4, generator=g))  # uniform noise first
    for t in range(steps):
        assert torch.equal(model.encoded[t], chains[:, t] * levels)  # each step's exemplar is the image before it
        z = 2 * model.encoded[t] - 1 + 0.3 * torch.randn(n, 4, generator=g)  # its encoder mean + s * eps
        assert torch.allclose(model.decoded[t], z, atol=1e-5)
        assert torch.equal(chains[:, t + 1], torch.sigmoid(model.decoded[t]))  # the decoder mean, not a draw
    assert len(model.encoded) == steps


def test_colour_models_take_decoded_images_back_as_pixel_levels():
    model = ConvVAE64(GaussianPrior(4), latent_dim=4, hidden=2)
    assert torch.equal(model.as_input(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([0.0, 127.5, 255.0]))


def test_cyclic_chains_are_reproducible_from_the_seed():
    model = known_maps()
    draw = lambda seed: figures.cyclic_chains(model, 3, 2, torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(0), draw(0)) and not torch.equal(draw(0), draw(1))


def test_cyclic_chains_need_an_exemplar_kernel():
    with pytest.raises(ValueError, match="GaussianPrior does not have: use an exemplar-prior model"):
        figures.cyclic_chains(KnownMaps(GaussianPrior(4)), 3, 2, torch.Generator())


@pytest.mark.parametrize("dataset", sorted(TINY))
def test_cyclic_generation_shows_each_chain_from_its_noise(dataset, runs, drawn, tmp_path):
    figures.cyclic_generation(runs[dataset], tmp_path / "f.png", chains=3, steps=4, budget="SMOKE")
    ((grid,),) = [fig["grids"] for fig in drawn]
    size = get_spec(dataset).image_shape[1] + 1  # a cell and its gap
    assert grid.shape[:2] == (3 * size + 1, (4 + 2) * size + 1)  # per chain: noise, blank, 4 steps
    noise, blank, steps = grid[:, 1 : size], grid[:, size + 1 : 2 * size], grid[:, 2 * size + 1 :]
    assert noise.std() > 0.2 and np.all(blank == (0.0 if grid.ndim == 2 else 1.0))
    assert not np.isin(steps, [0.0, 1.0]).all() and 0 <= steps.min() and steps.max() <= 1  # means, not draws
    assert "cyclic generation" in drawn[0]["text"] and "SMOKE" in drawn[0]["text"]
    assert ("STAND-IN" in drawn[0]["text"]) == (get_spec(dataset).stand_in is not None)


CAPTIONS = {"model_figure": "tsne", "unconditional_samples": None, "cyclic_generation": None}


@pytest.mark.parametrize("caption", sorted(CAPTIONS))
@pytest.mark.parametrize("dataset", ["omniglot_raw28", "celeba_standin", "celeba_sample", "mnist_subset"])
def test_captions_say_what_stand_in_data_are_as_the_registry_does(caption, dataset):
    """The rules pass the registry's ``stand_in`` (common.smk: stand_in) as ``params.stand_in``; a dataset's name
    says nothing (omniglot_raw28 is a stand-in, celeba_sample is real CelebA)."""
    what = get_spec(dataset).stand_in
    text = render_caption(caption, CAPTIONS[caption], dataset, stand_in=what, architecture="vae")
    note = f". STAND-IN data: {dataset} is {what}."  # a sentence of its own
    assert (note in text) if what else ("STAND-IN" not in text)


def render_caption(caption: str, figure: str | None, dataset: str, **params) -> str:
    """The caption of a figure (``figure``: model_figure's wildcard) as Snakemake's report renders it."""
    snakemake = SimpleNamespace(wildcards=SimpleNamespace(dataset=dataset, figure=figure),
                                params=SimpleNamespace(**params))
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return env.from_string((REPO / "workflow" / "report" / f"{caption}.rst").read_text()).render(snakemake=snakemake)


@pytest.mark.parametrize(("caption", "figure"), [
    *(("model_figure", f) for f in ("exemplar_samples", "interpolations", "tsne", "prior_comparison")),
    ("unconditional_samples", None), ("cyclic_generation", None),
])
def test_captions_name_the_architecture_a_figure_is_drawn_from(caption, figure):
    """The rules pass it as ``params.architecture`` (common.smk: figure_architecture), so that a dataset's figures
    of the VAE and of the HVAE are told apart."""
    assert "hvae" in render_caption(caption, figure, "mnist", stand_in=None, architecture="hvae")


def test_study_figures_mark_the_panels_of_stand_in_data(drawn, tmp_path):
    from evae import checksums

    paths = []
    for dataset in ("omniglot_raw28", "mnist"):
        result = {"run": {"config": {"dataset": dataset, "architecture": "vae", "prior": "exemplar", "seed": 0}},
                  "latent": {"k": 1, "test_error_by_k": {"1": 50.0, "3": 48.0}}, "pixel": None}
        paths.append(tmp_path / dataset / "knn.json")
        paths[-1].parent.mkdir()
        checksums.write_json(paths[-1], result)
    figures.knn_error_vs_k(paths, tmp_path / "knn.png", budget="REDUCED BUDGET")
    titles = drawn[0]["text"]
    assert "omniglot_raw28 [STAND-IN: raw Omniglot, not the paper's chardata.mat]" in titles
    assert "mnist [STAND-IN" not in titles and "mnist |" in titles


def test_knn_error_vs_k_gives_each_prior_one_colour_and_one_legend_entry_over_its_seeds(drawn, tmp_path):
    from evae import checksums

    paths = []
    for prior in ("gaussian", "exemplar"):
        for seed in (1, 0):
            result = {"run": {"config": {"dataset": "mnist", "architecture": "vae", "prior": prior, "seed": seed}},
                      "latent": {"k": 3 + seed, "test_error_by_k": {"1": 2.0 + seed, "3": 1.5}}, "pixel": None}
            paths.append(tmp_path / f"{prior}{seed}" / "knn.json")
            paths[-1].parent.mkdir()
            checksums.write_json(paths[-1], result)
    figures.knn_error_vs_k(paths, tmp_path / "knn.png")
    ax = drawn[0]["fig"].axes[0]
    assert [line.get_color() for line in ax.get_lines()] == [figures.PRIOR_COLOURS[p] for p in ("gaussian",) * 2
                                                             + ("exemplar",) * 2]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["vae/gaussian (k* s0: 3, s1: 4)",
                                                                    "vae/exemplar (k* s0: 3, s1: 4)"]
