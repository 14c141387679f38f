"""The paper's figures, drawn from trained runs and evaluation results (matplotlib, PNG).

Every figure's title names the run it was drawn from, says when its data is a stand-in and, for
studies other than the paper protocol, which kind of run it comes from and whether it compares with the
paper (``budget``: ``evae.study.figure_label``, e.g. "REDUCED BUDGET run: not comparable with the paper"; None
for the paper protocol). Runs and results are read, verified, through
``evae.runs``; a run is named by its folder or its summary.json. Generated
images are the decoder's means (as the paper shows them) unless ``draws=True`` asks for images
drawn from the decoder (binary for the Bernoulli decoders, hence noisy).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from evae import runs  # noqa: E402
from evae.data import STAND_INS  # noqa: E402
from evae.io import atomic_path  # noqa: E402


# One colour a prior wherever figures compare priors (training curves, kNN error against k)
PRIOR_COLOURS = {"gaussian": "tab:blue", "vampprior": "tab:orange", "exemplar": "tab:green"}


def _save(fig, out: str | Path) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _label(cfg, stand_in: bool = True) -> str:
    """The run a figure is drawn from (its `evae.config.TrainConfig`): dataset, architecture, prior and seed, and
    (unless ``stand_in`` is False) what the data are where they stand in for the paper's."""
    label = f"{cfg.dataset} / {cfg.architecture} / {cfg.prior} / seed {cfg.seed}"
    return _dataset_label(cfg.dataset, label) if stand_in else label


def _dataset_label(dataset: str, label: str) -> str:
    """``label`` of something drawn from ``dataset``, marked as a stand-in where it is one."""
    return label + (f" [STAND-IN: {STAND_INS[dataset]}]" if dataset in STAND_INS else "")


def _decoded(draws: bool) -> str:
    """What the generated images of a figure are."""
    return "draws from the decoder" if draws else "decoder means"


def _budget_note(budget: str | None) -> str:
    return "" if budget is None else f" [{budget}]"


def image_grid(images: np.ndarray, ncol: int, pad: int = 1) -> np.ndarray:
    """Tile images [n, H, W] (or [n, H, W, C]) into one array, row by row, ``pad`` blank pixels apart.

    Blank is 0 for gray images (ink = 1, drawn white by ``_show``) and 1 (white) for colour ones.
    """
    n, h, w = images.shape[:3]
    nrow = math.ceil(n / ncol)
    shape = (nrow * (h + pad) + pad, ncol * (w + pad) + pad, *images.shape[3:])
    grid = np.full(shape, 0.0 if images.ndim == 3 else 1.0, dtype=images.dtype)
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = img
    return grid


def _as_images(flat: torch.Tensor, shape) -> np.ndarray:
    """Flat images (values in [0, 1], or uint8 pixel levels) as [n, H, W] gray or [n, H, W, 3] colour arrays."""
    c, h, w = shape
    flat = flat.detach().cpu()
    x = (flat.float() / 255 if flat.dtype == torch.uint8 else flat).reshape(-1, c, h, w).numpy()
    return x[:, 0] if c == 1 else x.transpose(0, 2, 3, 1)


def _style(ax, title: str, xlabel: str, ylabel: str, legend_below: bool = False) -> None:
    """Title, axis labels, grid and legend (``legend_below``: under the axes, where it hides no line)."""
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if legend_below:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    else:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _show(ax, grid: np.ndarray, title: str) -> None:
    ax.imshow(grid, cmap="gray_r" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


@torch.no_grad()
def exemplar_samples(run_dir, out, seed: int = 0, n_exemplars: int = 8, per_exemplar: int = 8,
                     budget: str | None = None, draws: bool = False):
    """Each row: a training exemplar (left, boxed by a gap) and the decoder means (or, with ``draws``, draws)
    of p(x | z) for z ~ N(mu(x_n), s^2 I)."""
    run = runs.load_run(run_dir)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(run.data.train), generator=g)[:n_exemplars]
    exemplars = torch.from_numpy(run.data.train[idx.numpy()]).to(run.device)
    samples = run.model.generate(n_exemplars * per_exemplar, generator=g, index=idx.repeat_interleave(per_exemplar),
                                 draws=draws)
    ex = _as_images(exemplars, run.data.image_shape)
    sm = _as_images(samples, run.data.image_shape).reshape(n_exemplars, per_exemplar, *ex.shape[1:])
    blank = np.zeros_like(ex[:1]) if ex.ndim == 3 else np.ones_like(ex[:1])
    rows = [np.concatenate([ex[i : i + 1], blank, sm[i]]) for i in range(n_exemplars)]
    fig, ax = plt.subplots(figsize=(0.6 * (per_exemplar + 2), 0.6 * n_exemplars))
    title = f"exemplar | {_decoded(draws)} of exemplar-conditioned samples ({_label(run.cfg)}){_budget_note(budget)}"
    _show(ax, image_grid(np.concatenate(rows), per_exemplar + 2), title)
    _save(fig, out)


