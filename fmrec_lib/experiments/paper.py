"""The paper's public numbers (METHOD.md): the few that could be read."""

# (dataset, variant, metric) -> value in %
PAPER_NUMBERS: dict[tuple[str, str, str], float] = {
    ("beauty", "fmrec", "HR@5"): 5.84,
    ("beauty", "fmrec (v-prediction)", "HR@5"): 0.57,
}
# FMRec's claimed average relative gain over the strongest baseline, over four datasets, in %.
CLAIMED_AVERAGE_GAIN = 6.53
# The authors' code on one H100, seconds per training epoch (METHOD.md).
AUTHORS_EPOCH_SECONDS = {"ml-100k": (29, 33), "beauty": (36, 40)}
