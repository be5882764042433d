"""dispart vs multivae (PyPI 1.0.3) side by side: JMVAE-kl and MVAE on binarised MNIST + labels.

Same data (one stochastic binarisation, fixed seed), same networks (even the same initial weights:
multivae's modules are loaded from the dispart model's state), same likelihoods (Bernoulli image,
categorical label), batch size, epochs, optimiser (Adam, lr 1e-3, betas 0.9/0.999) and seed. Each
side is trained with its own trainer (dispart: LitModel + lightning.Trainer; multivae: BaseTrainer),
one thread, one after the other in this process. Reports training throughput (samples/s over the
training epochs only, evaluation excluded; per-epoch wall and CPU times too) and importance-weighted
test log-likelihoods:

- ``dispart`` estimator (dispart.evaluation.likelihood) on both sides; multivae models are seen
  through a thin adapter (``MultivaeAsDispart``) exposing their encoders/decoders;
- multivae's own estimator (``LikelihoodsEvaluator`` -> ``compute_joint_nll``, joint posterior as
  proposal) on the multivae models, to check the adapter apples to apples.

Also: a noise reference (dispart trained again with seed + 1 and evaluated the same way: the
run-to-run spread that dispart-vs-multivae differences should be judged against), a timing re-check
(fresh models, ``--recheck-epochs`` epochs, multivae first this time) and the dispart model in a bare
PyTorch loop (how much of dispart's time is Lightning's; not part of the ratios).

multivae imports torchvision, which needs the torch it was built for, so it lives in its own venv::

    python -m venv ../venv-multivae
    ../venv-multivae/bin/pip install torch==2.14.1 torchvision==0.29.1
    ../venv-multivae/bin/pip install multivae==1.0.3
    ../venv-multivae/bin/pip install -e .      # keeps torch 2.14.1

Run (from the repository root; ~35 min on one thread)::

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE ../venv-multivae/bin/python \\
        benchmarks/multivae_compare.py --epochs 8 --batch-size 128 --k 1000 --n-test 1000 \\
        --out benchmarks/results/multivae_compare.json

Skips (exit 0, with a message) when multivae or the MNIST data (../shared/data/mnist/mnist.npz)
is missing.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # multivae's trainer always adds a tqdm progress bar

import argparse  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
MODALITIES = [
    {"name": "image", "kind": "vector", "shape": [784], "likelihood": "bernoulli"},
    {"name": "label", "kind": "categorical", "shape": [10], "likelihood": "categorical"},
]

NOTES = [
    "same binarised data, same initial weights (multivae modules loaded from the dispart model), same seed "
    "(also the same shuffling and reparameterisation draws, so both sides follow nearly the same trajectory)",
    "Adam lr 1e-3 betas (0.9, 0.999) on both sides (dispart's LitModel default betas are (0.95, 0.999))",
    "no KL annealing: multivae warmup=0 (its default is 10 epochs), dispart anneal_steps=0; beta=1",
    "MVAE: ELBO(joint) + ELBO(image) + ELBO(label), k=0 (multivae forces k=0 for 2 modalities); lambdas "
    "image 1, label 50 as multivae rescale_factors (uses_likelihood_rescaling=True): training loss only",
    "JMVAE-kl: alpha=0.1, likelihood weights 1 on both sides (dispart's jmvae_kl has no lambdas)",
    "multivae gets one-hot float labels (its categorical likelihood needs them), dispart (B,) int64 classes",
    "timing: dispart = Lightning hooks on_train_epoch_start..end; multivae = BaseTrainer.train_step (its "
    "per-epoch best-model deepcopy and the final save are excluded); dataloading included on both sides",
    "dispart estimator on multivae models goes through MultivaeAsDispart (multivae encoders/PoE/decoders)",
]

# ----------------------------------------------------------------------------------------- data
def load_data(data_dir: Path, seed: int) -> dict[str, torch.Tensor]:
    """MNIST, stochastically binarised once (pixel ~ Bernoulli(intensity / 255)) with ``seed``."""
    from dispart.batches.labels import binarize

    raw = np.load(data_dir / "mnist" / "mnist.npz")
    g = torch.Generator().manual_seed(seed)
    out = {}
    for split in ("train", "test"):
        x = torch.from_numpy(raw[f"x_{split}"]).reshape(-1, 784).float() / 255.0
        out[f"x_{split}"] = binarize(x, generator=g).contiguous()
        out[f"y_{split}"] = torch.from_numpy(raw[f"y_{split}"].astype(np.int64))
    return out


class DictDataset(torch.utils.data.Dataset):
    """dispart batches: {"image": (784,) float {0,1}, "label": int64 class}."""

    def __init__(self, image: torch.Tensor, label: torch.Tensor) -> None:
        self.image, self.label = image, label

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.image[i], "label": self.label[i]}


# ------------------------------------------------------------------------------- multivae nets
def mlp(in_dim: int, hidden: int) -> nn.Sequential:
    """in -> hidden -> hidden with ReLUs (dispart's MLPEncoder.net)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())


def mlp_decoder(latent: int, out_dim: int, hidden: int) -> nn.Sequential:
    """latent -> hidden -> hidden -> out (dispart's MLPDecoder.net)."""
    return nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out_dim))


