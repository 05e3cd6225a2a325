"""The agreement statistics equal values computed by hand (the arithmetic is in the comments)."""

import pytest

from annotate_helpers import build_stats_fixture
from batgpt_jax.annotate import db, models, stats


def test_cohen_kappa_by_hand():
  # u: a a b b tie; v: a b b b tie. Observed 4/5. Chance: a 2*1 + b 2*3 + tie 1*1 = 9 of 25.
  # kappa = (0.8 - 0.36) / (1 - 0.36) = 0.6875
  assert stats.cohen_kappa(list("aabb") + ["tie"], list("abbb") + ["tie"]) == pytest.approx(0.6875)
  assert stats.cohen_kappa(list("ab"), list("ab")) == pytest.approx(1.0)
  assert stats.cohen_kappa(list("aa"), list("aa")) is None  # chance agreement 1: undefined
  with pytest.raises(ValueError, match="equally long"):
    stats.cohen_kappa(["a"], [])


def test_krippendorff_alpha_by_hand():
  # Units [a a] [a b] [b b] [b b] [t t]: o_aa 2, o_ab = o_ba 1, o_bb 4, o_tt 2; n_a 3, n_b 5,
  # n_t 2, n 10. alpha = 1 - (n-1) * 2 / (2 * (3*5 + 3*2 + 5*2)) = 1 - 18/62.
  units = [["a", "a"], ["a", "b"], ["b", "b"], ["b", "b"], ["tie", "tie"]]
  assert stats.krippendorff_alpha(units) == pytest.approx(1 - 18 / 62)
  # Three labels in a unit: [a a b] adds o_aa 1, o_ab 1, o_ba 1 (pairs / (m - 1) = /2);
  # [b b b] o_bb 3; [a a a] o_aa 3. n_a 5, n_b 4, n 9: alpha = 1 - 8 * 2 / (2 * 5 * 4) = 0.6.
  # A single-label unit carries nothing.
  assert stats.krippendorff_alpha([list("aab"), list("bbb"), list("aaa"), ["a"]]) == \
      pytest.approx(0.6)
  assert stats.krippendorff_alpha([list("aa"), list("aa")]) is None


def test_bradley_terry_by_hand_and_at_the_likelihood_optimum():
  # Two models: P(A beats B) = pA / (pA + pB) is the win share at the MLE: 3 of 4.
  two = stats.bradley_terry([("A", "B", 3), ("B", "A", 1)])
  assert two["A"] == pytest.approx(0.75) and two["B"] == pytest.approx(0.25)
  games = [("A", "B", 2), ("B", "A", 1), ("B", "C", 2), ("C", "B", 1), ("A", "C", 2),
           ("C", "A", 1)]
  p = stats.bradley_terry(games)
  # At the MLE each model's wins equal its expected wins: W_i = sum_j n_ij p_i / (p_i + p_j).
  wins = {"A": 4, "B": 3, "C": 2}
  pairs = {frozenset("AB"): 3, frozenset("BC"): 3, frozenset("AC"): 3}
  for i in "ABC":
    expected = sum(n * p[i] / (p[i] + p[j]) for pair, n in pairs.items() if i in pair
                   for j in pair - {i})
    assert expected == pytest.approx(wins[i], abs=1e-8)
  assert p["A"] > p["B"] > p["C"] and sum(p.values()) == pytest.approx(1)


def test_project_statistics_on_a_fixture(sqlite_url):
  build_stats_fixture(sqlite_url)
  engine = db.make_engine(sqlite_url)
  with db.transaction(db.session_factory(engine)) as session:
    figures = stats.project_stats(session, session.get(models.Project, 1))
  engine.dispose()
  assert figures["judgments"] == 13
  kappas = {tuple(k["labellers"]): (k["shared_items"], k["kappa"]) for k in figures["kappa_pairs"]}
  # u1: a b a tie; u2: a b b tie. Observed 3/4; chance (2*1 + 1*2 + 1*1)/16 = 5/16.
  # kappa = (12/16 - 5/16) / (11/16) = 7/11. u3 shares one item with each: chance 1, undefined.
  assert kappas[("u1", "u2")] == (4, pytest.approx(7 / 11))
  assert kappas[("u1", "u3")] == (1, None) and kappas[("u2", "u3")] == (1, None)
  # Units [a a a] [b b] [a b] [t t]: o_aa 3, o_bb 2, o_ab = o_ba 1, o_tt 2; n_a 4, n_b 3,
  # n_t 2, n 9. alpha = 1 - 8 * 2 / (2 * (4*3 + 4*2 + 3*2)) = 1 - 16/52.
  assert figures["krippendorff_alpha"] == pytest.approx(1 - 16 / 52)
  # Left picks among preferences (gold included): u1 c1 L, c2 R, c3 L, c5 L -> 3/4;
  # u2 c1 R, c2 L, c3 R, c5 R -> 1/4; u3 c1 L -> 1/1.
  assert figures["left_bias"] == {"u1": {"left_rate": 0.75, "preferred": 4},
                                  "u2": {"left_rate": 0.25, "preferred": 4},
                                  "u3": {"left_rate": 1.0, "preferred": 1}}
  assert figures["gold_accuracy"] == {"u1": {"accuracy": 1.0, "answered": 2},
                                      "u2": {"accuracy": 0.0, "answered": 1}}
  # Human majorities: c1 a, c2 b, c3 none (1-1), c4 tie. The judge: a (agree), a (disagree),
  # c3 not compared, tie (agree) -> 2 of 3.
  assert figures["human_ai_agreement"] == {"judge": {"agreement": pytest.approx(2 / 3),
                                                     "compared": 3}}
  # Bradley-Terry on the non-gold items: m1 wins c1 x3, c3 x1, half of each tie (2 x 0.5) = 5;
  # m2 wins c2 x2, c3 x1, 1 from ties = 4. Two models: strength = win share, 5/9 and 4/9.
  ranking = {r["model"]: r["strength"] for r in figures["bradley_terry"]}
  assert ranking == {"m1": pytest.approx(5 / 9), "m2": pytest.approx(4 / 9)}
  assert [r["model"] for r in figures["bradley_terry"]] == ["m1", "m2"]