@torch.no_grad()
def cyclic_chains(model, steps: int, chains: int, generator: torch.Generator) -> torch.Tensor:
    """Cyclic generation: ``chains`` chains of ``steps`` steps, each started from an image of uniform noise.

    A step encodes the current image x, draws z ~ N(mu(x), s^2 I) from the exemplar kernel around its
    encoder mean (s: the exemplar prior's learned kernel scale) and decodes z to its mean image, which is
    the next step's exemplar: the decoder means (the Bernoulli means of the binary models), not images
    drawn from the decoder. Returns [chains, steps + 1, P] images on the decoder's [0, 1] scale: the noise,
    then each step's image. ``generator`` drives the noise and the kernel draws; the lower latent of
    two-level models comes from the global torch RNG.
    """
    scale = model.prior.component_scale()
    if scale is None:
        raise ValueError(f"cyclic generation draws from the exemplar kernel N(mu(x), s^2 I), which the model's "
                         f"{type(model.prior).__name__} does not have: use an exemplar-prior model")
    device = next(model.parameters()).device
    images = [torch.rand(chains, math.prod(model.image_shape), generator=generator).to(device)]
    for _ in range(steps):
        mean = model.encode(model.as_input(images[-1]))[0]
        noise = torch.randn(mean.shape, generator=generator).to(device)
        images.append(model.decode(mean + scale * noise))
    return torch.stack(images, 1)


@torch.no_grad()
def cyclic_generation(run_dir, out, seed: int = 0, chains: int = 10, steps: int = 30, budget: str | None = None):
    """Each row: one chain of `cyclic_chains`, its noise image (left, boxed by a gap), then its ``steps`` images."""
    run = runs.load_run(run_dir)
    torch.manual_seed(seed)  # two-level models draw z1 given z2
    images = cyclic_chains(run.model, steps, chains, torch.Generator().manual_seed(seed))
    cells = _as_images(images.reshape(chains * (steps + 1), -1), run.data.image_shape)
    cells = cells.reshape(chains, steps + 1, *cells.shape[1:])
    blank = np.zeros_like(cells[0, :1]) if cells.ndim == 4 else np.ones_like(cells[0, :1])
    rows = [np.concatenate([chain[:1], blank, chain[1:]]) for chain in cells]
    fig, ax = plt.subplots(figsize=(0.6 * (steps + 2), 0.6 * chains))
    title = (f"cyclic generation: uniform noise | {steps} steps x -> decoder mean of z ~ N(mu(x), s^2 I), "
             f"s = {run.model.prior.component_scale():.3g} ({_label(run.cfg)}){_budget_note(budget)}")
    _show(ax, image_grid(np.concatenate(rows), steps + 2), title)
    _save(fig, out)


@torch.no_grad()
def unconditional_samples(run_dirs, out, seed: int = 0, n: int = 64, budget: str | None = None, draws: bool = False):
    """Decoder means (or, with ``draws``, draws) of ``n`` prior samples from each run, one panel per run."""
    fig, axes = plt.subplots(1, len(run_dirs), figsize=(4 * len(run_dirs), 4.4), squeeze=False)
    datasets = []
    for ax, run_dir in zip(axes[0], run_dirs):
        run = runs.load_run(run_dir)
        samples = run.model.generate(n, generator=torch.Generator().manual_seed(seed), draws=draws)
        grid = image_grid(_as_images(samples, run.data.image_shape), int(math.sqrt(n)))
        _show(ax, grid, _label(run.cfg, stand_in=False))  # short panel titles: a stand-in is named once, above
        if run.cfg.dataset not in datasets:
            datasets.append(run.cfg.dataset)
    stand_ins = "".join(_dataset_label(d, "") for d in datasets)
    fig.suptitle(f"unconditional samples: {_decoded(draws)}{stand_ins}{_budget_note(budget)}", fontsize=10)
    _save(fig, out)


