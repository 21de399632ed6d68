"""Nearest-neighbour matching against a gallery with a per-embedder distance threshold."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from lambda_image.gallery import Gallery

UNKNOWN = "unknown_person"
NO_PERSONS = "no_persons_found"

#: Euclidean distance above which a face is `unknown_person`.
#: dlib: the library's customary tolerance (the course clips match at 0.33–0.57, other people ≥0.65).
#: facenet (unit-norm 512-d): from data.pt itself, same-person pairs are ≤0.68 apart in 95% of
#: cases and different people ≥1.00 in 95% (min 0.72); 0.9 sits between. Untested against live
#: faces here (no vggface2 weights on these machines).
DEFAULT_THRESHOLDS = {"dlib": 0.6, "facenet": 0.9}


@dataclass(frozen=True)
class Match:
    name: str  # gallery name, or UNKNOWN
    distance: float  # to the nearest gallery entry
    nearest: str  # the nearest gallery name even when above the threshold
    #: the nearest *other* identity (gallery names may repeat: a person's own rows never count)
    runner_up: str = ""
    runner_up_distance: float = float("inf")
    #: every identity's nearest-entry distance: what tracking a face over frames compares
    identities: Mapping[str, float] = field(default_factory=dict, compare=False, repr=False)
    #: how far the nearest identity's gallery entries lie from any other identity's
    #: (Matcher.spacing; inf: a one-person gallery): what the decision rule scales with
    spacing: float = float("inf")

    @property
    def known(self) -> bool:
        return self.name != UNKNOWN

    @property
    def margin(self) -> float:
        """How much further the runner-up identity is than the nearest (inf: a one-person gallery)."""
        return self.runner_up_distance - self.distance


class Matcher:
    def __init__(self, gallery: Gallery, threshold: float | None = None) -> None:
        self.gallery = gallery
        self.threshold = DEFAULT_THRESHOLDS[gallery.embedder] if threshold is None else threshold
        self._rows = gallery.embeddings.astype(np.float32)
        self._people = gallery.people
        names = np.asarray(gallery.names)
        self._columns = [np.flatnonzero(names == person) for person in self._people]
        self.spacing = spacing(self._rows, self._columns, self._people)

    def match(self, embeddings: np.ndarray) -> list[Match]:
        if len(embeddings) == 0 or len(self._rows) == 0:
            return [Match(UNKNOWN, float("inf"), "") for _ in range(len(embeddings))]
        distances = np.linalg.norm(self._rows[None, :, :] - embeddings[:, None, :], axis=2)
        # (faces, identities): each identity's nearest gallery entry
        per_person = np.stack([distances[:, cols].min(axis=1) for cols in self._columns], axis=1)
        out = []
        for row in per_person:
            order = np.argsort(row, kind="stable")
            d = float(row[order[0]])
            nearest = self._people[order[0]]
            second = order[1] if len(order) > 1 else None
            out.append(Match(
                nearest if d <= self.threshold else UNKNOWN, d, nearest,
                runner_up=self._people[second] if second is not None else "",
                runner_up_distance=float(row[second]) if second is not None else float("inf"),
                identities=dict(zip(self._people, (float(v) for v in row), strict=True)),
                spacing=self.spacing[nearest]))
        return out


def spacing(rows: np.ndarray, columns: list[np.ndarray], people: list[str]) -> dict[str, float]:
    """Each identity's distance to the nearest entry of any *other* identity in the gallery.

    The gallery's own spread: a face as far from its identity as that identity's nearest
    neighbour is no nearer to it than the neighbour is, so the decision rule
    (lambda_image.confirm) names a face at once only well inside that distance."""
    if len(people) < 2:
        return {person: float("inf") for person in people}
    between = np.linalg.norm(rows[:, None, :] - rows[None, :, :], axis=2)
    owner = np.empty(len(rows), dtype=int)
    for i, cols in enumerate(columns):
        owner[cols] = i
    between[owner[:, None] == owner[None, :]] = np.inf
    return {person: float(between[cols].min()) for person, cols in zip(people, columns,
                                                                       strict=True)}
