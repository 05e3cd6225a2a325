"""`kill -9` of a real server process during a burst of submissions: every judgment answered
2xx/303 is in the database afterwards, none is half-written, and the server comes back."""

import http.cookiejar
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import sqlalchemy as sa

from annotate_helpers import PASSWORD, add_users, filled_form, import_items, items, live_server
from batgpt_jax.annotate import db, models

LABELLERS = [f"burst{i}" for i in range(6)]
KILL_AFTER = 12       # acknowledged judgments before the kill
MAX_SECONDS = 30      # the burst never runs longer than this


class _NoRedirect(urllib.request.HTTPRedirectHandler):
  def redirect_request(self, *args, **kwargs):  # a 303 is the answer we want to see
    return None


def _client():
  jar = http.cookiejar.CookieJar()
  return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())


def _csrf(html: str) -> str:
  return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _post(opener, url: str, form: dict) -> int:
  body = urllib.parse.urlencode(form, doseq=True).encode()
  try:
    with opener.open(urllib.request.Request(url, data=body), timeout=10) as response:
      return response.status
  except urllib.error.HTTPError as err:
    return err.code


def _labeller(base: str, name: str, acknowledged: list, stop: threading.Event) -> None:
  opener = _client()
  try:
    token = _csrf(opener.open(base + "/login", timeout=10).read().decode())
    assert _post(opener, base + "/login", {"username": name, "password": PASSWORD,
                                           "csrf_token": token}) == 303
    while not stop.is_set():
      page = opener.open(base + "/label/1", timeout=10).read().decode()
      found = re.search(r'action="/label/1/submit/(\d+)"', page)
      if not found:
        return
      status = _post(opener, f"{base}/label/1/submit/{found.group(1)}", filled_form(_csrf(page)))
      if status == 303:
        acknowledged.append(int(found.group(1)))
  except (OSError, AssertionError):
    return  # the server was killed under us: whatever was not acknowledged may be lost


def test_kill_9_during_a_burst_loses_no_acknowledged_judgment(db_url):
  add_users(db_url, {n: "labeller" for n in LABELLERS})
  import_items(db_url, "p", items(40), votes_required=2)
  acknowledged, stop = [], threading.Event()
  with live_server(db_url) as (base, process):
    threads = [threading.Thread(target=_labeller, args=(base, n, acknowledged, stop))
               for n in LABELLERS]
    for t in threads:
      t.start()
    deadline = time.monotonic() + MAX_SECONDS
    while len(acknowledged) < KILL_AFTER and time.monotonic() < deadline:
      time.sleep(0.01)
    process.kill()  # SIGKILL mid-burst: no shutdown handlers, no flush
    process.wait(timeout=10)
    stop.set()
    for t in threads:
      t.join(timeout=30)
  assert len(acknowledged) >= KILL_AFTER, "the burst did not get going"
  engine = db.make_engine(db_url)
  with engine.connect() as connection:
    judged = dict(connection.execute(sa.select(models.Judgment.assignment_id,
                                               models.Judgment.id)).all())
    ratings = connection.execute(
        sa.select(models.AnswerRating.judgment_id, sa.func.count())
        .group_by(models.AnswerRating.judgment_id)).all()
    done_without_judgment = connection.scalar(
        sa.select(sa.func.count()).select_from(models.Assignment)
        .where(models.Assignment.done.is_(True), models.Assignment.id.not_in(
            sa.select(models.Judgment.assignment_id))))
    audited = connection.scalar(sa.select(sa.func.count()).select_from(models.AuditLog)
                                .where(models.AuditLog.action == "judgment"))
  engine.dispose()
  assert set(acknowledged) <= set(judged)  # nothing answered 303 was lost
  assert dict(ratings) == {j: 2 for j in judged.values()}  # each judgment whole: both ratings
  assert done_without_judgment == 0 and audited == len(judged)  # no lease closed half-way
  with live_server(db_url) as (base, _):  # and the same database serves again
    opener = _client()
    token = _csrf(opener.open(base + "/login", timeout=10).read().decode())
    assert _post(opener, base + "/login", {"username": LABELLERS[0], "password": PASSWORD,
                                           "csrf_token": token}) == 303
    assert "item #" in opener.open(base + "/label/1", timeout=10).read().decode()