def multivae_networks(latent: int, hidden: int):
    """Encoder / decoder / joint-encoder classes subclassing multivae's (pythae's) bases."""
    from multivae.models.nn import BaseJointEncoder
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn.base_architectures import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        """x -> MLP -> linear head (mean, logvar), as dispart's Expert / unimodal encoder."""

        def __init__(self, in_dim: int) -> None:
            BaseEncoder.__init__(self)
            self.latent_dim = latent
            self.net = mlp(in_dim, hidden)
            self.head = nn.Linear(hidden, 2 * latent)

        def forward(self, x):
            mean, logvar = self.head(self.net(x)).chunk(2, dim=-1)
            return ModelOutput(embedding=mean, log_covariance=logvar)

    class Decoder(BaseDecoder):
        def __init__(self, out_dim: int) -> None:
            BaseDecoder.__init__(self)
            self.net = mlp_decoder(latent, out_dim, hidden)

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z))

    class JointEncoder(BaseJointEncoder):
        """One MLP per modality, concatenated, linear head (dispart's JMVAE joint encoder)."""

        def __init__(self, dims: dict[str, int]) -> None:
            BaseJointEncoder.__init__(self)
            self.latent_dim = latent
            self.pre = nn.ModuleDict({m: mlp(d, hidden) for m, d in dims.items()})
            self.head = nn.Linear(hidden * len(dims), 2 * latent)

        def forward(self, x: dict):
            h = torch.cat([self.pre[m](x[m]) for m in self.pre], dim=-1)
            mean, logvar = self.head(h).chunk(2, dim=-1)
            return ModelOutput(embedding=mean, log_covariance=logvar)

    return Encoder, Decoder, JointEncoder


def build_multivae(name: str, dmodel, args):
    """The multivae model matching dispart model ``dmodel``, initialised with its weights."""
    from multivae.models import JMVAE, MVAE, JMVAEConfig, MVAEConfig

    Encoder, Decoder, JointEncoder = multivae_networks(args.latent_dim, args.hidden)
    dims = {"image": 784, "label": 10}
    enc = {m: Encoder(d) for m, d in dims.items()}
    dec = {m: Decoder(d) for m, d in dims.items()}
    for m in dims:
        dec[m].net.load_state_dict(dmodel.decoders[m].net.state_dict())
    common = dict(n_modalities=2, latent_dim=args.latent_dim, input_dims={m: (d,) for m, d in dims.items()},
                  decoders_dist={"image": "bernoulli", "label": "categorical"})
    if name == "mvae":
        for m in dims:
            enc[m].net.load_state_dict(dmodel.experts[m].pre.net.state_dict())
            enc[m].head.load_state_dict(dmodel.experts[m].head.linear.state_dict())
        cfg = MVAEConfig(**common, uses_likelihood_rescaling=True, rescale_factors=dict(args.lambdas),
                         k=0, warmup=0, beta=1.0, use_subsampling=True)
        return MVAE(cfg, encoders=enc, decoders=dec)
    for m in dims:
        enc[m].net.load_state_dict(dmodel.unimodal_pre[m].net.state_dict())
        enc[m].head.load_state_dict(dmodel.unimodal_head[m].linear.state_dict())
    joint = JointEncoder(dims)
    for m in dims:
        joint.pre[m].load_state_dict(dmodel.joint_pre[m].net.state_dict())
    joint.head.load_state_dict(dmodel.joint_head.linear.state_dict())
    cfg = JMVAEConfig(**common, alpha=args.alpha, warmup=0, beta=1.0)
    return JMVAE(cfg, encoders=enc, decoders=dec, joint_encoder=joint)


