"""Paired differences of `full` against the other models: the standard error against scipy's
paired t-test, the sign-flip p-value against scipy's exact permutation test, the report table."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from stpipe.evaluate.metrics import PER_USER_METRICS
from stpipe.evaluate.paired import paired_differences, paired_markdown, sign_flip_p_values

FULL = np.array([1.0, 0.5, 0.0, 1.0, 0.63, 0.0, 1.0, 0.2, 0.9])
OTHER = np.array([0.0, 0.5, 0.0, 0.3, 0.0, 0.1, 1.0, 0.0, 0.2])


def _per_user(model, values, variant="all"):
    rows = [{"model": model, "variant": variant, "level": "item", "user_id": f"u{i}", "k": 10,
             **{m: v for m in PER_USER_METRICS}} for i, v in enumerate(values)]
    return pd.DataFrame(rows)


def _exact_scipy_p(diffs):
    res = stats.permutation_test((diffs,), lambda d, axis: np.mean(d, axis=axis), permutation_type="samples",
                                 alternative="two-sided", n_resamples=np.inf)
    return res.pvalue


def test_mean_stderr_match_the_paired_t_test_and_p_matches_the_exact_permutation_test():
    out = paired_differences(pd.concat([_per_user("full", FULL), _per_user("pop", OTHER)]))
    row = out[out.metric == "ndcg_diff"].iloc[0]
    assert (row.model, row.versus, row.users) == ("full", "pop", 9)
    assert row.value == pytest.approx(np.mean(FULL - OTHER))
    t = stats.ttest_rel(FULL, OTHER).statistic
    assert row.value / row.stderr == pytest.approx(t)
    # 2**9 = 512 sign assignments <= 5000 resamples: enumerated, so equal to scipy's exact test
    assert row.p_value == pytest.approx(_exact_scipy_p(FULL - OTHER), rel=1e-9)
    assert sorted(out.metric) == sorted(f"{m}_diff" for m in PER_USER_METRICS)


def test_sampled_p_value_is_seeded_and_close_to_the_exact_one():
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.05, 0.3, size=14)  # 2**14 > 2000: sampled
    exact = _exact_scipy_p(diffs)
    first = sign_flip_p_values(diffs, resamples=2000, seed=3)[0]
    assert first == sign_flip_p_values(diffs, resamples=2000, seed=3)[0]
    assert first == pytest.approx(exact, abs=0.03)  # binomial sd at p ~ 0.5, 2000 draws: 0.011
    assert math.isnan(sign_flip_p_values(np.zeros((0, 1)))[0])


def test_only_users_of_the_same_variant_are_paired_and_no_full_means_no_rows():
    per_user = pd.concat([_per_user("full", FULL), _per_user("pop", OTHER),
                          _per_user("pop", OTHER[:3], variant="novel")])
    out = paired_differences(per_user)
    assert set(out.variant) == {"all"}  # no `full` in novel: nothing to compare there
    assert paired_differences(_per_user("pop", OTHER)).empty


def test_report_table_says_beats_only_at_two_standard_errors():
    paired = pd.DataFrame(
        [("full", "ease", "all", "item", 10, "ndcg_diff", 0.030, 0.010, 700, 0.002),
         ("full", "als", "all", "item", 10, "ndcg_diff", 0.019, 0.010, 700, 0.06),
         ("full", "als", "all", "item", 5, "ndcg_diff", 0.5, 0.010, 700, 0.0)],
        columns=["model", "versus", "variant", "level", "k", "metric", "value", "stderr", "users", "p_value"],
    )
    text = paired_markdown(paired, k=10, model_order=["als", "ease"]).splitlines()
    assert text[2] == "| als | 700 | +0.0190 ± 0.0100 | 1.9 | 0.0600 | no |"
    assert text[3] == "| ease | 700 | +0.0300 ± 0.0100 | 3.0 | 0.0020 | yes |"


def test_a_second_reference_gets_its_own_table_and_stays_out_of_full_s_summary(tmp_path):
    from stpipe.evaluate.report import write_cutoffs_summary

    columns = ["model", "versus", "variant", "level", "k", "metric", "value", "stderr", "users", "p_value"]
    paired = pd.DataFrame(
        [("full", "ease", "all", "item", 10, "ndcg_diff", 0.030, 0.010, 700, 0.002),
         ("content_tuned", "content_base", "all", "item", 10, "ndcg_diff", 0.020, 0.005, 700, 0.001),
         ("full", "ease", "novel", "item", 10, "ndcg_diff", 0.010, 0.010, 600, 0.3)],
        columns=columns,
    )
    order = ["ease", "full", "content_base", "content_tuned"]
    tables = paired_markdown(paired, k=10, model_order=order).split("\n\n")
    assert tables[0].splitlines()[0].startswith("| full vs |")
    assert tables[0].splitlines()[2] == "| ease | 700 | +0.0300 ± 0.0100 | 3.0 | 0.0020 | yes |"
    assert tables[1].splitlines()[0].startswith("| content_tuned vs |")
    assert tables[1].splitlines()[2] == "| content_base | 700 | +0.0200 ± 0.0050 | 4.0 | 0.0010 | yes |"

    metrics = pd.DataFrame(
        [(m, v, "item", 10, "ndcg", 0.3, 0.01, 700) for m in order for v in ("all", "novel")],
        columns=["model", "variant", "level", "k", "metric", "value", "stderr", "users"],
    )
    out = write_cutoffs_summary({"2024-01-01": (metrics, paired)}, tmp_path / "s.md", source="s",
                                horizon_days=28, k=10, model_order=order)
    text = out.read_text()
    assert "`content_tuned` minus `content_base` (ndcg@10, paired): 2024-01-01 **+0.0200 ± 0.0050 (p 0.001)**" in text
    full_table = text.split("| full vs |")[1].split("## Variant")[0]
    assert "| ease |" in full_table and "| content_base |" not in full_table
    # both variants list every model (a variant's table once read the previous variant's pairs)
    novel = text.split("## Variant `novel`")[1]
    assert all(f"| {m} | 0.3000 ± 0.0100 |" in novel for m in order), novel
