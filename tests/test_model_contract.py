"""The model contract (issue 9, item 6): every model in ``dispart.models.registry.REGISTRY`` goes
through encode / decode / loss / sample / hparams / evaluate / generate on a tiny REAL batch.

Nothing here names a model: the cases are built from the registry, so a new model is covered by
its one registry line. For each registered model:

- hyper-parameters come from its config dataclass (:func:`tiny_overrides`: every int size field
  -> 9, 11, 13, ... and every hidden width -> 16; the other fields keep their defaults);
- modalities are every setting of :data:`SETTINGS` the model accepts (its constructor, through
  ``training.run.model_hparams``, decides: PVAE/JMVAE refuse one modality, VAE refuses two);
- the batch is real: 5 test utterances of the embedded FSDD sample (log-Mel through
  ``dispart.batches.pipeline``, five different lengths, so padding is exercised), MNIST sample
  images of the same digits (binarised for the image + label settings, as in the mnist_label
  configs) and the digit labels.

Expected values come from the latent declarations (``model.latents``) and numpy closed forms,
never from the code under test. The run-folder tests train each model for one epoch through
``dispart.training.run.train`` (one module-scoped fixture per model), then run ``evaluate_run``
and ``generate_run`` on the result.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import shutil
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from model_helpers import kl_diag, lstm_prior_params, np64, unit_gauss_logpdf

from dispart.batches.batch import Sequences
from dispart.batches.paired import collate_paired
from dispart.batches.pipeline import ExperimentData, load_experiment_data
from dispart.config import ExperimentConfig, load_config
from dispart.errors import ConfigError, RunDirError
from dispart.files import file_sha256
from dispart.models import build_model
from dispart.models.base import MultimodalModel
from dispart.models.latents import Latent, of_modality
from dispart.models.priors import LSTMPrior, StandardNormalPrior
from dispart.models.registry import REGISTRY
from dispart.training.run import model_hparams

pytestmark = pytest.mark.usefixtures("single_thread")

DEMO = Path(__file__).parent / "sample.yaml"  # the embedded sample: FSDD wavs + MNIST npz
B = 5  # rows of the tiny batch; differs from every size below, so a transposed axis shows
PNG = b"\x89PNG\r\n\x1a\n"

# Settings: modalities and the data they come with. "binary" images are the mnist_label
# configs' (stochastically binarised, Bernoulli likelihood, 784-dim MLP networks).
BINARY = ("data.binarize=stochastic", "model.image_net=mlp")
SETTINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "speech+image": (("audio", "image"), ()),
    "image+label": (("image", "label"), BINARY),
    "speech+image+label": (("audio", "image", "label"), ()),
    "speech": (("audio",), ()),
    "image": (("image",), BINARY),
}
# The run folders of each model: the first setting it accepts from each group.
RUN_SETTINGS = (("speech+image", "speech"), ("image+label", "image"))
TABLE_COLUMN = {"audio": "speech", "image": "image"}  # modality -> Table 1 column

# Parameters that may legitimately receive no gradient from ``loss`` on a complete batch, per
# registry name (parameter-name regex). Every network of every model is trained by its objective
# on complete data, except MDVAE's frozen stage-1 VQ-VAEs (``vq.<modality>.``, requires_grad False).
NO_GRADIENT: dict[str, str] = {"mdvae": r"^vq\."}

_SIZE = re.compile(r"(^|_)(dim|size)$")
_WIDTH = re.compile(r"(^|_)(hidden|width)$")


def tiny_overrides(name: str) -> list[str]:
    """``model.<field>=<value>`` overrides of registered model ``name`` that make it tiny: int
    fields named like a size (``*_dim``, ``*_size``) get distinct values 9, 11, 13, ... and int
    widths (``hidden``, ``*_hidden``) 16; other fields keep the config dataclass's defaults."""
    config = REGISTRY[name].config
    hints = typing.get_type_hints(config)
    sizes = itertools.cycle((9, 11, 13, 15, 10, 12, 14))
    out = []
    for f in dataclasses.fields(config):
        if hints[f.name] is not int:
            continue
        if _WIDTH.search(f.name):
            out.append(f"model.{f.name}=16")
        elif _SIZE.search(f.name):
            out.append(f"model.{f.name}={next(sizes)}")
    return out


def case_config(name: str, setting: str, extra: tuple[str, ...] = ()) -> ExperimentConfig:
    mods, overrides = SETTINGS[setting]
    return load_config(DEMO, [f"model.name={name}", f"model.display_name={name}",
                              f"model.modalities=[{','.join(mods)}]", *tiny_overrides(name),
                              *overrides, *extra])