def make_adapter():
    """``MultivaeAsDispart``: a multivae model seen as a dispart MultimodalModel, so that dispart's
    likelihood estimator runs on it unchanged (encoders/decoders are multivae's; likelihoods are
    dispart's Bernoulli/categorical on the decoder logits, the same functions multivae uses)."""
    from multivae.data.datasets.base import MultimodalBaseDataset

    from dispart.batches.modality import ModalitySpec
    from dispart.models.base import MultimodalModel
    from dispart.nn.encoders import diag_gaussian

    class MultivaeAsDispart(MultimodalModel):
        name = "multivae_adapter"

        def __init__(self, mv) -> None:
            super().__init__([ModalitySpec.from_dict(d) for d in MODALITIES])
            self.mv = mv

        def latent_names(self, modality):
            return ("z",)

        def latent_sizes(self):
            return {"z": self.mv.latent_dim}

        def encode(self, batch):
            present = self.check_inputs(batch)
            data = {m: (nn.functional.one_hot(batch[m].long(), 10).float() if m == "label"
                        else batch[m].float()) for m in present}
            if hasattr(self.mv, "compute_mu_log_var_subset"):  # MVAE: PoE with the prior expert
                mean, logvar = self.mv.compute_mu_log_var_subset(MultimodalBaseDataset(data), present)
            else:  # JMVAE: joint encoder for all modalities, unimodal encoder for one
                out = (self.mv.joint_encoder(data) if len(present) == 2
                       else self.mv.encoders[present[0]](data[present[0]]))
                mean, logvar = out.embedding, out.log_covariance
            return {"z": diag_gaussian(mean, logvar)}

        def decode_params(self, latents, modality, lengths=None):
            return self.mv.decoders[modality](latents["z"]).reconstruction

        def loss(self, batch):
            raise NotImplementedError("evaluation adapter only")

    return MultivaeAsDispart


