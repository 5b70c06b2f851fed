"""Parity checks on onnxruntime: the rewritten model against ground truth that it did not produce.

Oracles (each check names the one it used), in :mod:`.oracles`:

* ``original``   at the exported shape, the rewritten model equals the original static model;
* ``per-sample`` a batch of N different samples equals the original run on each group of its batch;
* ``padding``    a shorter sequence equals the original fed the same tokens right-padded with mask 0,
                 compared on the real positions (models with an attention-mask input);
* ``prefix``     a shorter sequence equals the first positions of the original fed that prefix plus
                 filler tokens (token models without a mask that prove causal on the original);
* ``reference``  a static export of the same weights at another shape (``--reference``);
* ``runs``       a shape no oracle covers: it runs, output shapes equal the declared symbolic dims and
                 no NaN/Inf appears where the original had none. Reported as ``unverified``;
* ``scalar``     a folded size-like constant no oracle could rule out (:mod:`.scalars`).

Check inputs come from :mod:`.feeds` (value ranges the graph implies, float inputs the original accepts),
tolerances from :mod:`.tolerance` (compute precision and the original's own noise), the shapes checked
from :mod:`.shapes` (inside each symbol's range and multiple).
"""

from .feeds import make_feeds
from .oracles import Verifier
from .report import Check, VerifyReport
from .scalars import size_like_scalars
from .shapes import check_shapes

__all__ = ["Check", "Verifier", "VerifyReport", "check_shapes", "make_feeds", "size_like_scalars"]
