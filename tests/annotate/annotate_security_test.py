"""Security, each a test: anonymous access, hashes, throttling, CSRF, escaping, injection, roles."""

import datetime
import io
import re
import sys

import pytest
import sqlalchemy as sa

from annotate_helpers import (PASSWORD, add_users, csrf_of, filled_form, import_items, items,
                              login, table_counts)
from batgpt_jax.annotate import accounts, command, db, models

XSS = [{"id": "xss", "prompt": "<script>alert('p')</script> and \"quotes\"",
        "responses": [{"text": "<img src=x onerror=alert('a')>", "model": "m1"},
                      {"text": "</div><script>alert('b')</script>", "model": "m2"}]}]


@pytest.fixture
def world(sqlite_url, make_app):
  add_users(sqlite_url, {"admin": "admin", "ann": "labeller", "bob": "labeller"})
  import_items(sqlite_url, "p", XSS + items(3), votes_required=2)
  return sqlite_url, make_app(sqlite_url)


OPEN = {"auth.login", "static", "healthz"}  # the only endpoints an anonymous visitor may use


def _routes(app, method: str) -> list[str]:
  """Every URL of the app answering `method`, with 1 for each id: new pages are covered too."""
  urls = []
  for rule in app.url_map.iter_rules():
    if method in rule.methods and rule.endpoint not in OPEN:
      urls.append(rule.build({name: 1 for name in rule.arguments}, append_unknown=False)[1])
  assert urls, method
  return sorted(urls)


def _judge_one(client) -> None:
  page = client.get("/label/1").text
  action = re.search(r'action="(/label/\d+/submit/\d+)"', page).group(1)
  assert client.post(action, data=filled_form(csrf_of(page))).status_code == 303


def test_anonymous_requests_are_redirected_or_refused_and_write_nothing(world):
  url, app = world
  helper = app.test_client()
  login(helper, "ann")
  _judge_one(helper)  # there is a judgment #1 and a live lease to aim at
  helper.get("/label/1")
  before = table_counts(url)
  anonymous = app.test_client()
  gets = _routes(app, "GET")
  assert {"/label", "/label/1", "/history", "/judgment/1", "/admin", "/admin/project/1"} <= \
      set(gets)
  for path in gets:
    response = anonymous.get(path)
    if path == "/":
      response = anonymous.get(response.headers["Location"])
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
  token = csrf_of(anonymous.get("/login").text)  # a valid token, just no login
  posts = _routes(app, "POST")
  assert posts == ["/api/draft/1", "/label/1/submit/1", "/logout"]
  for path in posts:
    response = anonymous.post(path, data=filled_form(token), headers={"X-CSRFToken": token})
    assert response.status_code == 401
  assert anonymous.post("/api/draft/2", json={"choice": "A1"},
                        headers={"X-CSRFToken": token}).status_code == 401
  assert table_counts(url) == before


def test_stored_hashes_are_argon2id(sqlite_url, monkeypatch):
  monkeypatch.setattr(sys, "stdin", io.StringIO("a long enough secret\n"))
  assert command.main(["add-user", "--db", sqlite_url, "--username", "eve", "--role", "admin",
                       "--password-stdin"]) == 0
  monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
  with pytest.raises(SystemExit, match="at least 10 characters"):
    command.main(["add-user", "--db", sqlite_url, "--username", "mal", "--password-stdin"])
  engine = db.make_engine(sqlite_url)
  with engine.connect() as connection:
    hashes = connection.execute(sa.select(models.User.username,
                                          models.User.password_hash)).all()
  engine.dispose()
  assert [name for name, _ in hashes] == ["eve"]
  assert hashes[0][1].startswith("$argon2id$") and "a long enough secret" not in hashes[0][1]


def test_sixth_failed_login_in_five_minutes_is_refused(world, monkeypatch):
  _, app = world
  client = app.test_client()
  for _ in range(5):
    assert login(client, "ann", "wrong password!").status_code == 401
  refused = login(client, "ann", PASSWORD)  # right password, but throttled: not even checked
  assert refused.status_code == 429 and "Too many failed logins" in refused.text
  assert client.get("/label").status_code == 302
  # The count is by name or by address: from the same address bob is refused too, from
  # another address bob gets in, and ann stays refused there (by name).
  assert login(app.test_client(), "bob", PASSWORD).status_code == 429
  assert login(app.test_client(), "bob", PASSWORD, address="10.0.0.2").status_code == 303
  assert login(app.test_client(), "ann", PASSWORD, address="10.0.0.3").status_code == 429
  # Failures older than the window no longer count (the window shrunk to zero stands in for
  # five minutes passing: the audit log itself cannot be back-dated).
  monkeypatch.setattr(accounts, "THROTTLE_WINDOW", datetime.timedelta(0))
  assert login(app.test_client(), "ann", PASSWORD).status_code == 303