# --------------------------------------------------------------------------------------- timing
class EpochClock:
    """Wall and CPU (process) seconds of each training epoch."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._t = (0.0, 0.0)

    def start(self) -> None:
        self._t = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        self.wall.append(time.perf_counter() - self._t[0])
        self.cpu.append(time.process_time() - self._t[1])


def summary(clock: EpochClock, n_train: int, fit_seconds: float) -> dict:
    wall, cpu = clock.wall, clock.cpu
    return {
        "epoch_wall_s": [round(t, 3) for t in wall],
        "epoch_cpu_s": [round(t, 3) for t in cpu],
        "samples_per_s": n_train * len(wall) / sum(wall),
        "samples_per_s_median_epoch": n_train / statistics.median(wall),
        "samples_per_cpu_s": n_train * len(cpu) / sum(cpu),
        "cpu_over_wall": sum(cpu) / sum(wall),
        "fit_wall_s_incl_setup": fit_seconds,
        "loadavg_after": os.getloadavg()[0],
    }


def train_dispart(name: str, lit, data, args, epochs: int, seed: int | None = None) -> dict:
    import lightning as L

    clock = EpochClock()

    class Clock(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            clock.start()

        def on_train_epoch_end(self, trainer, pl_module):
            clock.stop()

    torch.manual_seed(args.seed if seed is None else seed)
    loader = torch.utils.data.DataLoader(DictDataset(data["x_train"], data["y_train"]),
                                         batch_size=args.batch_size, shuffle=True)
    trainer = L.Trainer(max_epochs=epochs, enable_progress_bar=False, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, accelerator="cpu",
                        devices=1, callbacks=[Clock()], num_sanity_val_steps=0)
    t0 = time.perf_counter()
    trainer.fit(lit, loader)
    fit = time.perf_counter() - t0
    return summary(clock, len(loader.dataset), fit)


def train_plain_loop(model, data, args, epochs: int) -> dict:
    """The dispart model in a bare PyTorch loop (no Lightning), for reference."""
    torch.manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(DictDataset(data["x_train"], data["y_train"]),
                                         batch_size=args.batch_size, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999))
    model.train()
    clock = EpochClock()
    t0 = time.perf_counter()
    for _ in range(epochs):
        clock.start()
        for batch in loader:
            loss = model.loss(batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        clock.stop()
    return summary(clock, len(loader.dataset), time.perf_counter() - t0)


def train_multivae(name: str, mv, data, args, out_dir: str, epochs: int) -> dict:
    from multivae.data.datasets.base import MultimodalBaseDataset
    from multivae.trainers import BaseTrainer, BaseTrainerConfig

    ds = MultimodalBaseDataset({"image": data["x_train"],
                                "label": nn.functional.one_hot(data["y_train"], 10).float()})
    cfg = BaseTrainerConfig(output_dir=out_dir, per_device_train_batch_size=args.batch_size,
                            num_epochs=epochs, learning_rate=args.lr, optimizer_cls="Adam",
                            optimizer_params={"betas": (0.9, 0.999)}, seed=args.seed, no_cuda=True)
    clock = EpochClock()
    t0 = time.perf_counter()
    trainer = BaseTrainer(mv, train_dataset=ds, training_config=cfg)
    inner = trainer.train_step

    def timed_train_step(epoch):  # the epoch's training loop only (no best-model copy, no saving)
        clock.start()
        out = inner(epoch)
        clock.stop()
        return out

    trainer.train_step = timed_train_step
    trainer.train()
    fit = time.perf_counter() - t0
    return summary(clock, len(ds), fit)


# ------------------------------------------------------------------------------------ likelihoods
def dispart_estimates(model, data, args) -> tuple[dict, dict[str, torch.Tensor]]:
    """dispart.evaluation.likelihood.log_marginal on the first ``n_test`` test images: means (nats per
    image), standard errors over images, and per-image values for paired comparisons.

    Conditionals follow ``log_conditional``: log p(x | y) = log p(x, y) - log p(y), the joint with
    q(z | y) (dispart's default, MVAE protocol) or q(z | x, y) (JMVAE eq. 4), log p(y) with
    ``k_given`` prior samples; each piece is estimated once and reused.
    """
    from dispart.evaluation.likelihood import log_marginal

    n, b = args.n_test, args.eval_batch
    batches = [{"image": data["x_test"][i:i + b], "label": data["y_test"][i:i + b]} for i in range(0, n, b)]
    xy = ["image", "label"]
    specs = {  # key: (targets, proposal, K)
        "log_p_image": (["image"], ["image"], args.k),
        "log_p_image_label": (xy, ["image"], args.k),
        "log_p_image_label_jointq": (xy, xy, args.k),
        "log_p_image_label_labelq": (xy, ["label"], args.k),
        "log_p_label": (["label"], [], args.k_given),
    }
    out, per_image = {}, {}
    for key, (targets, proposal, k) in specs.items():
        torch.manual_seed(args.seed + 1)
        t0 = time.perf_counter()
        ests = [log_marginal(model, batch, targets, proposal, k=k) for batch in batches]
        v = torch.cat([e.log_p for e in ests])
        per_image[key] = v
        out[key] = {"log_p": float(v.mean()), "sem": float(v.std() / len(v) ** 0.5),
                    "log_w_var": float(torch.cat([e.log_w_var for e in ests]).mean()), "k": k,
                    "proposal": f"q(z|{','.join(proposal)})" if proposal else "prior",
                    "seconds": round(time.perf_counter() - t0, 1)}
    for key, joint in (("log_p_image_given_label", "log_p_image_label_labelq"),
                       ("log_p_image_given_label_jointq", "log_p_image_label_jointq")):
        v = per_image[joint] - per_image["log_p_label"]
        per_image[key] = v
        out[key] = {"log_p": float(v.mean()), "sem": float(v.std() / len(v) ** 0.5),
                    "log_w_var": out[joint]["log_w_var"],
                    "proposal": f"{out[joint]['proposal']} for log p(x,y); prior for log p(y)"}
    return out, per_image


def paired(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict:
    """Mean and standard error of the per-image difference a - b (same images, same estimator)."""
    out = {}
    for k in a:
        d = a[k] - b[k]
        out[k] = {"mean": float(d.mean()), "sem": float(d.std() / len(d) ** 0.5)}
    return out


def multivae_estimate(mv, data, args) -> dict:
    """multivae's own LikelihoodsEvaluator (compute_joint_nll: q(z | image, label) proposal)."""
    from multivae.data.datasets.base import MultimodalBaseDataset
    from multivae.metrics import LikelihoodsEvaluator, LikelihoodsEvaluatorConfig

    n = args.n_test
    ds = MultimodalBaseDataset({"image": data["x_test"][:n],
                                "label": nn.functional.one_hot(data["y_test"][:n], 10).float()})
    torch.manual_seed(args.seed + 1)
    t0 = time.perf_counter()
    cfg = LikelihoodsEvaluatorConfig(batch_size=args.eval_batch, num_samples=args.k, batch_size_k=100)
    nll = LikelihoodsEvaluator(mv, ds, eval_config=cfg).eval()["joint_likelihood"]
    return {"log_p_image_label_jointq": {"log_p": -float(nll),
                                         "seconds": round(time.perf_counter() - t0, 1)}}


# ------------------------------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--k", type=int, default=1000, help="importance samples")
    p.add_argument("--k-given", type=int, default=5000,
                   help="prior samples for log p(label) in log p(image | label)")
    p.add_argument("--n-test", type=int, default=1000, help="first N test images are evaluated")
    p.add_argument("--n-train", type=int, default=60000, help="first N training images (smoke tests)")
    p.add_argument("--eval-batch", type=int, default=100)
    p.add_argument("--models", nargs="+", default=["jmvae_kl", "mvae"], choices=["jmvae_kl", "mvae"])
    p.add_argument("--recheck-epochs", type=int, default=1,
                   help="extra timing of fresh models, in the reverse order (multivae first); 0: off")
    p.add_argument("--no-reference-seed", dest="reference_seed", action="store_false",
                   help="skip the noise reference (dispart trained again with seed + 1)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent-dim", type=int, default=64)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--alpha", type=float, default=0.1, help="JMVAE-kl alpha")
    p.add_argument("--label-lambda", type=float, default=50.0, help="MVAE label weight (image: 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "multivae_compare.json")
    args = p.parse_args(argv)
    args.lambdas = {"image": 1.0, "label": args.label_lambda}
    return args


def dispart_hparams(name: str, args) -> dict:
    h = {"name": name, "modalities": MODALITIES, "latent_dim": args.latent_dim, "hidden": args.hidden}
    if name == "mvae":
        h.update(k=0, lambdas=dict(args.lambdas), beta=1.0, anneal_steps=0)
    else:  # dispart's JMVAE-kl has no likelihood weights: 1 for both modalities on both sides
        h.update(alpha=args.alpha)
    return h


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import multivae  # noqa: F401
    except ImportError:
        print("multivae is not installed: skipping (see this script's docstring for the venv setup)")
        return 0
    from tagged_runs import cpu_model  # the venv of the docstring has dispart installed
    if not (args.data_dir / "mnist" / "mnist.npz").exists():
        print(f"no MNIST at {args.data_dir / 'mnist' / 'mnist.npz'}: skipping")
        return 0
    from dispart.training.module import LitModel

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    import multivae.metrics  # noqa: F401  (create multivae's module loggers, then quieten them)
    import multivae.trainers  # noqa: F401

    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("multivae", "pythae", "lightning"):
            logging.getLogger(name).setLevel(logging.WARNING)
    t_start = time.perf_counter()
    data = load_data(args.data_dir, args.seed)
    data["x_train"], data["y_train"] = data["x_train"][:args.n_train], data["y_train"][:args.n_train]
    adapter = make_adapter()
    results: dict = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "multivae": getattr(multivae, "__version__", "1.0.3"), "threads": torch.get_num_threads(),
                    "cpu": cpu_model()},
        "notes": NOTES,
        "models": {},
    }
    def fresh(name, seed=args.seed):  # dispart model first, multivae model loaded with its weights
        torch.manual_seed(seed)
        lit = LitModel(dispart_hparams(name, args), lr=args.lr, betas=[0.9, 0.999])
        return lit, build_multivae(name, lit.model, args)

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            print(f"== {name}: train {args.epochs} epochs each (dispart first), then evaluate", flush=True)
            lit, mv = fresh(name)
            res = {"params": {"dispart": sum(p.numel() for p in lit.model.parameters()),
                              "multivae": sum(p.numel() for p in mv.parameters())}}
            res["train"] = {"dispart": train_dispart(name, lit, data, args, args.epochs),
                            "multivae": train_multivae(name, mv, data, args, tmp, args.epochs)}
            print_model(res["train"])
            est_d, img_d = dispart_estimates(lit.model.eval(), data, args)
            est_m, img_m = dispart_estimates(adapter(mv).eval(), data, args)
            res["loglik"] = {
                "dispart_estimator": {"dispart": est_d, "multivae": est_m,
                                      "paired_diff_dispart_minus_multivae": paired(img_d, img_m)},
                "multivae_estimator": {"multivae": multivae_estimate(mv, data, args)}}
            if args.reference_seed:  # run-to-run noise scale: dispart again with another seed
                ref_seed = args.seed + 1
                print(f"== {name}: dispart with seed {ref_seed} (noise reference)", flush=True)
                lit_r, _ = fresh(name, ref_seed)
                res["train_reference_seed"] = train_dispart(name, lit_r, data, args, args.epochs, ref_seed)
                est_r, img_r = dispart_estimates(lit_r.model.eval(), data, args)
                ll = res["loglik"]["dispart_estimator"]
                ll["dispart_reference_seed"] = est_r
                ll["paired_diff_dispart_minus_dispart_reference_seed"] = paired(img_d, img_r)
            results["models"][name] = res
        for name in args.models if args.recheck_epochs > 0 else []:
            print(f"== {name}: timing re-check, {args.recheck_epochs} epoch(s) each, multivae first",
                  flush=True)
            lit, mv = fresh(name)
            rc = {"multivae": train_multivae(name, mv, data, args, tmp, args.recheck_epochs),
                  "dispart": train_dispart(name, lit, data, args, args.recheck_epochs)}
            lit_p, _ = fresh(name)  # not part of the ratios: how much of dispart's time is Lightning's
            rc["dispart_plain_loop"] = train_plain_loop(lit_p.model, data, args, args.recheck_epochs)
            print_model(rc)
            results["models"][name]["train_recheck"] = rc
    for res in results["models"].values():
        res["speedup"] = speedups(res, len(data["y_train"]))
    results["total_seconds"] = time.perf_counter() - t_start
    from dispart.files import atomic_write_json

    atomic_write_json(args.out, results, indent=2)
    print_table(results)
    print(f"wrote {args.out} ({results['total_seconds'] / 60:.1f} min)")
    return 0


