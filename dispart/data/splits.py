"""Train/test splits of a list of utterances.

* ``official``: the FSDD split, takes 0-4 are test, all other takes are train.
* ``speaker:NAME`` / ``speakers:A,B``: leave those speakers out (they form the test set).
"""

from __future__ import annotations

from collections.abc import Sequence

from dispart.data.corpus import Utterance
from dispart.errors import ConfigError, DataError

__all__ = [
    "OFFICIAL_TEST_TAKES", "leave_speakers_out", "official_split", "parse_split", "split_utterances",
]

OFFICIAL_TEST_TAKES = range(0, 5)


def _check_nonempty(train: list[Utterance], test: list[Utterance], what: str) -> None:
    if not train or not test:
        raise DataError(
            f"split '{what}' leaves an empty {'train' if not train else 'test'} set "
            f"({len(train)} train, {len(test)} test utterances)"
        )


def official_split(utts: Sequence[Utterance]) -> tuple[list[Utterance], list[Utterance]]:
    """FSDD official split: takes 0-4 -> test, the rest -> train (order preserved)."""
    train, test = [], []
    for u in utts:
        try:
            take = int(u.take)
        except ValueError:
            raise DataError(
                f"{u.path}: take '{u.take}' is not a number, the official split needs numeric "
                "takes (use a 'speakers:...' split instead)"
            ) from None
        (test if take in OFFICIAL_TEST_TAKES else train).append(u)
    _check_nonempty(train, test, "official")
    return train, test


def leave_speakers_out(
    utts: Sequence[Utterance], test_speakers: Sequence[str]
) -> tuple[list[Utterance], list[Utterance]]:
    """Utterances of ``test_speakers`` -> test, all others -> train (order preserved)."""
    known = sorted({u.speaker for u in utts})
    wanted = set(test_speakers)
    if not wanted:
        raise DataError("leave-speakers-out split needs at least one test speaker")
    unknown = sorted(wanted - set(known))
    if unknown:
        raise DataError(f"unknown speaker(s) {unknown}; known speakers: {known}")
    train = [u for u in utts if u.speaker not in wanted]
    test = [u for u in utts if u.speaker in wanted]
    _check_nonempty(train, test, "speakers:" + ",".join(sorted(wanted)))
    return train, test


def parse_split(split: str) -> list[str] | None:
    """``official`` -> None; ``speaker:NAME`` / ``speakers:A,B`` -> the held-out speakers."""
    split = split.strip()
    if split == "official":
        return None
    kind, sep, rest = split.partition(":")
    if sep and kind in ("speaker", "speakers"):
        names = [s.strip() for s in rest.split(",") if s.strip()]
        if kind == "speaker" and len(names) != 1:
            raise ConfigError(f"split '{split}': 'speaker:' takes exactly one name")
        if names:
            return names
    raise ConfigError(
        f"split '{split}' is invalid; expected 'official', 'speaker:NAME' or 'speakers:A,B'"
    )


def split_utterances(
    utts: Sequence[Utterance], split: str
) -> tuple[list[Utterance], list[Utterance]]:
    """Apply a split given as ``official``, ``speaker:NAME`` or ``speakers:A,B``."""
    names = parse_split(split)
    return official_split(utts) if names is None else leave_speakers_out(utts, names)
