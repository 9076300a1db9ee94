"""Float tensor comparisons for the tests, judged at the scale of the numbers.

Two float32 computations of the same quantity (a chunked loss and the model's
own, one micro-batch and two accumulated, merged and unmerged LoRA) sum the
same terms in a different order, and that order changes with the kernel, the
BLAS and the torch release. The rounding error of an element is set by the
size of the terms summed into it, i.e. by the tensor's scale, not by the
element: an element that nearly cancels to 0 keeps an error of ~1e-7 of the
scale. A bare ``atol=1e-7`` therefore fails on float noise (a gradient up to
0.39 differed by 4e-7 under torch 2.15), while a bug (a wrong mask, a missing
token, an off-by-one shift or count) moves values by 1e-3 of the scale or more.
"""

from __future__ import annotations

import torch


def assert_close_scaled(
    actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str = ""
) -> None:
    """Each element of ``actual`` is within ``rel`` of its expected value plus
    ``rel`` of the largest magnitude in ``expected`` (shape and dtype equal)."""
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    atol = rel * scale

    def message(detail: str) -> str:
        where = f"{what}: " if what else ""
        return f"{where}{detail}\n(rel={rel:g} of max |expected| = {scale:.3g}: atol {atol:.3g})"

    torch.testing.assert_close(actual, expected, rtol=rel, atol=atol, msg=message)