def speedups(res: dict, n_train: int) -> dict:
    """dispart / multivae throughput: main run, re-check, all epochs together, and CPU-time based."""
    def rate(runs, key):
        times = [t for r in runs for t in r[key]]
        return n_train * len(times) / sum(times)

    out = {}
    phases = {"main": ["train"], "recheck": ["train_recheck"], "all_epochs": ["train", "train_recheck"]}
    for phase, keys in phases.items():
        keys = [k for k in keys if k in res]
        if not keys:
            continue
        d = [res[k]["dispart"] for k in keys]
        m = [res[k]["multivae"] for k in keys]
        out[phase] = {"dispart_samples_per_s": rate(d, "epoch_wall_s"),
                      "multivae_samples_per_s": rate(m, "epoch_wall_s"),
                      "ratio": rate(d, "epoch_wall_s") / rate(m, "epoch_wall_s"),
                      "ratio_cpu_time": rate(d, "epoch_cpu_s") / rate(m, "epoch_cpu_s")}
    return out


def print_model(train: dict) -> None:
    for side, t in train.items():
        print(f"   {side:8s} {t['samples_per_s']:6.0f} samples/s; epochs wall {t['epoch_wall_s']} "
              f"cpu {t['epoch_cpu_s']}", flush=True)


def _print_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


