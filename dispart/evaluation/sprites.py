"""Sprites judges and the DSAE paper's Table 1 protocol (Li & Mandt 2018, section 4.1).

**Judges.** :class:`SpriteJudgeNet` is one small CNN with five heads, trained on the labelled real
rendered videos of the ``sprites`` loader (:mod:`dispart.batches.sprites`): ``body`` (skin colour),
``bottom`` (pants), ``top``, ``hair`` (6 variants each) and ``action`` (the paper's 9 action
classes: walk / spellcast / slash x front / left / right, the data's label). Every frame goes
through the same convolutions (3 stride-2 layers, 64 -> 8 px) and a linear layer; the attribute
heads read the mean of the frame features over the video, the action head their concatenation
(frame order matters for an action), so a judge takes whole (N, T, 3, 64, 64) videos, T = the
training length (8). :func:`fit_judge` trains it (Adam, seeded); :func:`ensure_judge` keeps it as
``judge-KEY.safetensors`` + ``judge-KEY.json`` in a cache folder, KEY the SHA-256 of the data's
bytes (frames and labels of both splits) and the judge's settings, written atomically (JSON last,
with the weights' SHA-256); a damaged or foreign pair is refitted.

**Table 1.** With the judge's log-probabilities on a source video (``p_data``) and on a video
generated from it (``p_recon``), per attribute:

- disagreement = fraction of pairs with argmax_i p_recon(i) != argmax_i p_data(i);
- KL-recon = mean over pairs of KL[p_recon || p_data] = sum_i p_recon(i) (log p_recon(i) - log p_data(i)),
  in nats; KL-random = mean of KL[u || p_data], u uniform over the classes (the paper's reference).

(a) fix f: f = the posterior mean of q(f | x_1:T) of each test video, z_1:T drawn from the LSTM
prior, decoded: the four attributes should agree with the source. (b) fix z: z_1:T = the posterior
mean of q(z_1:T | .) of each test video, f ~ N(0, I), decoded: the action should agree.
:func:`table1` is a pure function of (model, judge, videos, seed).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from dispart.batches.batch import Sequences
from dispart.batches.sets import ModalitySet
from dispart.errors import RunDirError
from dispart.files import atomic_write_json, atomic_write_with, file_sha256, read_json

__all__ = [
    "ATTRIBUTE_HEADS", "HEADS", "JudgeSettings", "SpriteJudge", "SpriteJudgeNet", "disagreement",
    "ensure_judge", "fit_judge", "judge_key", "judged_videos", "kl_random",
    "kl_recon", "sprite_labels", "sprite_videos", "table1",
]

ATTRIBUTE_HEADS = ("body", "bottom", "top", "hair")  # 6 variants each
HEADS: dict[str, int] = {"body": 6, "bottom": 6, "top": 6, "hair": 6, "action": 9}
JUDGE_FORMAT = 1  # bump when the network or its training changes


# ------------------------------------------------------------------------------------- data
def sprite_videos(items: ModalitySet | np.ndarray | Tensor) -> np.ndarray | Tensor:
    """The videos of a sprites ModalitySet as its uint8 (N, T, H, W, C) array (the FrameStack's),
    or ``items`` itself when it is already an array/tensor."""
    if isinstance(items, ModalitySet):
        ex = items.examples
        frames = getattr(ex, "frames", None)
        return frames if isinstance(frames, np.ndarray) else np.stack([np.asarray(e) for e in ex])
    return items


def sprite_labels(items: ModalitySet) -> dict[str, np.ndarray]:
    """Head -> int64 (N,) labels of a sprites ModalitySet: attributes from ``meta`` ("0"-"5"),
    ``action`` = index of the label among the 9 action-direction names in the loader's order."""
    from dispart.data.sprites import ACTIONS, DIRECTIONS

    names = [f"{a}-{d}" for a in ACTIONS for d in DIRECTIONS]
    missing = [a for a in ATTRIBUTE_HEADS if a not in items.meta]
    if missing:
        raise ValueError(f"sprite_labels: meta lacks {missing} (not a set of the 'sprites' loader)")
    unknown = sorted({y for y in items.labels if y not in names})
    if unknown:
        raise ValueError(f"sprite_labels: unknown action labels {unknown[:3]} (expected {names})")
    out = {a: np.asarray([int(v) for v in items.meta[a]], np.int64) for a in ATTRIBUTE_HEADS}
    out["action"] = np.asarray([names.index(y) for y in items.labels], np.int64)
    return out


def as_video_tensor(videos: np.ndarray | Tensor) -> Tensor:
    """uint8 (N, T, H, W, C) -> float (N, T, C, H, W) in [0, 1]; a float (N, T, C, H, W) tensor
    (decoded means) is clamped to [0, 1]."""
    if isinstance(videos, np.ndarray):
        if videos.dtype == np.uint8:
            if videos.ndim != 5:
                raise ValueError(f"uint8 videos must be (N, T, H, W, C), got {videos.shape}")
            return torch.from_numpy(videos).permute(0, 1, 4, 2, 3).float().div_(255.0)
        videos = torch.from_numpy(np.asarray(videos, np.float32))
    if videos.dim() != 5:
        raise ValueError(f"videos must be (N, T, C, H, W), got {tuple(videos.shape)}")
    return videos.float().clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------- judge
@dataclass(frozen=True)
class JudgeSettings:
    """How a judge is built and trained (part of its cache key).

    Attributes:
        width: channels of the first convolution (then 2x, 2x).
        feature: per-frame feature size.
        steps: Adam steps; batch: videos per step; lr: Adam learning rate; seed: torch seed.
        max_seconds: stop training early after this wall time (0: no limit; not in the key).
    """

    width: int = 16
    feature: int = 64
    steps: int = 1500
    batch: int = 32
    lr: float = 2e-3
    seed: int = 0
    max_seconds: float = 0.0

    def key_fields(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("max_seconds")
        return d


class SpriteJudgeNet(nn.Module):
    """(B, T, 3, H, W) videos in [0, 1] -> head -> (B, n_classes) logits (see the module doc)."""

    def __init__(self, frames: int = 8, size: int = 64, width: int = 16, feature: int = 64,
                 heads: Mapping[str, int] = HEADS) -> None:
        super().__init__()
        if size % 8:
            raise ValueError(f"SpriteJudgeNet: frame size must be divisible by 8, got {size}")
        self.frames, self.size = frames, size
        w2 = 2 * width
        self.trunk = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.ReLU(), nn.Conv2d(width, w2, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(w2, w2, 4, 2, 1), nn.ReLU(), nn.Flatten(),
            nn.Linear(w2 * (size // 8) ** 2, feature), nn.ReLU())
        self.heads = nn.ModuleDict({
            h: nn.Linear(feature * (frames if h == "action" else 1), n) for h, n in heads.items()})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        b, t = x.shape[:2]
        if t != self.frames or tuple(x.shape[2:]) != (3, self.size, self.size):
            raise ValueError(f"sprite judge: videos must be (B, {self.frames}, 3, {self.size}, {self.size}), "
                             f"got {tuple(x.shape)}")
        h = self.trunk((x - 0.5).reshape(b * t, *x.shape[2:])).reshape(b, t, -1)
        return {name: head(h.reshape(b, -1) if name == "action" else h.mean(1))
                for name, head in self.heads.items()}


@dataclass
class SpriteJudge:
    """A trained judge: ``net`` (eval mode) and plain-JSON ``meta`` (settings, data key, test
    accuracy per head, training time)."""

    net: SpriteJudgeNet
    meta: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def log_proba(self, videos: np.ndarray | Tensor, batch: int = 128) -> dict[str, np.ndarray]:
        """Head -> (N, n_classes) float64 log-probabilities of uint8 (N, T, H, W, C) or float
        (N, T, C, H, W) videos."""
        self.net.eval()
        out: dict[str, list[Tensor]] = {h: [] for h in self.net.heads}
        for i in range(0, len(videos), batch):
            logits = self.net(as_video_tensor(videos[i:i + batch]))
            for h, v in logits.items():
                out[h].append(torch.log_softmax(v.double(), dim=-1))
        return {h: (torch.cat(v).numpy() if v else np.zeros((0, self.net.heads[h].out_features)))
                for h, v in out.items()}

    def accuracy(self, videos: np.ndarray | Tensor, labels: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Head -> fraction of ``videos`` whose argmax is the label."""
        lp = self.log_proba(videos)
        return {h: float(np.mean(lp[h].argmax(1) == np.asarray(labels[h]))) for h in lp if h in labels}

    def save(self, stem: str | Path) -> None:
        """``stem.safetensors`` then ``stem.json`` (with the weights' SHA-256), atomically."""
        stem = Path(stem)
        weights = stem.with_suffix(".safetensors")
        state = {k: v.contiguous() for k, v in self.net.state_dict().items()}
        atomic_write_with(weights, lambda tmp: save_file(state, tmp))
        net = {"frames": self.net.frames, "size": self.net.size,
               "width": self.net.trunk[0].out_channels, "feature": self.net.trunk[-2].out_features,
               "heads": {h: m.out_features for h, m in self.net.heads.items()}}
        atomic_write_json(stem.with_suffix(".json"), {"format": JUDGE_FORMAT, "net": net, "meta": self.meta,
                                                      "weights_sha256": file_sha256(weights)})

    @classmethod
    def load(cls, stem: str | Path) -> SpriteJudge:
        """Read a judge written by :meth:`save`; RunDirError (one line naming the file) when either
        file is missing, damaged or does not match the other."""
        stem = Path(stem)
        info = read_json(stem.with_suffix(".json"))
        weights = stem.with_suffix(".safetensors")
        try:
            if not weights.is_file():
                raise RunDirError(f"{weights}: judge weights are missing")
            if file_sha256(weights) != info["weights_sha256"]:
                raise RunDirError(f"{weights}: SHA-256 does not match {stem.with_suffix('.json').name}")
            net = SpriteJudgeNet(**info["net"])
            net.load_state_dict(load_file(str(weights)))
        except RunDirError:
            raise
        except (OSError, KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as e:
            raise RunDirError(f"{stem}: cannot load sprite judge ({e.__class__.__name__}: "
                              f"{' '.join(str(e).split())})") from e
        return cls(net.eval(), info.get("meta", {}))


def _data_digest(videos: np.ndarray, labels: Mapping[str, np.ndarray]) -> bytes:
    """SHA-256 of the videos' shape, dtype and bytes and of every label array."""
    h = hashlib.sha256()
    h.update(json.dumps([list(videos.shape), str(videos.dtype)]).encode())
    h.update(memoryview(np.ascontiguousarray(videos)).cast("B"))
    for k in sorted(labels):
        h.update(k.encode())
        h.update(np.ascontiguousarray(labels[k], dtype=np.int64).tobytes())
    return h.digest()


def judge_key(train: ModalitySet, test: ModalitySet, settings: JudgeSettings) -> str:
    """SHA-256 of both splits' frames and labels and the judge settings (the cache key)."""
    h = hashlib.sha256(json.dumps({"format": JUDGE_FORMAT, **settings.key_fields()},
                                  sort_keys=True).encode())
    for s in (train, test):
        h.update(_data_digest(np.asarray(sprite_videos(s)), sprite_labels(s)))
    return h.hexdigest()


def fit_judge(train: ModalitySet, test: ModalitySet | None = None, settings: JudgeSettings = JudgeSettings(),
              log: Callable[[str], None] | None = None) -> SpriteJudge:
    """Train a judge on the real videos of ``train`` (a sprites ModalitySet); ``meta`` records
    the settings, the training time and, with ``test``, the test accuracy of every head."""
    videos = np.asarray(sprite_videos(train))
    labels = {h: torch.from_numpy(v) for h, v in sprite_labels(train).items()}
    if (videos.ndim != 5 or videos.dtype != np.uint8 or videos.shape[-1] != 3
            or videos.shape[2] != videos.shape[3]):
        raise ValueError(f"fit_judge: need uint8 (N, T, S, S, 3) videos, got {videos.dtype} {videos.shape}")
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    net = SpriteJudgeNet(videos.shape[1], videos.shape[2], settings.width, settings.feature)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    batch = min(settings.batch, len(videos))
    net.train()
    t0, step, recent = time.perf_counter(), 0, []
    while step < settings.steps:
        if settings.max_seconds and time.perf_counter() - t0 > settings.max_seconds:
            break
        idx = torch.randint(0, len(videos), (batch,), generator=gen)
        logits = net(as_video_tensor(videos[idx.numpy()]))
        loss = sum(nn.functional.cross_entropy(v, labels[h][idx]) for h, v in logits.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        recent.append(float(loss.detach()))
        if log and step % 100 == 0:
            log(f"judge step {step}: loss {np.mean(recent[-100:]):.4f} ({time.perf_counter() - t0:.0f} s)")
    judge = SpriteJudge(net.eval(), {"settings": asdict(settings), "steps_done": step,
                                     "train_seconds": round(time.perf_counter() - t0, 1),
                                     "n_train": int(len(videos)),
                                     "final_loss": round(float(np.mean(recent[-20:])), 5) if recent
                                     else None})
    if test is not None:
        judge.meta["n_test"] = len(test.labels)
        judge.meta["test_accuracy"] = judge.accuracy(np.asarray(sprite_videos(test)), sprite_labels(test))
    return judge


def ensure_judge(train: ModalitySet, test: ModalitySet, cache: str | Path,
                 settings: JudgeSettings = JudgeSettings(),
                 log: Callable[[str], None] | None = None) -> tuple[SpriteJudge, bool]:
    """The judge for these data and settings from ``cache``/judge-KEY.*, fitted and saved when
    absent or damaged. Returns (judge, reused)."""
    key = judge_key(train, test, settings)
    stem = Path(cache).expanduser() / f"judge-{key[:24]}"
    if stem.with_suffix(".json").is_file():
        try:
            judge = SpriteJudge.load(stem)
            if judge.meta.get("key") == key:
                return judge, True
        except RunDirError as e:
            print(f"dispart: warning: {e}; refitting the sprite judge", file=sys.stderr, flush=True)
    judge = fit_judge(train, test, settings, log)
    judge.meta["key"] = key
    judge.save(stem)
    return judge, False


# ------------------------------------------------------------------------------------- metrics
def _pair(logp_generated: np.ndarray, logp_source: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(logp_generated, np.float64), np.asarray(logp_source, np.float64)
    if a.shape != b.shape or a.ndim != 2 or len(a) == 0:
        raise ValueError(f"need two equal, non-empty (N, classes) arrays of log-probabilities, got "
                         f"{a.shape} and {b.shape}")
    return a, b


def disagreement(logp_generated: np.ndarray, logp_source: np.ndarray) -> float:
    """Fraction of rows whose argmax differs (the paper's max_i p_recon(i) != max_i p_data(i))."""
    a, b = _pair(logp_generated, logp_source)
    return float(np.mean(a.argmax(1) != b.argmax(1)))


def kl_recon(logp_generated: np.ndarray, logp_source: np.ndarray) -> float:
    """Mean over rows of KL[p_recon || p_data] in nats, from (N, C) log-probabilities."""
    a, b = _pair(logp_generated, logp_source)
    pa = np.exp(a)
    return float(np.mean(np.sum(np.where(pa > 0, pa * (a - b), 0.0), axis=1)))


def kl_random(logp_source: np.ndarray) -> float:
    """Mean over rows of KL[u || p_data], u uniform over the C classes (the paper's KL-random)."""
    b = np.asarray(logp_source, np.float64)
    if b.ndim != 2 or len(b) == 0:
        raise ValueError(f"need a non-empty (N, classes) array of log-probabilities, got {b.shape}")
    c = b.shape[1]
    return float(np.mean(-np.log(c) - b.mean(axis=1)))


# ------------------------------------------------------------------------------------- protocol
def _latent_names(model: Any) -> tuple[str, str]:
    static = [n for n, v in model.latents.items() if not v.dynamic]
    dynamic = [n for n, v in model.latents.items() if v.dynamic]
    if len(static) != 1 or len(dynamic) != 1:
        raise ValueError(f"Table 1 needs one static and one dynamic latent, the model declares "
                         f"{list(model.latents)}")
    return static[0], dynamic[0]


@torch.no_grad()
def judged_videos(model: Any, videos: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
    """The three videos Table 1 judges, from one encoding of ``videos`` (N, T, C, H, W), as decoded
    means (N, T, C, H, W): "fix_f" (a: f = mean of q(f | x_1:T), z_1:T ~ the LSTM prior), "fix_z"
    (b: z_1:T = mean of q(z_1:T | .), f ~ p(f)), "reconstruction" (f and z_1:T both q's means;
    draws nothing), and the two swaps, which draw nothing either: "swap_z" (f of row i, z_1:T of
    row (i + N // 2) mod N, both q's means) and "swap_f" (z_1:T of row i, f of that other row).
    The swaps tell a split that leaks (the other row's z_1:T brings its identity along) from
    prior samples the decoder does not know. ``generator`` draws the prior samples, (a) before (b)."""
    f_name, z_name = _latent_names(model)
    lengths = torch.full((len(videos),), videos.shape[1], dtype=torch.long)
    q = model.encode({model.modality: Sequences(videos, lengths)})
    f, z = q[f_name].mean, q[z_name].mean
    other = torch.roll(torch.arange(len(videos)), -(len(videos) // 2))
    return {"fix_f": model.generate(lengths, f=f, generator=generator).x,
            "fix_z": model.generate(lengths, z=z, generator=generator).x,
            "reconstruction": model.generate(lengths, f=f, z=z).x,
            "swap_z": model.generate(lengths, f=f, z=z[other]).x,
            "swap_f": model.generate(lengths, f=f[other], z=z).x}


def table1(model: Any, judge: SpriteJudge, videos: np.ndarray | Tensor, seed: int = 0, batch: int = 64,
           labels: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The paper's Table 1 on ``videos`` (uint8 (N, T, H, W, C) or float (N, T, C, H, W)).

    Returns ``attribute_disagreement_fix_f``, ``attribute_kl_fix_f``, ``attribute_kl_random``
    (attribute -> value), ``action_disagreement_fix_z``, ``action_kl_fix_z``,
    ``action_kl_random``, ``n``, and ``reconstruction_disagreement`` (every head, f and z both
    from q: whether a failure is the reconstruction's or the split's); with ``labels`` (head ->
    (N,) ints) also the judge's accuracy on the sources and the fraction of generated videos
    judged as the source's true label (``*_label_error_*``). One generator seeded with ``seed``
    draws every prior sample. ``attribute_disagreement_swap_z`` and ``action_disagreement_swap_f``
    judge the swaps of ``judged_videos`` (the other latent from another video of the same batch
    instead of the prior): a low swap score beside a high prior one means the prior's samples,
    not a leaking split, cause the disagreement.
    """
    gen = torch.Generator().manual_seed(seed)
    was = model.training
    model.eval()
    src: dict[str, list[np.ndarray]] = {h: [] for h in judge.net.heads}
    fix_f: dict[str, list[np.ndarray]] = {h: [] for h in ATTRIBUTE_HEADS}
    fix_z: list[np.ndarray] = []
    swap_z: dict[str, list[np.ndarray]] = {h: [] for h in ATTRIBUTE_HEADS}
    swap_f: list[np.ndarray] = []
    recon: dict[str, list[np.ndarray]] = {h: [] for h in judge.net.heads}
    try:
        for i in range(0, len(videos), batch):
            x = as_video_tensor(videos[i:i + batch])
            for h, v in judge.log_proba(x).items():
                src[h].append(v)
            made = judged_videos(model, x, gen)
            gf = judge.log_proba(made["fix_f"])
            for h in ATTRIBUTE_HEADS:
                fix_f[h].append(gf[h])
            fix_z.append(judge.log_proba(made["fix_z"])["action"])
            gs = judge.log_proba(made["swap_z"])
            for h in ATTRIBUTE_HEADS:
                swap_z[h].append(gs[h])
            swap_f.append(judge.log_proba(made["swap_f"])["action"])
            for h, v in judge.log_proba(made["reconstruction"]).items():
                recon[h].append(v)
    finally:
        model.train(was)
    s = {h: np.concatenate(v) for h, v in src.items()}
    f = {h: np.concatenate(v) for h, v in fix_f.items()}
    z = np.concatenate(fix_z)
    out: dict[str, Any] = {
        "n": int(len(z)),
        "attribute_disagreement_fix_f": {h: disagreement(f[h], s[h]) for h in ATTRIBUTE_HEADS},
        "attribute_kl_fix_f": {h: kl_recon(f[h], s[h]) for h in ATTRIBUTE_HEADS},
        "attribute_kl_random": {h: kl_random(s[h]) for h in ATTRIBUTE_HEADS},
        "action_disagreement_fix_z": disagreement(z, s["action"]),
        "action_kl_fix_z": kl_recon(z, s["action"]),
        "action_kl_random": kl_random(s["action"]),
        "reconstruction_disagreement": {h: disagreement(np.concatenate(v), s[h]) for h, v in recon.items()},
        "attribute_disagreement_swap_z": {h: disagreement(np.concatenate(swap_z[h]), s[h])
                                          for h in ATTRIBUTE_HEADS},
        "action_disagreement_swap_f": disagreement(np.concatenate(swap_f), s["action"]),
    }
    if labels is not None:
        out["judge_accuracy_on_sources"] = {h: float(np.mean(s[h].argmax(1) == labels[h])) for h in s}
        out["attribute_label_error_fix_f"] = {h: float(np.mean(f[h].argmax(1) != labels[h]))
                                              for h in ATTRIBUTE_HEADS}
        out["action_label_error_fix_z"] = float(np.mean(z.argmax(1) != labels["action"]))
    return out