def test_post_without_valid_csrf_changes_nothing(world):
  url, app = world
  client = app.test_client()
  login(client, "ann")
  page = client.get("/label/1").text
  action = re.search(r'action="(/label/\d+/submit/\d+)"', page).group(1)
  other = app.test_client()
  login(other, "bob")
  valid_elsewhere = csrf_of(other.get("/label/1").text)  # a real token, of another session
  before = table_counts(url)
  for token in (None, "forged-token", valid_elsewhere):
    form = filled_form(token or "")
    if token is None:
      del form["csrf_token"]
    headers = {} if token is None else {"X-CSRFToken": token}
    for path in _routes(app, "POST"):  # every state-changing endpoint, form and header alike
      assert client.post(path, data=form).status_code == 400, path
    assert client.post(action, data=form).status_code == 400
    assert client.post("/api/draft/1", json={"choice": "A1"}, headers=headers).status_code == 400
    fresh = app.test_client()
    fresh.get("/login")
    assert fresh.post("/login", data={"username": "bob", "password": PASSWORD,
                                      **({} if token is None else {"csrf_token": token})}
                      ).status_code == 400
  assert table_counts(url) == before
  assert client.get("/label/1").status_code == 200  # still logged in: logout was refused too


def test_markup_in_prompts_and_answers_is_shown_as_text(world):
  _, app = world
  client = app.test_client()
  login(client, "ann")
  page = client.get("/label/1").text
  assert "&lt;script&gt;alert(&#39;p&#39;)&lt;/script&gt;" in page
  assert "&lt;img src=x onerror=alert(&#39;a&#39;)&gt;" in page
  assert "<img" not in page and "alert('b')</script>" not in page
  assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/label.js">']
  csp = client.get("/label/1").headers["Content-Security-Policy"]
  assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_sql_injection_neither_logs_in_nor_errors(world):
  _, app = world
  client = app.test_client()
  for name, password in (("' OR 1=1--", "' OR 1=1--"), ("ann' --", "x"), ("ann", "' OR '1'='1")):
    assert login(client, name, password).status_code == 401
  assert client.get("/label").status_code == 302
  login(client, "ann")
  _judge_one(client)
  assert "1 shown" in client.get("/history").text
  for query in ("' OR 1=1--", "%", "_", "\" OR \"\"=\""):
    response = client.get("/history", query_string={"q": query})
    assert response.status_code == 200 and "0 shown" in response.text


def test_labeller_gets_403_on_admin_pages_and_404_on_anothers_judgment(world):
  _, app = world
  ann, bob, admin = app.test_client(), app.test_client(), app.test_client()
  for client, name in ((ann, "ann"), (bob, "bob"), (admin, "admin")):
    login(client, name)
  _judge_one(ann)
  assert ann.get("/judgment/1").status_code == 200
  assert bob.get("/judgment/1").status_code == 404
  assert bob.get("/judgment/999").status_code == 404
  for path in ("/admin", "/admin/project/1"):
    assert bob.get(path).status_code == 403
    assert admin.get(path).status_code == 200
  assert admin.get("/judgment/1").status_code == 200
  # Another's lease: neither submit nor draft reaches it.
  token = csrf_of(bob.get("/label/1").text)
  assert bob.post("/api/draft/1", json={"choice": "A1"},
                  headers={"X-CSRFToken": token}).status_code == 404


def test_session_cookie_changes_at_login_and_dies_at_logout(world):
  _, app = world
  client = app.test_client()
  client.get("/login")
  anonymous_cookie = client.get_cookie("batgpt_annotate").value
  response = login(client, "ann")
  header = response.headers["Set-Cookie"]
  assert "HttpOnly" in header and "SameSite=Lax" in header
  logged_in = client.get_cookie("batgpt_annotate").value
  assert logged_in != anonymous_cookie
  assert client.get("/label/1").status_code == 200
  token = csrf_of(client.get("/label/1").text)
  assert client.post("/logout", data={"csrf_token": token}).status_code == 303
  replay = app.test_client()
  replay.set_cookie("batgpt_annotate", logged_in)  # a copy of the cookie taken before logout
  assert replay.get("/label/1").status_code == 302


def test_model_names_reach_admins_only(sqlite_url, make_app):
  add_users(sqlite_url, {"admin": "admin", "ann": "labeller"})
  import_items(sqlite_url, "p", [{"id": "m", "prompt": "Which model?", "responses": [
      {"text": "one", "model": "secret-model-alpha"},
      {"text": "two", "model": "secret-model-beta"}]}])
  app = make_app(sqlite_url)
  ann, admin = app.test_client(), app.test_client()
  login(ann, "ann")
  login(admin, "admin")
  pages = [ann.get("/label/1").text]
  pages.append(ann.get("/label/1").text)
  _judge_one(ann)
  pages += [ann.get("/history").text, ann.get("/judgment/1").text, ann.get("/label/1").text]
  assert not any("secret-model" in page for page in pages)
  ranking = admin.get("/admin/project/1").text
  assert "secret-model-alpha" in ranking and "secret-model-beta" in ranking
  assert ranking.count("<rect") == 2 and "<svg" in ranking  # the Bradley-Terry plot


def test_login_redirects_only_within_the_site(world):
  _, app = world
  for target, landing in (("/history", "/history"), ("https://evil.example/x", "/label"),
                          ("//evil.example", "/label"), ("javascript:alert(1)", "/label")):
    client = app.test_client()
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"username": "ann", "password": PASSWORD,
                                           "csrf_token": token, "next": target})
    assert response.status_code == 303 and response.headers["Location"] == landing