def supported(name: str, setting: str) -> bool:
    """Whether model ``name`` accepts the modalities of ``setting`` (its constructor decides)."""
    try:
        model_hparams(case_config(name, setting))
    except ConfigError:
        return False
    return True


CASES = [(n, s) for n in REGISTRY for s in SETTINGS if supported(n, s)]
RUNS = {n: [next((s for s in group if supported(n, s)), None) for group in RUN_SETTINGS]
        for n in REGISTRY}


def case_id(case: tuple[str, str]) -> str:
    return f"{case[0]}-{case[1]}"


@pytest.fixture(params=CASES, ids=case_id)
def case(request) -> tuple[str, str]:
    return request.param


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def data() -> dict[str, ExperimentData]:
    """The embedded sample as training loads it: speech + images, and binarised images only."""
    return {"speech": load_experiment_data(load_config(DEMO).data, progress=False),
            "binary": load_experiment_data(load_config(DEMO, list(BINARY)).data, progress=False,
                                           speech=False)}


@pytest.fixture(scope="module")
def examples(data) -> dict[str, dict[str, Any]]:
    """Two tiny real batches holding every modality: "speech" (5 test utterances of 5 different
    lengths, each with the first test image of its digit, collated as training does) and
    "binary" (5 binarised test images of different digits with their labels)."""
    sp, im = data["speech"].split("audio", "test"), data["speech"].split("image", "test")
    lengths = np.array(sp.lengths())
    order = np.argsort(lengths, kind="stable")
    picks = [int(order[round(q * (len(order) - 1))]) for q in np.linspace(0, 1, B)]
    assert len({lengths[i] for i in picks}) == B, "the sample has too few distinct lengths"
    im_labels = np.asarray([str(v) for v in im.labels])
    items = []
    for i in picks:
        j = int(np.flatnonzero(im_labels == str(sp.labels[i]))[0])
        items.append({"audio": sp.examples[i], "image": np.asarray(im.examples[j])[None],
                      "label": int(sp.labels[i]), "index": i})
    speech = collate_paired(items)
    bim = data["binary"].split("image", "test")
    labels = np.asarray([int(v) for v in bim.labels])
    rows = [int(np.flatnonzero(labels == d)[0]) for d in np.unique(labels)[:B]]
    binary = {"image": torch.as_tensor(np.asarray(bim.examples)[rows]),
              "label": torch.as_tensor(labels[rows])}
    assert set(np.unique(binary["image"].numpy())) <= {0.0, 1.0}
    return {"speech": speech, "binary": binary}


def batch_for(model: MultimodalModel, setting: str, examples) -> dict[str, Any]:
    """The tiny batch of ``setting``, each modality shaped as the model's spec says."""
    full = examples["binary" if SETTINGS[setting][1] else "speech"]
    out: dict[str, Any] = {}
    for m in model.modalities:
        x = full[m]
        if model.specs[m].kind in ("image", "vector"):
            x = x.reshape(len(x), *model.specs[m].shape)
        out[m] = x
    return out


def build(name: str, setting: str) -> MultimodalModel:
    torch.manual_seed(0)
    return build_model(model_hparams(case_config(name, setting)))


# --------------------------------------------------------------------------- helpers


def lengths_of(batch: Mapping[str, Any]) -> torch.Tensor | None:
    seqs = [x for x in batch.values() if isinstance(x, Sequences)]
    return seqs[0].lengths if seqs else None


def latent_shape(latent: Latent, n: int, t: int | None) -> tuple[int, ...]:
    """(n, D) for a static latent, (n, T, D) for a dynamic one."""
    return (n, t, latent.size) if latent.dynamic else (n, latent.size)


def observation_shape(model: MultimodalModel, m: str, n: int, t: int | None) -> tuple[int, ...]:
    """What ``decode`` returns for modality ``m``: (n, T, *frame) sequences, else (n, *shape)."""
    spec = model.specs[m]
    return (n, t, *spec.shape) if spec.dynamic else (n, *spec.shape)


