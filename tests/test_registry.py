"""The model registry, config dataclasses, ``hparams`` round trips, the shared ``elbo`` helper
(static and dynamic latents, against numpy) and the batched encode/decode helpers."""

from __future__ import annotations

import typing
from dataclasses import asdict, fields

import numpy as np
import pytest
import torch
from model_helpers import (
    kl_diag,
    kl_std,
    lstm_prior_params,
    np64,
    sample,
    unit_gauss_logpdf,
    vec,
    vec_batch,
)
from torch import nn

from dispart.batches.batch import Sequences
from dispart.batches.modality import ModalitySpec
from dispart.models import REGISTRY, build_model, entry, upgrade_state_dict
from dispart.models.base import Generative, LossOutput, MultimodalModel
from dispart.models.latents import Latent, declare
from dispart.models.priors import LSTMPrior, StandardNormalPrior
from dispart.nn.encoders import diag_gaussian

# Today's defaults of the flat ModelConfig (a config file that names no field keeps these).
DEFAULTS = {
    "pvae": dict(semantic_dim=32, style_dim=32, hidden=512, alpha_ch=0.1, alpha_cm=10.0, margin=0.5,
                 allow_missing=False, style_beta=1.0, style_beta_on="all", alpha_indep=0.0, alpha_swap=0.0,
                 alpha_adv=0.0, alpha_xcorr=0.0, xcorr_weights=None, swap_weights=None, xcorr_momentum=0.0,
                 alpha_semantic_xcorr=0.0,
                 penalty_start=0, widths=None, style_dims=None, alpha_speaker=0.0, speaker_classes=0,
                 speaker_penalty="critic", sequence_encoder="lstm", image_channels=4,
                 image_decoder="paper", lambdas=None),
    "jmvae_kl": dict(latent_dim=96, hidden=512, alpha=0.1),
    "jmvae": dict(latent_dim=96, hidden=512),
    "mvae": dict(latent_dim=96, hidden=512, k=0, lambdas=None, beta=1.0, anneal_steps=0, activation="relu",
                  decoder_layers=2, categorical_init="linear"),
    "mvae_q": dict(latent_dim=96, hidden=512, k=0, lambdas=None, beta=1.0, anneal_steps=0, activation="relu",
                  decoder_layers=2, categorical_init="linear"),
    "vae": dict(latent_dim=96, hidden=512),
}
SMALL = {"pvae": dict(semantic_dim=3, style_dim=2, hidden=8), "vae": dict(latent_dim=3, hidden=8)}


def _hparams(name: str) -> dict:
    mods = ["a"] if name == "vae" else ["a", "b", "c"]
    small = SMALL.get(name, dict(latent_dim=3, hidden=8))
    return {"name": name, "modalities": [vec(m).to_dict() for m in mods], **small}


def test_registry_lists_every_model_with_todays_defaults_and_precise_types():
    assert set(DEFAULTS) <= set(REGISTRY)  # a new model needs its registry line only
    allowed = {int, float, bool, str, dict[str, float] | None, dict[str, int] | None}
    for name, e in REGISTRY.items():
        assert e.name == name and issubclass(e.model, MultimodalModel)
        if name in DEFAULTS:
            assert asdict(e.config()) == DEFAULTS[name]
        hints = typing.get_type_hints(e.config)
        assert all(hints[f.name] in allowed for f in fields(e.config)), hints
    assert entry("mvae_q").fixed == {"quotient": True} and entry("mvae").model is entry("mvae_q").model


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_every_registered_model_builds_trains_and_round_trips(name):
    torch.manual_seed(0)
    h = _hparams(name)
    m = build_model(h)
    assert m.name == name and isinstance(m.config, entry(name).config)
    assert m.hparams() == {**h, **{k: v for k, v in asdict(m.config).items() if k not in h}}
    assert set(m.generative.priors) == set(m.latents) and set(m.generative.decoders) == set(m.specs)
    assert isinstance(m.inference, nn.Module)
    assert {k.split(".")[0] for k in m.state_dict()} <= {"generative", "inference", "anneal_step"}
    b = vec_batch(list(m.specs), b=4)
    m.loss(b).loss.backward()
    rebuilt = build_model(m.hparams())
    rebuilt.load_state_dict(m.state_dict())
    assert type(rebuilt) is type(m) and rebuilt.hparams() == m.hparams()
    z = m.sample_prior(4)
    assert {k: tuple(v.shape) for k, v in z.items()} == {k: (4, v.size) for k, v in m.latents.items()}
    assert m.prior(next(iter(m.latents)), 4).batch_shape == (4,)


