"""Leases under concurrency, own answers, expiry with drafts kept, replays stored once."""

import datetime
import http.cookiejar
import random
import re
import threading
import urllib.parse
import urllib.request

import sqlalchemy as sa

from annotate_helpers import (PASSWORD, add_users, csrf_of, filled_form, import_items, items,
                              live_server, login)
from batgpt_jax.annotate import assignment, db, models

LABELLERS = [f"lab{i}" for i in range(10)]


def _lease_all_at_once(url: str, names: list[str]) -> dict:
  """Every labeller asks for work at the same instant, each in its own transaction."""
  engine = db.make_engine(url)
  factory = db.session_factory(engine)
  barrier = threading.Barrier(len(names))
  got, errors = {}, []

  def ask(name):
    try:
      barrier.wait(timeout=30)

      def work(session):
        user = session.scalar(sa.select(models.User).where(models.User.username == name))
        project = session.scalar(sa.select(models.Project))
        lease = assignment.lease_next(session, user, project, rng=random.Random(name))
        return None if lease.assignment is None else lease.assignment.comparison_id

      got[name] = db.run(factory, work, retry_integrity=True)
    except Exception as err:  # pylint: disable=broad-except
      errors.append(repr(err))

  threads = [threading.Thread(target=ask, args=(n,)) for n in names]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=60)
  engine.dispose()
  assert not errors, errors
  return got


def _leases(url: str) -> list[tuple[int, int]]:
  engine = db.make_engine(url)
  with engine.connect() as connection:
    rows = connection.execute(sa.select(models.Assignment.comparison_id,
                                        models.Assignment.user_id)).all()
  engine.dispose()
  return [tuple(r) for r in rows]


def test_ten_labellers_at_once_get_at_most_three_leases_and_no_repeats(db_url):
  add_users(db_url, {n: "labeller" for n in LABELLERS})
  import_items(db_url, "p", items(1), votes_required=3)
  got = _lease_all_at_once(db_url, LABELLERS)
  leases = _leases(db_url)
  assert len(leases) == 3  # exactly the votes required: no more, and none lost
  assert sum(v is not None for v in got.values()) == 3
  assert len(set(leases)) == len(leases)
  # Asking again, all at once: the three keep theirs, the seven still get nothing.
  again = _lease_all_at_once(db_url, LABELLERS)
  assert again == got and sorted(_leases(db_url)) == sorted(leases)


def test_many_items_fill_evenly_without_repeats(db_url):
  add_users(db_url, {n: "labeller" for n in LABELLERS})
  import_items(db_url, "p", items(4), votes_required=3)
  got = _lease_all_at_once(db_url, LABELLERS)
  leases = _leases(db_url)
  per_item = {c: sum(1 for x, _ in leases if x == c) for c, _ in leases}
  assert all(n <= 3 for n in per_item.values()) and len(leases) == 10
  assert len(set(leases)) == 10 and set(got.values()) <= set(per_item)


def test_a_labeller_never_gets_their_own_answer(sqlite_url):
  add_users(sqlite_url, {"writer": "labeller", "other": "labeller"})
  import_items(sqlite_url, "p", [{"id": "own", "prompt": "q", "responses": [
      {"text": "mine", "model": "human", "author": "writer"}, {"text": "x", "model": "m"}]}])
  got = _lease_all_at_once(sqlite_url, ["writer", "other"])
  assert got == {"writer": None, "other": 1}


def _expire(url: str, username: str) -> None:
  engine = db.make_engine(url)
  with db.transaction(db.session_factory(engine)) as session:
    user = session.scalar(sa.select(models.User).where(models.User.username == username))
    for lease in session.scalars(sa.select(models.Assignment)
                                 .where(models.Assignment.user_id == user.id)):
      lease.expires_at = db.utcnow() - datetime.timedelta(seconds=1)
  engine.dispose()


def test_expired_lease_keeps_the_draft_and_says_so(db_url, make_app):
  add_users(db_url, {"slow": "labeller", "fast": "labeller"})
  import_items(db_url, "p", items(1), votes_required=1, lease_seconds=60)
  app = make_app(db_url)
  slow = app.test_client()
  login(slow, "slow")
  page = slow.get("/label/1").text
  token = csrf_of(page)
  draft = {"choice": "B3", "comment": "half way through"}
  assert slow.post("/api/draft/1", json=draft, headers={"X-CSRFToken": token}).status_code == 200
  # 1) Expired, nobody else took it: the item comes back with the draft and a notice.
  _expire(db_url, "slow")
  page = slow.get("/label/1").text
  assert "had expired; your draft was kept" in page
  assert 'value="B3" checked' in page and "half way through" in page
  # 2) Expired again, and this time another labeller takes the only vote and answers.
  _expire(db_url, "slow")
  fast = app.test_client()
  login(fast, "fast")
  fast_page = fast.get("/label/1").text
  assert "item #1" in fast_page
  assert fast.post("/label/1/submit/2", data=filled_form(csrf_of(fast_page))).status_code == 303
  response = slow.post("/label/1/submit/1", data=filled_form(token, "B3"))
  assert response.status_code == 409
  assert "expired" in response.text and "Your draft is kept" in response.text
  engine = db.make_engine(db_url)
  with engine.connect() as connection:
    kept = connection.execute(sa.select(models.Draft.data)).scalars().all()
    judgments = connection.execute(sa.select(models.Judgment.user_id)).scalars().all()
  engine.dispose()
  assert kept == [draft] and len(judgments) == 1
  assert "your draft is kept" in slow.get("/label/1").text  # the next page says so too