@torch.no_grad()
def interpolations(run_dir, out, seed: int = 0, pairs: int = 6, steps: int = 10, budget: str | None = None,
                   draws: bool = False):
    """Decoder means (or, with ``draws``, draws) along straight lines between the encoder means of pairs
    of test images (ends shown as data)."""
    run = runs.load_run(run_dir)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(run.data.test), generator=g)[: 2 * pairs].numpy()
    x = torch.from_numpy(run.data.test[idx]).to(run.device)
    mu = run.model.encode(x)[0]
    a, b = mu[:pairs], mu[pairs:]
    t = torch.linspace(0, 1, steps, device=mu.device)
    z = a[:, None] + t[None, :, None] * (b - a)[:, None]
    torch.manual_seed(seed)  # two-level models draw z1 given z2
    z = z.reshape(-1, z.shape[-1])
    decoded = _as_images(run.model.draw_images(z, g) if draws else run.model.decode(z), run.data.image_shape)
    decoded = decoded.reshape(pairs, steps, *decoded.shape[1:])
    ends = _as_images(x, run.data.image_shape)
    rows = [np.concatenate([ends[i : i + 1], decoded[i], ends[pairs + i : pairs + i + 1]]) for i in range(pairs)]
    fig, ax = plt.subplots(figsize=(0.6 * (steps + 2), 0.6 * pairs))
    title = f"interpolation of encoder means, {_decoded(draws)} ({_label(run.cfg)}){_budget_note(budget)}"
    _show(ax, image_grid(np.concatenate(rows), steps + 2), title)
    _save(fig, out)