def test_mvae_q_quotient_comes_from_the_registry_and_old_quotient_keys_are_ignored():
    h = _hparams("mvae_q")
    assert build_model(h).quotient is True and build_model({**h, "name": "mvae"}).quotient is False
    assert build_model({**h, "quotient": False}).quotient is True  # run.json of older versions


def test_unknown_model_or_key_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown model 'nope'; known models: \['dsae', 'jmvae'"):
        build_model({"name": "nope", "modalities": []})
    with pytest.raises(ValueError, match=r"unknown model 'nope'"):
        entry("nope")
    with pytest.raises(ValueError, match=r"pvae: unknown hyper-parameter\(s\) \['k'\]; PVAEConfig has "
                                         r"\['semantic_dim', 'style_dim'"):
        build_model({**_hparams("pvae"), "k": 5})
    with pytest.raises(ValueError, match="vae takes exactly one modality"):
        build_model({**_hparams("vae"), "modalities": [vec("a").to_dict(), vec("b").to_dict()]})
    with pytest.raises(ValueError, match="need a 'name'"):
        build_model({"modalities": []})


def test_upgrade_state_dict_renames_old_keys_only():
    old = {"pre.fc.weight": 1, "head.linear.bias": 2, "decoder.net.0.weight": 3}
    got = upgrade_state_dict(_hparams("vae"), old)
    assert got == {"inference.pre.fc.weight": 1, "inference.head.linear.bias": 2,
                   "generative.decoders.a.net.0.weight": 3}
    assert upgrade_state_dict(_hparams("vae"), got) == got  # idempotent
    pv = upgrade_state_dict(_hparams("pvae"), {"model.unimodal.a.pre.x": 0, "model.decoders.b.y": 1,
                                               "model.joint.heads.z_s.w": 2}, prefix="model.")
    assert set(pv) == {"model.inference.unimodal.a.pre.x", "model.generative.decoders.b.y",
                       "model.inference.joint.heads.z_s.w"}


# ------------------------------------------------------------------ the elbo helper
class FrameDecoder(nn.Module):
    """x_t mean = (z_t + f) W^T, one frame per latent frame."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, z: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return (z + f[:, None]) @ self.weight.T


class ToySequenceModel(MultimodalModel):
    """A static style f and a dynamic content z_1:T with a learned LSTM prior (DSAE-like), with
    fixed posteriors so the ELBO can be computed by hand."""

    name = "toy"

    def __init__(self, q_f, q_z, weight) -> None:
        super().__init__([ModalitySpec("audio", "sequence", (2,))])
        self.latents = declare(Latent("f", 2, ("audio",), "style"),
                               Latent("z", 2, ("audio",), "content", dynamic=True))
        self.generative = Generative({"f": StandardNormalPrior(2), "z": LSTMPrior(2, hidden=3)},
                                     {"audio": FrameDecoder(weight)})
        self.inference = nn.Module()
        self.q_f, self.q_z = q_f, q_z

    def encode(self, batch):
        return {"f": diag_gaussian(*self.q_f), "z": diag_gaussian(*self.q_z)}

    def decode_params(self, latents, modality, lengths=None):
        return self.generative.decoders[modality](latents["z"], latents["f"])

    def loss(self, batch):
        return LossOutput(-self.elbo(batch, self.encode(batch), ["audio"]).value.mean())


def test_elbo_helper_with_static_and_dynamic_latents_matches_numpy():
    g = torch.Generator().manual_seed(0)
    b, t, lengths = 3, 4, [4, 2, 1]
    q_f = (torch.randn(b, 2, generator=g), 0.3 * torch.randn(b, 2, generator=g))
    q_z = (torch.randn(b, t, 2, generator=g), 0.3 * torch.randn(b, t, 2, generator=g))
    weight = torch.randn(2, 2, generator=g)
    torch.manual_seed(1)
    m = ToySequenceModel(q_f, q_z, weight)
    x = Sequences.from_list([torch.randn(n, 2, generator=g) for n in lengths])
    batch = {"audio": x}
    torch.manual_seed(7)
    out = m.elbo(batch, m.encode(batch), ["audio"], weights={"audio": 0.5}, beta=2.0)
    # By hand: z drawn in the order of q (f, then z), teacher-forced LSTM prior, masked frames.
    torch.manual_seed(7)
    eps_f, eps_z = torch.randn(b, 2), torch.randn(b, t, 2)
    f, z = sample(*q_f, eps_f), sample(*q_z, eps_z)
    assert np.allclose(np64(out.z["f"]), f, atol=1e-6) and np.allclose(np64(out.z["z"]), z, atol=1e-6)
    mean_x = (z + f[:, None]) @ np64(weight).T
    valid = np.array([[s < n for s in range(t)] for n in lengths])
    rec = (unit_gauss_logpdf(x.data, mean_x).sum(-1) * valid).sum(1)
    p_mean, p_logvar = lstm_prior_params(m.generative.priors["z"], z)
    kl_z = (kl_diag(q_z[0], q_z[1], p_mean, p_logvar) * valid).sum(1)
    kl_f = kl_std(*q_f)
    assert np.allclose(np64(out.rec["audio"]), rec, rtol=1e-5)
    assert np.allclose(np64(out.kl["f"]), kl_f, rtol=1e-5)
    assert np.allclose(np64(out.kl["z"]), kl_z, rtol=1e-4)
    assert np.allclose(np64(out.kl_total), kl_f + kl_z, rtol=1e-4)
    assert np.allclose(np64(out.value), 0.5 * rec - 2.0 * (kl_f + kl_z), rtol=1e-4)
    # Gradients reach the learned prior.
    m.loss(batch).loss.backward()
    assert m.generative.priors["z"].head.weight.grad is not None
    assert m.prior("f", 3).batch_shape == (3,)
    with pytest.raises(ValueError, match="needs z"):  # p(z_t | z_<t) is conditional
        m.prior("z", 3, torch.tensor(lengths))
    assert m.sample_prior(3, torch.tensor(lengths))["z"].shape == (3, 4, 2)


def test_elbo_helper_errors():
    m = build_model(_hparams("jmvae"))
    b = vec_batch(["a", "b", "c"], b=2)
    q = m.encode(b)
    with pytest.raises(ValueError, match=r"modalities \['x'\] are not in the batch"):
        m.elbo(b, q, ["a", "x"])
    with pytest.raises(ValueError, match="weights"):
        m.elbo(b, q, ["a", "b"], weights={"a": 1.0})
    with pytest.raises(ValueError, match="no latent 'w'"):
        m.prior("w", 2)


# ------------------------------------------------------------------ batched encode / decode
def test_encode_and_decode_in_batches_match_one_batch_and_restore_the_mode():
    torch.manual_seed(0)
    m = build_model({"name": "pvae", "modalities": [ModalitySpec("audio", "sequence", (3,)).to_dict(),
                                                    vec("b").to_dict()],
                     "semantic_dim": 2, "style_dim": 2, "hidden": 8})
    g = torch.Generator().manual_seed(1)
    lengths = [5, 2, 3, 1, 4]
    x = Sequences.from_list([torch.randn(n, 3, generator=g) for n in lengths])
    m.train()
    means = m.encode_in_batches({"audio": x}, chunk=2)
    assert m.training
    m.eval()
    with torch.no_grad():
        full = {k: q.mean for k, q in m.encode({"audio": x}).items()}
    m.train()
    assert set(means) == set(full) and all(torch.allclose(means[k], full[k], atol=1e-6) for k in full)
    ln = torch.tensor(lengths)
    dec = m.decode_in_batches(means, "audio", ln, chunk=2)
    assert m.training and dec.shape == (5, 5, 3)
    m.eval()
    with torch.no_grad():
        one = m.decode(means, "audio", ln)
    m.train(False)
    for i, n in enumerate(lengths):
        assert torch.allclose(dec[i, :n], one[i, :n], atol=1e-6) and torch.all(dec[i, n:] == 0)
    m.eval()
    m.encode_in_batches({"audio": x}, chunk=3)
    assert not m.training
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        m.encode_in_batches({"audio": x}, chunk=0)