def test_double_submit_and_replay_store_one_judgment(db_url, make_app):
  add_users(db_url, {"ann": "labeller"})
  import_items(db_url, "p", items(2), votes_required=1)
  app = make_app(db_url)
  client = app.test_client()
  login(client, "ann")
  token = csrf_of(client.get("/label/1").text)
  form = filled_form(token)
  barrier, codes = threading.Barrier(4), []

  def send():
    local = app.test_client()
    local.set_cookie("batgpt_annotate", client.get_cookie("batgpt_annotate").value)
    barrier.wait(timeout=30)
    codes.append(local.post("/label/1/submit/1", data=form).status_code)

  threads = [threading.Thread(target=send) for _ in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=60)
  assert codes == [303] * 4
  assert client.post("/label/1/submit/1", data=form).status_code == 303  # a later replay
  engine = db.make_engine(db_url)
  with engine.connect() as connection:
    assert connection.scalar(sa.select(sa.func.count()).select_from(models.Judgment)) == 1
    assert connection.scalar(sa.select(sa.func.count()).select_from(models.AnswerRating)) == 2
  engine.dispose()


def test_ten_labellers_at_once_through_a_real_server(db_url):
  """The same race through HTTP: ten logged-in browsers ask a real server for work at once."""
  add_users(db_url, {n: "labeller" for n in LABELLERS})
  import_items(db_url, "p", items(1), votes_required=3)
  with live_server(db_url, threads=10) as (base, _):
    openers = []
    for name in LABELLERS:
      opener = urllib.request.build_opener(
          urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
      token = csrf_of(opener.open(base + "/login", timeout=10).read().decode())
      opener.open(base + "/login", data=urllib.parse.urlencode(
          {"username": name, "password": PASSWORD, "csrf_token": token}).encode(), timeout=30)
      openers.append(opener)
    barrier, pages = threading.Barrier(len(openers)), {}

    def ask(name, opener):
      barrier.wait(timeout=30)
      pages[name] = opener.open(base + "/label/1", timeout=30).read().decode()

    threads = [threading.Thread(target=ask, args=a) for a in zip(LABELLERS, openers)]
    for t in threads:
      t.start()
    for t in threads:
      t.join(timeout=60)
  served = sorted(n for n, page in pages.items() if "item #1" in page)
  assert len(pages) == 10 and len(served) == 3
  assert sum("No item needs you" in page for page in pages.values()) == 7
  leases = _leases(db_url)
  assert len(leases) == 3 and len(set(u for _, u in leases)) == 3


def test_gold_items_come_at_the_rate_and_skips_neither_count_nor_return(sqlite_url, make_app):
  add_users(sqlite_url, {"ann": "labeller", "bob": "labeller"})
  gold = {"id": "gold", "prompt": "gold?", "gold": 0,
          "responses": [{"text": "right", "model": "m1"}, {"text": "wrong", "model": "m2"}]}
  import_items(sqlite_url, "p", items(2) + [gold], votes_required=1, gold_rate=1.0)
  app = make_app(sqlite_url)
  ann, bob = app.test_client(), app.test_client()
  login(ann, "ann")
  login(bob, "bob")
  # Rate 1: the gold item first, for both (gold is exempt from the vote cap).
  for client in (ann, bob):
    page = client.get("/label/1").text
    assert "gold?" in page
    client.post(f"/label/1/submit/{_action_id(page)}", data=filled_form(csrf_of(page)))
  # ann skips item 1 (with a reason): it is not served to her again and still needs its vote.
  page = ann.get("/label/1").text
  assert "Question 0" in page
  skip = {"csrf_token": csrf_of(page), "action": "skip", "skip_reason": "expertise"}
  assert ann.post(f"/label/1/submit/{_action_id(page)}", data=skip).status_code == 303
  page = ann.get("/label/1").text
  assert "Question 1" in page
  page = bob.get("/label/1").text
  assert "Question 0" in page  # the skipped item went to the next labeller
  engine = db.make_engine(sqlite_url)
  with engine.connect() as connection:
    outcomes = connection.execute(sa.select(models.Judgment.outcome, models.Judgment.skip_reason)
                                  .order_by(models.Judgment.id)).all()
  engine.dispose()
  assert [tuple(o) for o in outcomes] == [("preferred", None), ("preferred", None),
                                          ("skipped", "expertise")]


def _action_id(page: str) -> str:
  return re.search(r'action="/label/\d+/submit/(\d+)"', page).group(1)


def test_an_incomplete_form_is_shown_again_and_kept_as_draft(sqlite_url, make_app):
  add_users(sqlite_url, {"ann": "labeller"})
  import_items(sqlite_url, "p", items(1))
  client = make_app(sqlite_url).test_client()
  login(client, "ann")
  page = client.get("/label/1").text
  form = filled_form(csrf_of(page), "B1")
  del form["helpfulness_right"]
  response = client.post(f"/label/1/submit/{_action_id(page)}", data=form)
  assert response.status_code == 400 and "Answer B: rate its helpfulness 1-5." in response.text
  assert 'value="B1" checked' in response.text
  assert 'value="B1" checked' in client.get("/label/1").text  # kept as the draft
  skip = {"csrf_token": csrf_of(page), "action": "skip"}
  assert "Skipping needs a reason" in client.post(f"/label/1/submit/{_action_id(page)}",
                                                   data=skip).text
