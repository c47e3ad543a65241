"""FashionIQ, CIRR and CIRCO metrics with the official semantics, vectorised; in percent (0-100).

Modules: ``kernels`` (input checks, gallery matrices, the rank and top-K kernels every
format shares), ``fashioniq`` (protocols, R@10 / R@50), ``cirr`` (R@K, Rsubset@K, Rmean),
``circo`` (mAP@K), ``topk`` (ranked name lists for submission files), ``submission`` (the
ranked-list checker and JSON file handling the CIRR and CIRCO submission files share; the
formats' writers and validators live in ``cirr`` and ``circo``) and ``reference`` (slow
literal implementations, for tests and benchmarks only). The public names are re-exported
here: ``from bench.metrics import fashioniq_metrics, write_cirr_submission, ...``.

Scores are (queries x gallery) similarities, higher is better, as a numpy array or a torch
tensor (converted with ``.detach().cpu().numpy()``; torch is never imported here).

Tie policy ("gallery-order tie-break"): the ranking is exactly the one a stable sort of
descending scores gives (``np.argsort(-scores, kind="stable")``): among equal scores the
image listed first in the gallery ranks first. The rank of a target is computed directly,
without sorting: ``rank = #(score > s_t) + #(score == s_t and index < idx_t)`` over the
images still in the ranking, which costs O(queries x gallery) and no sort. A query hits at K
when that 0-based rank is below K.

Targets: an entry of ``target_names`` is one name or a sequence of names (CIRR soft
targets); any of them counts and the best-ranked one decides. A target equal to a reference
that is removed from the ranking can never be retrieved (counts as a miss, as in the
literal CLIP4Cir code).

The FashionIQ protocols are described in :mod:`bench.metrics.fashioniq`, the CIRR metrics
in :mod:`bench.metrics.cirr`, the CIRCO mAP in :mod:`bench.metrics.circo`.

The ``*_from_features`` entries search the top (max K + 1) images with ``faiss.IndexFlatIP``
and never sort the whole gallery. The candidates are re-ordered by the same tie policy
(faiss lists equal scores in no useful order), and the few queries with a tie at the
cut-off (the (k+1)-th score equals the k-th) are re-scored exactly against the whole
gallery. They agree with the score-based entries up to floating-point rounding of the
dot products (faiss and numpy may round the same dot product differently).
"""

from bench.metrics.circo import (
    CIRCO_KS,
    CIRCO_LIST_LENGTH,
    check_circo_submission,
    circo_metrics,
    circo_metrics_from_features,
    circo_metrics_from_rankings,
    circo_query_values,
    circo_query_values_from_features,
    circo_submission,
    circo_submission_from_features,
    circo_submission_from_scores,
    validate_circo_submission,
    write_circo_submission,
)
from bench.metrics.cirr import (
    CIRR_KS,
    CIRR_LIST_LENGTHS,
    CIRR_SUBSET_KS,
    CIRR_VERSION,
    check_cirr_submission,
    cirr_metrics,
    cirr_metrics_from_features,
    cirr_query_values,
    cirr_query_values_from_features,
    cirr_submission_from_features,
    cirr_submission_from_scores,
    validate_cirr_submission,
    with_cirr_rmean,
    write_cirr_submission,
)
from bench.metrics.fashioniq import (
    DEFAULT_FASHIONIQ_PROTOCOL,
    FASHIONIQ_KS,
    FASHIONIQ_PROTOCOLS,
    FashionIQProtocol,
    fashioniq_average,
    fashioniq_metrics,
    fashioniq_metrics_for_protocol,
    fashioniq_metrics_from_features,
    fashioniq_protocol_gallery,
    fashioniq_query_values,
    fashioniq_query_values_for_protocol,
    fashioniq_query_values_from_features,
    get_fashioniq_protocol,
)
from bench.metrics.kernels import TargetSpec, max_similarity, percent, percents
from bench.metrics.perquery import QueryValues
from bench.metrics.topk import (
    subset_topk_from_scores,
    subset_topk_names,
    topk_from_scores,
    topk_names,
)

__all__ = [
    "CIRCO_KS",
    "CIRCO_LIST_LENGTH",
    "CIRR_KS",
    "CIRR_LIST_LENGTHS",
    "CIRR_SUBSET_KS",
    "CIRR_VERSION",
    "DEFAULT_FASHIONIQ_PROTOCOL",
    "FASHIONIQ_KS",
    "FASHIONIQ_PROTOCOLS",
    "FashionIQProtocol",
    "QueryValues",
    "TargetSpec",
    "check_circo_submission",
    "check_cirr_submission",
    "circo_metrics",
    "circo_metrics_from_features",
    "circo_metrics_from_rankings",
    "circo_query_values",
    "circo_query_values_from_features",
    "circo_submission",
    "circo_submission_from_features",
    "circo_submission_from_scores",
    "cirr_metrics",
    "cirr_metrics_from_features",
    "cirr_query_values",
    "cirr_query_values_from_features",
    "cirr_submission_from_features",
    "cirr_submission_from_scores",
    "fashioniq_average",
    "fashioniq_metrics",
    "fashioniq_metrics_for_protocol",
    "fashioniq_metrics_from_features",
    "fashioniq_protocol_gallery",
    "fashioniq_query_values",
    "fashioniq_query_values_for_protocol",
    "fashioniq_query_values_from_features",
    "get_fashioniq_protocol",
    "max_similarity",
    "percent",
    "percents",
    "subset_topk_from_scores",
    "subset_topk_names",
    "topk_from_scores",
    "topk_names",
    "validate_circo_submission",
    "validate_cirr_submission",
    "with_cirr_rmean",
    "write_circo_submission",
    "write_cirr_submission",
]