def random_latents(model: MultimodalModel, names, n: int, lengths: torch.Tensor | None,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = None if lengths is None else int(lengths.max())
    return {k: torch.randn(latent_shape(model.latents[k], n, t), generator=g) for k in names}


def state(model: MultimodalModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(before: Mapping[str, torch.Tensor], model: MultimodalModel) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert changed == [], f"parameters/buffers changed: {changed}"


def modes(model: MultimodalModel) -> list[bool]:
    return [m.training for m in model.modules()]


def expected_latents(model: MultimodalModel, present) -> set[str]:
    """Latents the declarations say ``present`` informs (a latent informed by any of them)."""
    return {k for k, v in model.latents.items() if set(v.modalities) & set(present)}


def frame_counts(latent: Latent, batch: Mapping[str, Any]) -> torch.Tensor:
    """(B,) valid frames of a dynamic latent: lengths of its first sequence modality in batch."""
    for m in latent.modalities:
        if isinstance(batch.get(m), Sequences):
            return batch[m].lengths
    raise AssertionError(f"dynamic latent {latent.name} has no sequence modality in the batch")


def check_posteriors(model: MultimodalModel, q, batch, present) -> None:
    assert set(q) == expected_latents(model, present), f"encode from {present}"
    for k, post in q.items():
        lat = model.latents[k]
        t = int(frame_counts(lat, batch).max()) if lat.dynamic else None
        shape = latent_shape(lat, B, t)
        assert tuple(post.mean.shape) == shape, f"{k} from {present}"
        assert tuple(post.stddev.shape) == shape
        assert torch.isfinite(post.mean).all() and torch.isfinite(post.stddev).all()
        assert (post.stddev > 0).all()


# --------------------------------------------------------------------------- coverage


def test_every_registered_model_has_cases_and_run_folders():
    names = {n for n, _ in CASES}
    assert names == set(REGISTRY), f"registered models without any supported setting: " \
                                   f"{set(REGISTRY) - names}"
    for n, runs in RUNS.items():
        assert any(runs), f"{n}: no run setting in {RUN_SETTINGS} (got {runs})"
    # The settings really are decided by the models: multimodal models take 2 and 3 modalities,
    # and at least one registered model (VAE) refuses two.
    assert any(s == "speech+image+label" for _, s in CASES)
    assert any(not supported(n, "speech+image") for n in REGISTRY)


def test_tiny_overrides_come_from_the_config_dataclass():
    for name, e in REGISTRY.items():
        overrides = dict(o.removeprefix("model.").split("=") for o in tiny_overrides(name))
        fields = {f.name for f in dataclasses.fields(e.config)}
        assert set(overrides) <= fields
        assert "hidden" not in fields or overrides["hidden"] == "16"
        hidden = {k for k in overrides if k == "hidden" or k.endswith("_hidden")}
        assert all(overrides[k] == "16" for k in hidden)
        sizes = [int(v) for k, v in overrides.items() if k not in hidden]
        assert len(sizes) == len(set(sizes)) and all(8 <= s <= 16 for s in sizes)
        cfg = case_config(name, next(s for n, s in CASES if n == name))
        assert {k: getattr(cfg.model, k) for k in overrides} == {k: int(v) for k, v in overrides.items()}


# --------------------------------------------------------------------------- encode


def test_encode_gives_the_declared_latents(case, examples):
    name, setting = case
    model = build(name, setting).eval()
    batch = batch_for(model, setting, examples)
    assert model.latent_sizes() == {k: v.size for k, v in model.latents.items()}
    for m in model.modalities:
        informed = of_modality(model.latents, m)
        assert informed, f"modality {m} informs no latent"
        assert set(model.content_latents(m)) | set(model.style_latents(m)) == set(informed)
    with torch.no_grad():
        check_posteriors(model, model.encode(batch), batch, model.modalities)
        # a proper subset of several modalities: the declared latents, or a clear refusal
        # (JMVAE-kl has encoders for all modalities and for single ones only: docs/models.md)
        for r in range(2, len(model.modalities)):
            for sub in itertools.combinations(model.modalities, r):
                try:
                    q = model.encode({m: batch[m] for m in sub})
                except ValueError as e:
                    assert model.name in str(e) or "subset" in str(e), str(e)
                    continue
                check_posteriors(model, q, batch, sub)
        for m in model.modalities:
            q = model.encode({m: batch[m]})
            assert set(q) == set(model.latent_names(m)) == {v.name for v in of_modality(model.latents, m)}
            check_posteriors(model, q, {m: batch[m]}, (m,))
            # A row's posterior depends on that row only (not on the others, nor on padding).
            for i in (0, B - 1):
                one = {m: batch[m].index(torch.tensor([i])) if isinstance(batch[m], Sequences)
                       else batch[m][i:i + 1]}
                q1 = model.encode(one)
                for k, post in q.items():
                    t = q1[k].mean.shape[1] if model.latents[k].dynamic else None
                    got = post.mean[i:i + 1] if t is None else post.mean[i:i + 1, :t]
                    torch.testing.assert_close(got, q1[k].mean, atol=2e-5, rtol=1e-4)
    assert not model.training


# --------------------------------------------------------------------------- decode


@pytest.mark.parametrize("training", [False, True])
def test_decode_shapes_masking_and_no_side_effects(case, examples, training):
    name, setting = case
    model = build(name, setting).train(training)
    batch = batch_for(model, setting, examples)
    lengths = lengths_of(batch)
    before, flags = state(model), modes(model)
    for m in model.modalities:
        names = model.decoder_latents(m)
        assert names and set(names) <= set(model.latents)
        seq = model.specs[m].dynamic
        ln = lengths if seq or any(model.latents[k].dynamic for k in names) else None
        z = random_latents(model, names, B, ln)
        x = model.decode(z, m, ln if seq else None)
        t = int(lengths.max()) if seq else None
        assert tuple(x.shape) == observation_shape(model, m, B, t), m
        assert torch.isfinite(x).all()
        if seq:  # zeros past each length, and something on the valid frames
            valid = torch.arange(t)[None, :] < lengths[:, None]
            assert (x[~valid] == 0).all() and (x[valid].abs().sum(-1) > 0).all()
        if model.specs[m].likelihood == "categorical":
            torch.testing.assert_close(x.sum(-1), torch.ones(B))
        if model.specs[m].likelihood == "bernoulli":
            assert ((x > 0) & (x < 1)).all()
        again = model.decode(dict(z), m, ln if seq else None)
        assert torch.equal(x, again), f"decode({m}) is not deterministic"
        # decode reads exactly the latents it declares: others are ignored, each one matters
        extra = random_latents(model, [k for k in model.latents if k not in names], B, lengths, seed=1)
        assert torch.equal(model.decode({**z, **extra}, m, ln if seq else None), x)
        for k in names:
            moved = model.decode({**z, k: z[k] + 1.0}, m, ln if seq else None)
            assert not torch.allclose(moved, x), f"decode({m}) ignores its latent {k}"
    assert_same_state(before, model)
    assert modes(model) == flags


# --------------------------------------------------------------------------- loss


def test_loss_is_finite_trains_every_parameter_and_is_reproducible(case, examples):
    name, setting = case
    model = build(name, setting).train()
    batch = batch_for(model, setting, examples)
    torch.manual_seed(1)
    out = model.loss(batch)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.terms and all(v.dim() == 0 and torch.isfinite(v) for v in out.terms.values())
    out.loss.backward()
    allowed = re.compile(NO_GRADIENT[name]) if name in NO_GRADIENT else None
    no_grad, bad = [], []
    for k, p in model.named_parameters():
        if p.grad is None or not bool(p.grad.abs().sum() > 0):
            if not (allowed and allowed.search(k)):
                no_grad.append(k)
        elif not torch.isfinite(p.grad).all():
            bad.append(k)
    assert no_grad == [], f"parameters the loss does not train: {no_grad}"
    assert bad == []
    # eval mode, fixed seed: the same value twice, and no parameter or buffer moves
    model.zero_grad()
    model.eval()
    before = state(model)
    values = []
    for _ in range(2):
        torch.manual_seed(7)
        with torch.no_grad():
            values.append(model.loss(batch).loss)
    assert torch.equal(values[0], values[1])
    assert_same_state(before, model)


def observed(model: MultimodalModel, m: str, x: Any) -> Any:
    """What p(x^m | z) is a density over: ``x`` itself, or for a model that learns inside a frozen
    feature map its ``observed(m, x)`` (MDVAE: the stage-1 VQ-VAE encodings of x)."""
    return model.observed(m, x) if hasattr(model, "observed") else x


def _np_log_lik(model: MultimodalModel, m: str, params: torch.Tensor, x: Any) -> np.ndarray:
    """(B,) log p(x^m | z) from the decoder's parameters, by hand (float64 numpy)."""
    lik = model.specs[m].likelihood
    if lik == "categorical":
        logits = np64(params)
        log_softmax = logits - logits.max(-1, keepdims=True)
        log_softmax = log_softmax - np.log(np.exp(log_softmax).sum(-1, keepdims=True))
        return log_softmax[np.arange(len(logits)), np64(x).astype(int)]
    if isinstance(x, Sequences):
        xs, mask = np64(x.data), np64(x.mask())
    else:
        xs, mask = np64(x), None
    p = np64(params)
    if lik == "gaussian":
        elem = unit_gauss_logpdf(xs, p)
    elif lik == "bernoulli":
        elem = xs * -np.logaddexp(0, -p) + (1 - xs) * -np.logaddexp(0, p)
    else:
        pytest.fail(f"no numpy form for the {lik!r} likelihood: add it here")
    if mask is not None:
        elem = elem * mask.reshape(mask.shape + (1,) * (elem.ndim - 2))
    return elem.reshape(len(elem), -1).sum(-1)


def _np_kl(model: MultimodalModel, k: str, post, z: torch.Tensor, batch) -> np.ndarray:
    """(B,) KL(q || prior) of latent ``k`` by hand (float64): closed form per vector, summed
    over the valid frames of a dynamic latent (its prior teacher-forced on the sample z)."""
    prior = model.priors[k]
    mean, logvar = np64(post.mean), 2 * np.log(np64(post.stddev))
    if isinstance(prior, StandardNormalPrior):
        p_mean, p_logvar = np.zeros_like(mean), np.zeros_like(logvar)
    elif isinstance(prior, LSTMPrior):
        p_mean, p_logvar = lstm_prior_params(prior, z)
    else:
        pytest.fail(f"no numpy form for the prior {type(prior).__name__}: add it here")
    kl = kl_diag(mean, logvar, p_mean, p_logvar)
    if model.latents[k].dynamic:
        lengths = np64(frame_counts(model.latents[k], batch))
        kl = (kl * (np.arange(kl.shape[1])[None, :] < lengths[:, None])).sum(-1)
    return kl


def test_elbo_terms_match_numpy(case, examples):
    """The one ELBO helper every objective is built on: log-likelihoods of the decoded
    parameters and KLs to the model's own priors, recomputed by hand."""
    name, setting = case
    model = build(name, setting).eval()
    batch = batch_for(model, setting, examples)
    with torch.no_grad():
        q = model.encode(batch)
        torch.manual_seed(3)
        e = model.elbo(batch, q, model.modalities)
        params = {m: model.decode_params(e.z, m, lengths_of(batch)) for m in model.modalities}
    assert set(e.z) == set(e.kl) == set(q)
    for k, post in q.items():
        assert tuple(e.z[k].shape) == tuple(post.mean.shape)
        np.testing.assert_allclose(np64(e.kl[k]), _np_kl(model, k, post, e.z[k], batch),
                                   rtol=1e-4, atol=1e-4)
    rec = {m: _np_log_lik(model, m, params[m], observed(model, m, batch[m])) for m in model.modalities}
    for m in model.modalities:
        np.testing.assert_allclose(np64(e.rec[m]), rec[m], rtol=1e-4, atol=1e-3)
    kl_total = sum(np64(e.kl[k]) for k in q)
    np.testing.assert_allclose(np64(e.value), sum(rec.values()) - kl_total, rtol=1e-4, atol=1e-3)


# --------------------------------------------------------------------------- sample


def test_sample_draws_every_latent_from_its_prior_and_decodes(case, examples):
    """``model.sample(n, modality, lengths, generator)``: latents of the declared shapes from the
    priors, the decoded mean of the modality, reproducible, without side effects."""
    name, setting = case
    model = build(name, setting).train()
    lengths = lengths_of(batch_for(model, setting, examples))
    dynamic_model = any(v.dynamic for v in model.latents.values())
    before, flags = state(model), modes(model)
    for m in model.modalities:
        seq = model.specs[m].dynamic
        ln = lengths if seq or dynamic_model else None
        rng = torch.get_rng_state()
        s = model.sample(B, m, ln, generator=torch.Generator().manual_seed(5))
        assert torch.equal(torch.get_rng_state(), rng), "sample with a generator used the global RNG"
        assert set(s.z) == set(model.latents)
        t = None if ln is None else int(ln.max())
        for k, v in s.z.items():
            lat = model.latents[k]
            assert tuple(v.shape) == latent_shape(lat, B, t) and torch.isfinite(v).all()
            if lat.dynamic:  # zero past each length
                assert (v[torch.arange(t)[None, :] >= ln[:, None]] == 0).all()
        assert tuple(s.x.shape) == observation_shape(model, m, B, t if seq else None)
        assert torch.isfinite(s.x).all()
        if ln is None:
            assert s.lengths is None
        else:
            assert torch.equal(s.lengths, ln)
        if seq:
            assert (s.x[torch.arange(t)[None, :] >= ln[:, None]] == 0).all()
        # the observation is the decoded mean of those latents (eval mode)
        model.eval()
        with torch.no_grad():
            x = model.decode({k: s.z[k] for k in model.decoder_latents(m)}, m, ln if seq else None)
        model.train()
        torch.testing.assert_close(s.x, x)
        again = model.sample(B, m, ln, generator=torch.Generator().manual_seed(5))
        other = model.sample(B, m, ln, generator=torch.Generator().manual_seed(6))
        assert all(torch.equal(s.z[k], again.z[k]) for k in s.z) and torch.equal(s.x, again.x)
        assert not torch.equal(s.x, other.x)
        if seq:
            assert torch.equal(model.sample(2, m, 7).lengths, torch.tensor([7, 7]))
            with pytest.raises(ValueError, match="lengths"):
                model.sample(2, m)
    with pytest.raises(ValueError, match="nonsense"):
        model.sample(2, "nonsense")
    assert_same_state(before, model)
    assert modes(model) == flags
    # N(0, I) priors: 4000 static draws have mean 0 and variance 1 per dimension (numpy)
    torch.manual_seed(0)
    with torch.no_grad():
        big = model.sample_prior(4000, None if lengths is None else lengths[:1].repeat(4000))
    for k, v in big.items():
        if isinstance(model.priors[k], StandardNormalPrior) and not model.latents[k].dynamic:
            a = np64(v)
            assert np.abs(a.mean(0)).max() < 6 / math.sqrt(4000)
            assert np.abs(a.var(0) - 1).max() < 0.12


# --------------------------------------------------------------------------- hparams


def test_hparams_round_trip(case, examples):
    name, setting = case
    model = build(name, setting).eval()
    batch = batch_for(model, setting, examples)
    h = model.hparams()
    assert json.loads(json.dumps(h)) == h  # run.json stores it as plain JSON
    assert h["name"] == name and [s["name"] for s in h["modalities"]] == list(SETTINGS[setting][0])
    tiny = {o.removeprefix("model.").split("=")[0]: int(o.split("=")[1]) for o in tiny_overrides(name)}
    assert {k: h[k] for k in tiny} == tiny
    assert model.config == REGISTRY[name].config(**{k: v for k, v in h.items()
                                                    if k not in ("name", "modalities")})
    for k, lat in model.latents.items():
        if lat.size in tiny.values():
            continue
        # a size computed from config sizes (VQ-VAE: code vectors per frame x code_dim): changing
        # one size field of the config changes it
        changed = []
        for f in tiny:
            with torch.device("meta"):
                other = build_model({**h, f: tiny[f] + 2})
            changed += [f] if other.latents[k].size != lat.size else []
        assert changed, f"latent {k} is not sized by the config"
    torch.manual_seed(123)  # other initial weights
    copy = build_model(json.loads(json.dumps(h))).eval()
    assert type(copy) is type(model) and copy.latents == model.latents
    src, dst = model.state_dict(), copy.state_dict()
    assert {k: tuple(v.shape) for k, v in dst.items()} == {k: tuple(v.shape) for k, v in src.items()}
    copy.load_state_dict(src)
    with torch.no_grad():
        for present in [model.modalities, *((m,) for m in model.modalities)]:
            sub = {m: batch[m] for m in present}
            a, b = model.encode(sub), copy.encode(sub)
            assert set(a) == set(b)
            for k in a:
                assert torch.equal(a[k].mean, b[k].mean) and torch.equal(a[k].stddev, b[k].stddev)


def test_bad_input_is_a_clear_error(case, examples):
    name, setting = case
    model = build(name, setting).eval()
    batch = batch_for(model, setting, examples)
    m = model.modalities[0]
    # A key the model does not know is refused naming it, or ignored (VAE: other modalities of
    # a paired batch, docs/models.md): it never changes the result.
    with torch.no_grad():
        try:
            q = model.encode({**batch, "nonsense": torch.zeros(B, 3)})
        except ValueError as e:
            assert "nonsense" in str(e)
        else:
            ref = model.encode(batch)
            assert all(torch.equal(q[k].mean, ref[k].mean) for k in ref) and set(q) == set(ref)
    with pytest.raises(ValueError, match="nonsense"):
        model.encode({"nonsense": torch.zeros(B, 3)})
    with pytest.raises(ValueError, match="nonsense"):
        model.loss({"nonsense": torch.zeros(B, 3)})
    x = batch[m]
    wrong = (Sequences(x.data[..., :-1], x.lengths) if isinstance(x, Sequences)
             else torch.zeros(B, 3, 5) if model.specs[m].kind != "categorical" else torch.zeros(B, 3))
    with pytest.raises(ValueError, match=repr(m)):
        model.encode({m: wrong})
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        build_model({**model.hparams(), "nonsense_dim": 3})


# --------------------------------------------------------------------------- generation unit


def test_fig2_rows_decode_every_modality_including_a_label(examples):
    from dispart.generation.grids import shared_latent_rows

    name = next(n for n, s in CASES if s == "speech+image+label"
                and all(len(build(n, "speech+image").latent_names(m)) == 1 for m in ("audio", "image")))
    model = build(name, "speech+image+label").eval()
    images = list(examples["speech"]["image"][:2, 0].numpy())
    grid = shared_latent_rows(model, "image", images)
    assert grid.row_modalities == list(model.modalities)
    assert grid.cells[model.modalities.index("label")][0].shape == (10,)


# --------------------------------------------------------------------------- run folders

FAST = ("train.epochs=1", "train.batch_size=64", "train.progress_bar=false", "train.log_every_n_steps=1",
        "eval.k_max=3", "train.checkpoint_every_steps=0")


@pytest.fixture(scope="module", params=list(REGISTRY))
def trained(request, tmp_path_factory, data) -> dict[str, Any]:
    """Model ``request.param`` trained for one epoch (batch 64, hidden 16) on the embedded sample
    through ``dispart.training.run.train``, for each setting of RUN_SETTINGS it accepts:
    {"name", "runs": {setting: run folder}}."""
    from dispart.training.run import train

    name = request.param
    base = tmp_path_factory.mktemp(f"contract_{name}")
    runs = {}
    for setting in RUNS[name]:
        if setting is None:  # e.g. a speech-only model has no image run
            continue
        cfg = case_config(name, setting, FAST)
        out = base / setting
        train(cfg, out, data=data["binary" if SETTINGS[setting][1] else "speech"])
        runs[setting] = out
    return {"name": name, "runs": runs}


def _share_judges(run: Path, shared: Path, before: bool) -> None:
    """The digit classifiers that judge coherence depend on the data only (their JSON records
    the data signature and they are retrained when it differs): train them once per data."""
    src, dst = (shared, run / "classifiers") if before else (run / "classifiers", shared)
    if src.is_dir() and not dst.exists():
        shutil.copytree(src, dst)


def load(run: Path) -> MultimodalModel:
    from dispart.runs import load_run

    return load_run(run).model


@pytest.mark.slow
def test_run_folder_holds_the_tiny_model(trained):
    from dispart.runs import load_run

    name = trained["name"]
    for setting, run in trained["runs"].items():
        loaded = load_run(run)
        h = loaded.model.hparams()
        with torch.device("meta"):  # the model the config describes, as build_model completes it
            described = build_model(model_hparams(case_config(name, setting, FAST))).hparams()
        assert h == described
        if REGISTRY[name].stage1 is not None:  # two stages: the stage-1 runs the model was built on
            assert loaded.info["data"]["stage1"] == {
                m: {"path": f"stage1_{m}",
                    "weights_sha256": file_sha256(run / f"stage1_{m}" / "model.safetensors")}
                for m in loaded.model.modalities}
        assert loaded.weights_sha256 == file_sha256(run / "model.safetensors")
        assert json.loads((run / "train_summary.json").read_text())["global_step"] >= 1
        assert all(torch.isfinite(v).all() for v in loaded.model.state_dict().values()
                   if v.is_floating_point())


@pytest.mark.slow
def test_evaluate_run_rows_follow_the_declarations(trained, data, tmp_path_factory):
    from dispart.evaluation.evaluate import evaluate_run

    judges = tmp_path_factory.getbasetemp() / "contract_judges"
    for setting, run in trained["runs"].items():
        binary = bool(SETTINGS[setting][1])
        shared = judges / ("binary" if binary else "speech")
        _share_judges(run, shared, before=True)
        result = evaluate_run(run, progress=False, data=data["binary" if binary else "speech"])
        _share_judges(run, shared, before=False)
        model = load(run)
        with_data = [m for m in ("audio", "image") if m in model.modalities
                     and not (binary and m == "audio")]
        want = sorted((TABLE_COLUMN[m], lat.symbol, lat.role)
                      for m in with_data for lat in of_modality(model.latents, m))
        got = sorted((r["modality"], r["latent"], r["role"]) for r in result["rows"])
        assert got == want, setting
        assert all(0.0 <= r["purity"] <= 1.0 for r in result["rows"])
        assert result["latents"] == {k: v.to_dict() for k, v in model.latents.items()}
        assert set(result["estimated_num_classes"]) == {f"{c}/{s}" for c, s, _ in want}
        assert result["weights_sha256"] == file_sha256(run / "model.safetensors")
        on_disk = json.loads((run / "evaluation.json").read_text())
        assert on_disk["rows"] == result["rows"]
        if "audio" in model.modalities and "label" not in model.modalities:
            assert "subsets" not in result
            continue
        # any-subset evaluation: every non-empty subset is either evaluated or refused
        sub = result["subsets"]
        subsets = {frozenset(c) for r in range(1, len(model.modalities) + 1)
                   for c in itertools.combinations(model.modalities, r)}
        given = [frozenset(r["given"]) for r in sub["subsets"]]
        refused = [frozenset(r["given"]) for r in sub["unsupported"]]
        assert sorted(map(sorted, given + refused)) == sorted(map(sorted, subsets))
        assert frozenset(model.modalities) in given
        for r in sub["subsets"]:
            content = [lat.name for lat in model.latents.values()
                       if lat.role == "content" and set(lat.modalities) & set(r["given"])]
            assert r["latent"] == content[0]
            assert set(r["coherence"]) == set(model.modalities) - set(r["given"])
            assert 0.0 <= r["purity"] <= 1.0
            assert all(0.0 <= v <= 1.0 for v in r["coherence"].values())


def _expected_grids(model: MultimodalModel) -> list[str] | None:
    """Grid names the declarations allow (None: nothing to generate, a RunDirError): a content
    latent shared by speech and images plus one style latent each -> style / cross / prior grids;
    one shared content latent and nothing else -> the JMVAE-kl Fig. 2 rows."""
    mods = ("image", "audio")
    roles = {m: sorted((v.role, v.name) for v in of_modality(model.latents, m)) for m in mods}
    contents = {n for m in mods for r, n in roles[m] if r == "content"}
    if len(contents) == 1 and all([r for r, _ in roles[m]] == ["content", "style"] for m in mods):
        return ["style_image", "style_audio", "cross_audio_to_image", "cross_image_to_audio",
                "prior_style_image", "prior_semantic_image", "prior_style_audio",
                "prior_semantic_audio"]
    if len(contents) == 1 and all([r for r, _ in roles[m]] == ["content"] for m in mods):
        return ["fig2_from_image", "fig2_from_audio"]
    return None


@pytest.mark.slow
def test_generate_run_grids_follow_the_declarations(trained, tmp_path):
    from dispart.generation.grids import static_dynamic
    from dispart.generation.outputs import generate_run

    cols, rows = 2, 1
    for setting, run in trained["runs"].items():
        model = load(run)
        out = tmp_path / setting
        if any(static_dynamic(model, m) for m in model.modalities):  # a static f + dynamic z_1:T
            manifest = generate_run(run, out, cols=cols, rows=rows, n_iter=2)
            assert [g["name"] for g in manifest["grids"]] == [
                f"{k}_{m}" for k in ("swap", "fix_f", "fix_z") for m in model.modalities]
            assert manifest["weights_sha256"] == file_sha256(run / "model.safetensors")
            continue
        if not {"audio", "image"} <= set(model.modalities):  # image + label, VAE: documented refusal
            with pytest.raises(RunDirError, match="needs a model over speech and images"):
                generate_run(run, out, cols=cols, rows=rows, audio=False)
            continue
        expected = _expected_grids(model)
        if expected is None:
            with pytest.raises(RunDirError, match="nothing to generate"):
                generate_run(run, out, cols=cols, rows=rows, audio=False)
            continue
        manifest = generate_run(run, out, cols=cols, rows=rows, n_iter=2)
        assert [g["name"] for g in manifest["grids"]] == expected
        assert manifest["weights_sha256"] == file_sha256(run / "model.safetensors")
        assert json.loads((out / "manifest.json").read_text()) == manifest
        seq = [m for m in model.modalities if model.specs[m].dynamic]
        for g in manifest["grids"]:
            fig2 = g["name"].startswith("fig2")
            assert g["shape"] == [len(model.modalities) if fig2 else rows, cols]
            assert (out / g["png"]).read_bytes()[:8] == PNG
            record = json.loads((out / g["json"]).read_text())
            assert len(record["cells"]) == g["shape"][0]
            assert all(len(r) == cols for r in record["cells"])
            audio_rows = len(seq) if fig2 else int(g["out_modality"] == "audio") * rows
            assert len(g["audio"]) == audio_rows * cols, g["name"]
            for a in g["audio"]:
                assert (out / a["wav"]).stat().st_size > 44
