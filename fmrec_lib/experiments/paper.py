"""The paper's public numbers (METHOD.md): the few that could be read."""

# (dataset, variant, metric) -> value in %
PAPER_NUMBERS: dict[tuple[str, str, str], float] = {
    ("beauty", "fmrec", "HR@5"): 5.84,
    ("beauty", "fmrec (v-prediction)", "HR@5"): 0.57,
}
# FMRec's claimed average relative gain over the strongest baseline, over four datasets, in %.
CLAIMED_AVERAGE_GAIN = 6.53