def print_table(results: dict) -> None:
    print("\ntraining throughput (samples/s, wall clock, training epochs only)")
    rows = [("model", "phase", "dispart", "multivae", "ratio d/m", "ratio (CPU time)")]
    for name, res in results["models"].items():
        for phase, sp in res["speedup"].items():
            rows.append((name, phase, f"{sp['dispart_samples_per_s']:.0f}",
                         f"{sp['multivae_samples_per_s']:.0f}", f"{sp['ratio']:.3f}",
                         f"{sp['ratio_cpu_time']:.3f}"))
    _print_rows(rows)
    k, n = results["settings"]["k"], results["settings"]["n_test"]
    print(f"\ntest log-likelihoods (nats, mean +- s.e. over the first {n} test images, K={k})")
    keys = {"log_p_image": "log p(x) q(z|x)", "log_p_image_label": "log p(x,y) q(z|x)",
            "log_p_image_label_jointq": "log p(x,y) q(z|x,y)", "log_p_image_given_label": "log p(x|y) q(z|y)",
            "log_p_image_given_label_jointq": "log p(x|y) q(z|x,y)"}
    rows = [("model", "estimator", "model side", *keys.values())]
    for name, res in results["models"].items():
        ll = res["loglik"]["dispart_estimator"]
        for side in ("dispart", "multivae"):
            rows.append((name, "dispart", side, *(f"{ll[side][k]['log_p']:.2f}+-{ll[side][k]['sem']:.2f}"
                                                  for k in keys)))
        diff = ll["paired_diff_dispart_minus_multivae"]
        rows.append((name, "dispart", "paired d-m", *(f"{diff[k]['mean']:+.2f}+-{diff[k]['sem']:.2f}"
                                                      for k in keys)))
        if "dispart_reference_seed" in ll:
            ref, diff = ll["dispart_reference_seed"], ll["paired_diff_dispart_minus_dispart_reference_seed"]
            rows.append((name, "dispart", "dispart seed+1", *(f"{ref[k]['log_p']:.2f}+-{ref[k]['sem']:.2f}"
                                                             for k in keys)))
            rows.append((name, "dispart", "paired d-(seed+1)",
                         *(f"{diff[k]['mean']:+.2f}+-{diff[k]['sem']:.2f}" for k in keys)))
        mv = res["loglik"]["multivae_estimator"]["multivae"]["log_p_image_label_jointq"]["log_p"]
        rows.append((name, "multivae", "multivae", "-", "-", f"{mv:.2f}", "-", "-"))
    _print_rows(rows)


if __name__ == "__main__":
    sys.exit(main())
