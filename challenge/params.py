"""Generation parameters and the rules that make a combination valid."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from challenge.domain import check_domain
from challenge.errors import UsageError, argument
from challenge.geometry import DEFAULT_IMAGE_SHAPE, check_image_shape, image_values
from challenge.lambdas import LAMBDA_TRIES, FEASIBILITY_ROWS, acceptance

__all__ = ["FEASIBILITY_TRIES", "MAX_ENCRYPTIONS", "MAX_K", "MAX_RELEASE_VALUES", "MIN_ACCEPTED_TRIES",
           "MODES", "SHAPED_SINCE", "ParameterError", "Params"]

MODES = ("cross", "inside", "mixup")
MAX_K = 16
MAX_ENCRYPTIONS = 100_000_000  # keeps every keystream inside ChaCha20's 32-bit block counter
# Values in all encryptions together: what 100M 32x32x3 encryptions hold.  Larger images mean fewer
# encryptions, so a release's size (and its manifest's list of chunk files) has the same bound at any shape.
MAX_RELEASE_VALUES = MAX_ENCRYPTIONS * image_values(DEFAULT_IMAGE_SHAPE)
SHAPED_SINCE = 3  # the first format version whose parameters record image_shape (older ones mean 32x32x3)
FEASIBILITY_TRIES = FEASIBILITY_ROWS * LAMBDA_TRIES
MIN_ACCEPTED_TRIES = FEASIBILITY_TRIES // 1000  # 0.1 %


class ParameterError(UsageError):
    """A parameter (or combination) that cannot make a valid release."""


@dataclass(frozen=True, kw_only=True)
class Params:
    """Everything that shapes a release except the seed and the data; built by keyword.

    Parameters
    ----------
    mode : {'cross', 'inside', 'mixup'}
        ``cross`` mixes ``k_private`` private images with ``k - k_private`` public patches;
        ``inside`` mixes ``k`` private images; ``mixup`` is ``cross`` without the sign mask.
    k : int
        Images mixed into each encryption, 2 to 16.
    k_private : int
        Private images among them (``k`` for ``inside``, fewer otherwise).
    c1, c2 : float
        The lambdas, ``|N(0,1)|^k`` normalised, are redrawn while their largest exceeds ``c1`` or
        the private ones sum to less than ``c2``.
    n_private : int
        Private images drawn from the private set.
    per_image : int
        Encryptions whose first image is each private image.
    domain : {'centered', 'positive'}
        The pixel values: [-1, 1] or [0, 1].
    balanced : bool
        Draw the private images evenly from every class.
    image_shape : tuple of int
        (H, W, C); :func:`generator.generate` sets it from the private images.

    Notes
    -----
    Nothing is checked here: :meth:`validate` raises :class:`ParameterError` (a
    :class:`challenge.UsageError`) naming the first parameter that is wrong.
    """

    mode: str = "cross"
    k: int = 6
    k_private: int = 2
    c1: float = 0.65
    c2: float = 0.3
    n_private: int = 100
    per_image: int = 50
    domain: str = "centered"
    balanced: bool = False
    image_shape: tuple[int, int, int] = DEFAULT_IMAGE_SHAPE

    def __post_init__(self):
        if isinstance(self.image_shape, list):  # as JSON gives it; a tuple compares equal to the default
            object.__setattr__(self, "image_shape", tuple(self.image_shape))

    @property
    def k_public(self) -> int:
        return self.k - self.k_private

    @property
    def n_encryptions(self) -> int:
        return self.n_private * self.per_image

    @property
    def lambda_constraints(self) -> tuple[int, int, float, float]:
        """``(k, k_private, c1, c2)``, what a lambda try needs."""
        return self.k, self.k_private, float(self.c1), float(self.c2)

    @property
    def masked(self) -> bool:
        return self.mode != "mixup"

    @property
    def image_values(self) -> int:
        return image_values(self.image_shape)

    def to_dict(self, version: int = SHAPED_SINCE) -> dict:
        """The parameters as the manifest and key store of format ``version`` record them.

        Versions 1 and 2 have no ``image_shape`` (their images are 32x32x3): their dict, and so
        the bytes of their releases, stay what they were.
        """
        d = asdict(self)
        d["image_shape"] = list(self.image_shape)
        if version < SHAPED_SINCE:
            del d["image_shape"]
        return d

    def validate(self) -> "Params":
        """Raise :class:`ParameterError` naming the first parameter that is wrong."""
        if self.mode not in MODES:
            raise ParameterError(f"{argument('mode')} must be one of {', '.join(MODES)}, got {self.mode!r}")
        try:
            check_domain(self.domain)
        except ValueError as e:
            raise ParameterError(f"{argument('domain')}: {e}") from None
        if not 2 <= self.k <= MAX_K:
            raise ParameterError(f"{argument('k')} must be between 2 and {MAX_K}, got {self.k}")
        if self.mode == "inside" and self.k_private != self.k:
            raise ParameterError(f"{argument('mode', 'inside')} mixes only private images: {argument('k_private')} "
                                 f"must equal {argument('k')} ({self.k})")
        if not 1 <= self.k_private <= self.k:
            raise ParameterError(f"{argument('k_private')} must be between 1 and {argument('k')} ({self.k}), "
                                 f"got {self.k_private}")
        if self.mode != "inside" and self.k_private == self.k:
            raise ParameterError(f"{argument('mode', self.mode)} needs at least one public patch: "
                                 f"{argument('k_private')} < {argument('k')}")
        if not 1.0 / self.k < self.c1 <= 1.0:
            raise ParameterError(f"{argument('c1')} must be in (1/k, 1] = ({1 / self.k:.4f}, 1], got {self.c1}")
        if not 0.0 <= self.c2 <= 1.0:
            raise ParameterError(f"{argument('c2')} must be in [0, 1], got {self.c2}")
        if self.n_private < self.k_private or self.n_private < 2:
            raise ParameterError(f"{argument('n_private')} must be at least max(2, k_private) = "
                                 f"{max(2, self.k_private)}, got {self.n_private}")
        try:
            check_image_shape(self.image_shape)
        except ValueError as e:
            raise ParameterError(f"image_shape: {e}") from None
        if self.per_image < 1:
            raise ParameterError(f"{argument('per_image')} must be positive, got {self.per_image}")
        if self.n_encryptions > MAX_ENCRYPTIONS:
            raise ParameterError(f"n_private * per_image = {self.n_encryptions} exceeds the limit of {MAX_ENCRYPTIONS}")
        if self.n_encryptions * self.image_values > MAX_RELEASE_VALUES:
            raise ParameterError(f"n_private * per_image = {self.n_encryptions} encryptions of {self.image_values} values "
                                 f"exceed the limit of {MAX_RELEASE_VALUES:,} values per release")
        accepted = acceptance(self.lambda_constraints)
        if accepted < MIN_ACCEPTED_TRIES:
            raise ParameterError(
                f"{argument('c1', self.c1)} and {argument('c2', self.c2)} accept only {accepted} of "
                f"{FEASIBILITY_TRIES:,} lambda tries "
                f"for k={self.k}, k_private={self.k_private} (at least {MIN_ACCEPTED_TRIES} needed); loosen them"
            )
        return self
