"""Nearest-neighbour matching against a gallery with a per-embedder distance threshold."""

from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def known(self) -> bool:
        return self.name != UNKNOWN


class Matcher:
    def __init__(self, gallery: Gallery, threshold: float | None = None) -> None:
        self.gallery = gallery
        self.threshold = DEFAULT_THRESHOLDS[gallery.embedder] if threshold is None else threshold
        self._rows = gallery.embeddings.astype(np.float32)

    def match(self, embeddings: np.ndarray) -> list[Match]:
        if len(embeddings) == 0 or len(self._rows) == 0:
            return [Match(UNKNOWN, float("inf"), "") for _ in range(len(embeddings))]
        distances = np.linalg.norm(self._rows[None, :, :] - embeddings[:, None, :], axis=2)
        best = distances.argmin(axis=1)
        out = []
        for i, j in enumerate(best):
            d = float(distances[i, j])
            nearest = self.gallery.names[j]
            out.append(Match(nearest if d <= self.threshold else UNKNOWN, d, nearest))
        return out