@torch.no_grad()
def tsne(run_dir, out, points: int = 5000, seed: int = 0, budget: str | None = None):
    """t-SNE of the encoder means of test images (top latent for two-level models), coloured by class."""
    from sklearn.manifold import TSNE

    run = runs.load_run(run_dir)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(run.data.test), size=min(points, len(run.data.test)), replace=False))
    x = torch.from_numpy(run.data.test[idx]).to(run.device)
    mu = torch.cat([run.model.encode(x[i : i + 1000])[0] for i in range(0, len(x), 1000)]).cpu().numpy()
    emb = TSNE(n_components=2, perplexity=min(30.0, (len(mu) - 1) / 3), init="pca", random_state=seed).fit_transform(mu)
    labels = run.data.test_labels[idx]
    fig, ax = plt.subplots(figsize=(6, 6))
    sc = ax.scatter(emb[:, 0], emb[:, 1], c=labels, s=3, cmap="tab10" if labels.max() < 10 else "turbo")
    if labels.max() < 10:
        ax.legend(*sc.legend_elements(), fontsize=7, markerscale=0.8, loc="best", title="class")
    ax.set_title(f"t-SNE of encoder means, {len(mu)} test images ({_label(run.cfg)}){_budget_note(budget)}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    _save(fig, out)


@torch.no_grad()
def prior_comparison_data(run_dir, ks, seed: int = 0, images: int = 200) -> pd.DataFrame:
    """Exact exemplar log-prior (all N components) against its k-nearest-component truncation.

    For one posterior sample of each of ``images`` test images, the truncation keeps the k largest
    components and the same 1/N normaliser (the retrieval-augmented training bound): the gap
    log p(z) - log p_k(z) >= 0 is the nats the kNN approximation loses.
    """
    run = runs.load_run(run_dir)
    torch.manual_seed(seed)
    x = torch.from_numpy(run.data.test_binary[:images]).to(run.device)
    gaps = run.model.prior.truncation_gaps(run.model.sample_pass(x).z, ks)
    rows = []
    for k, gap in gaps.items():
        gap = gap.cpu().numpy()
        rows.append({"k": k, "gap_mean": gap.mean(), "gap_p90": np.quantile(gap, 0.9), "gap_max": gap.max()})
    return pd.DataFrame(rows)


def prior_comparison(run_dir, out, ks, seed: int = 0, budget: str | None = None):
    """How far the kNN (retrieval) approximation of the exemplar prior is from the exact mixture."""
    df = prior_comparison_data(run_dir, ks, seed)
    fig, ax = plt.subplots(figsize=(6, 4))
    for col, style in (("gap_mean", "o-"), ("gap_p90", "s--"), ("gap_max", "^:")):
        ax.plot(df["k"], df[col].clip(lower=1e-12), style, label=col.replace("gap_", ""))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("k nearest exemplars kept")
    ax.set_ylabel("log p(z) exact - kNN truncation (nats)")
    ax.set_title(f"exact vs kNN exemplar prior ({_label(runs.read_config(run_dir))}){_budget_note(budget)}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    _save(fig, out)


def training_curves(run_dirs, out, budget: str | None = None):
    """Validation -ELBO per epoch, one panel per (dataset, architecture), one line per run (prior and seed), each run
    as far as it has come (a run in progress has its config and metrics but no summary yet). Each panel's y-axis
    starts a tenth of the way into its longest run: the first epochs' losses, tens of nats above the rest, would
    flatten the curves where the priors differ."""
    curves = []
    for run_dir in run_dirs:
        cfg = runs.read_config(run_dir)
        metrics = pd.DataFrame(runs.read_metrics(run_dir))
        curves.append(((cfg.dataset, cfg.architecture), cfg.prior, metrics))
    panels = sorted({r[0] for r in curves})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        seen = set()
        shown = [(prior, m) for key, prior, m in curves if key == panel]
        for prior, m in shown:
            ax.plot(m["epoch"], m["val_loss"], color=PRIOR_COLOURS.get(prior), alpha=0.8,
                    label=None if prior in seen else prior)
            seen.add(prior)
        ax.set_ylim(*_loss_range([m for _, m in shown]))
        _style(ax, _dataset_label(panel[0], f"{panel[0]} / {panel[1]}"), "epoch", "validation -ELBO (nats)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"training curves{_budget_note(budget)}", fontsize=10)
    _save(fig, out)


def _loss_range(metrics: list[pd.DataFrame]) -> tuple[float, float]:
    """The validation losses of one panel from a tenth of the way into its longest run on, with a margin."""
    start = max(int(m["epoch"].max()) for m in metrics) // 10
    later = pd.concat([m.loc[m["epoch"] >= start, "val_loss"] for m in metrics])
    low, high = float(later.min()), float(later.max())
    margin = 0.05 * (high - low) or 1.0
    return low - margin, high + margin


def knn_error_vs_k(result_paths, out, budget: str | None = None):
    """kNN test error against k for each trained model's latent space (one colour a prior, one line style an
    architecture, one line a seed), and in pixel space."""
    results = [runs.read_result(p) for p in result_paths]
    datasets = sorted({r["run"]["config"]["dataset"] for r in results})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        models: dict[tuple[str, str], list[dict]] = {}  # (architecture, prior) -> its seeds' results
        for r in sorted(results, key=lambda r: r["run"]["config"]["seed"]):
            cfg = r["run"]["config"]
            if cfg["dataset"] == dataset:
                models.setdefault((cfg["architecture"], cfg["prior"]), []).append(r)
        architectures = list(dict.fromkeys(a for a, _ in models))
        for (architecture, prior), seeds in models.items():
            chosen = ", ".join(f"s{r['run']['config']['seed']}: {r['latent']['k']}" for r in seeds)
            style = ("o-", "s:", "^-.")[architectures.index(architecture) % 3]
            for i, r in enumerate(seeds):
                ks, err = zip(*sorted((int(k), v) for k, v in r["latent"]["test_error_by_k"].items()))
                ax.plot(ks, err, style, color=PRIOR_COLOURS.get(prior), alpha=0.8, markersize=4,
                        label=f"{architecture}/{prior} (k* {chosen})" if i == 0 else None)
        pixel = next((r["pixel"] for r in results if r["run"]["config"]["dataset"] == dataset and r.get("pixel")), None)
        if pixel:
            pks, perr = zip(*sorted((int(k), v) for k, v in pixel["test_error_by_k"].items()))
            ax.plot(pks, perr, "k--", label="pixel space")
        _style(ax, _dataset_label(dataset, dataset), "k", "test error (%)", legend_below=True)
    fig.suptitle(f"kNN classification error on encoder means{_budget_note(budget)}", fontsize=10)
    _save(fig, out)
