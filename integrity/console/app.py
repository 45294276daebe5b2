"""The console's ASGI application (Starlette): routes, sessions, roles, CSRF, actions.

:func:`create_app` builds it for one state directory. Pages are rendered on
the server with Jinja2 (autoescape on: every value from the data is
escaped); nothing is loaded from the network. Actions (release, restore)
call :mod:`integrity.engine.quarantine`, the same code as ``integrity quarantine
release|restore``, and are written to the ledger's console audit log with
who, when and why, whether they were done, refused or failed.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from integrity.console import auth
from integrity.console.charts import TRENDS, TrendCache
from integrity.console.queries import SEVERITIES, VERDICT_ORDER, ConsoleData, drop_list, examples, findings, \
    findings_by_check
from integrity.engine import quarantine as q
from integrity.ledger import Ledger, LedgerError
from integrity.report import plots
from integrity.report.format import fmt_duration, fmt_int, fmt_time, highlight_segments, pretty_detail

HERE = Path(__file__).parent
# the console's own pages: scripts and styles only from the console itself, no framing, no plugins
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# a scan's report.html (inline CSS/JS of its own): sandboxed into an opaque origin, so it can never read the
# console's cookies or act for the user
REPORT_CSP = ("sandbox allow-scripts; default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
              "img-src data:")
DEFAULT_TREND_NIGHTS = 90


class Forbidden(Exception):
    """The request may not do this (no session, wrong role or missing CSRF token)."""


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt_int=fmt_int, fmt_time=fmt_time, fmt_duration=fmt_duration, pretty=pretty_detail,
                       segments=highlight_segments)
    env.globals.update(SEVERITIES=SEVERITIES, VERDICTS=VERDICT_ORDER, TRENDS=TRENDS)
    return env


class Console:
    """State shared by the requests of one console: the ledger, its queries, sessions, templates."""

    def __init__(self, state_dir: str | os.PathLike, *, prefect_ui: str | None = None, loopback: bool = True):
        self.ledger = Ledger(state_dir)
        self.data = ConsoleData(self.ledger)
        self.sessions = auth.Sessions(auth.secret_key(self.ledger.state_dir))
        self.trends = TrendCache(self.data)
        self.env = _env()
        self.prefect_ui = (prefect_ui or "").rstrip("/") or None
        self.loopback = loopback  # only a loopback console is open read-only while no user exists

    # -- sessions and identity ---------------------------------------------

    def session(self, request: Request) -> dict:
        s = request.scope.get("console.session")
        if s is None:
            s = self.sessions.loads(request.cookies.get(auth.SESSION_COOKIE))
            request.scope["console.new_session"] = s is None
            s = s or self.sessions.new()
            request.scope["console.session"] = s
        return s

    def identity(self, request: Request) -> auth.Identity | None:
        """The user of this request; None when login is required and missing."""
        s = self.session(request)
        name = s.get("u")
        if name:
            row = self.ledger.user_hash(name)
            if row is not None:
                return auth.Identity(name=name, role=row[0])
        if self.loopback and not self.ledger.users():
            return auth.Identity(name=auth.ANONYMOUS, role="viewer", anonymous=True)
        return None  # (a public console whose last user was removed admits nobody)

    def render(self, request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        s = self.session(request)
        ctx.setdefault("user", self.identity(request))
        html = self.env.get_template(template).render(csrf=s["c"], request_path=request.url.path,
                                                      prefect_ui=self.prefect_ui, **ctx)
        return self.finish(request, HTMLResponse(html, status_code=status))

    def finish(self, request: Request, response: Response) -> Response:
        """Set the session cookie when it is new or changed, and the security headers."""
        if request.scope.get("console.new_session") or request.scope.get("console.session_changed"):
            response.set_cookie(auth.SESSION_COOKIE, self.sessions.dumps(self.session(request)),
                                max_age=auth.SESSION_MAX_AGE_S, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https")
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers.setdefault("Cache-Control", "no-store")
        return response


def _int(value: Any, default: int = 1) -> int:
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return default


def _qs(request: Request, **changes: Any) -> str:
    """The current query string with ``changes`` applied (None removes a key)."""
    params = dict(request.query_params)
    for k, v in changes.items():
        if v is None or v == "":
            params.pop(k, None)
        else:
            params[k] = str(v)
    return "?" + urlencode(params) if params else "?"


def create_app(state_dir: str | os.PathLike, *, prefect_ui: str | None = None, loopback: bool = True) -> Starlette:
    """The console for the ledger in ``state_dir`` (created and migrated as needed).

    ``loopback``: it listens on a loopback address only, so it may be browsed read-only while no
    console user exists; otherwise every request needs a signed-in user.
    """
    c = Console(state_dir, prefect_ui=prefect_ui, loopback=loopback)
    plots.warm_up()

    def need_user(request: Request) -> auth.Identity | Response:
        ident = c.identity(request)
        if ident is None:
            nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return c.finish(request, RedirectResponse("/login?" + urlencode({"next": nxt}), status_code=303))
        return ident

    def page(handler):
        async def wrapped(request: Request) -> Response:
            ident = need_user(request)
            if isinstance(ident, Response):
                return ident
            return await handler(request, ident)
        return wrapped

    # -- login / logout ----------------------------------------------------

    async def login_form(request: Request) -> Response:
        nxt = request.query_params.get("next", "/")
        return c.render(request, "login.html", next=nxt if nxt.startswith("/") and not nxt.startswith("//") else "/",
                        error=None, user=None, no_users=not c.ledger.users())

    async def login(request: Request) -> Response:
        form = await request.form()
        s = c.session(request)
        nxt = str(form.get("next") or "/")
        nxt = nxt if nxt.startswith("/") and not nxt.startswith("//") else "/"
        if not auth.csrf_ok(s, form.get("csrf")):
            return c.render(request, "login.html", status=403, next=nxt, user=None, no_users=False,
                            error="The form expired or lacked its CSRF token; please sign in again.")
        name = str(form.get("name") or "").strip()
        ident = auth.authenticate(c.ledger, name, str(form.get("password") or ""))
        if ident is None:
            c.ledger.record_console_action(who=name or "?", role=None, action="login", target=None, reason=None,
                                           outcome="refused", detail="wrong name or password")
            return c.render(request, "login.html", status=401, next=nxt, user=None, no_users=False,
                            error="Wrong name or password.")
        # a fresh session (and CSRF token) on login: no session fixation
        request.scope["console.session"] = c.sessions.new(ident.name)
        request.scope["console.session_changed"] = True
        return c.finish(request, RedirectResponse(nxt, status_code=303))

    async def logout(request: Request) -> Response:
        form = await request.form()
        if not auth.csrf_ok(c.session(request), form.get("csrf")):
            return c.render(request, "error.html", status=403, title="Refused",
                            message="Missing or wrong CSRF token.")
        request.scope["console.session"] = c.sessions.new()
        request.scope["console.session_changed"] = True
        return c.finish(request, RedirectResponse("/login", status_code=303))

    # -- pages -------------------------------------------------------------

    @page
    async def home(request: Request, ident: auth.Identity) -> Response:
        source = request.query_params.get("source") or None
        scans = c.data.scans(source=source, page=_int(request.query_params.get("page")))
        return c.render(request, "scans.html", sources=c.data.sources(), scans=scans, source=source,
                        nights=DEFAULT_TREND_NIGHTS, qs=lambda **kw: _qs(request, **kw))

    @page
    async def trend_svg(request: Request, ident: auth.Identity) -> Response:
        kind = request.path_params["kind"]
        if kind not in TRENDS:
            return c.render(request, "error.html", status=404, title="Not found", message=f"no chart {kind!r}")
        source = request.query_params.get("source") or None
        nights = min(_int(request.query_params.get("nights"), DEFAULT_TREND_NIGHTS), 1000)
        svg = c.trends.get(kind, source, nights)
        resp = Response(svg, media_type="image/svg+xml")
        resp.headers["Cache-Control"] = "private, max-age=60"
        return c.finish(request, resp)

    @page
    async def scan_page(request: Request, ident: auth.Identity) -> Response:
        scan = c.data.scan(request.path_params["scan_id"])
        if scan is None:
            return c.render(request, "error.html", status=404, title="Not found",
                            message=f"no scan {request.path_params['scan_id']!r} in the ledger")
        qp = request.query_params
        check, severity, shard = qp.get("check") or None, qp.get("severity") or None, qp.get("shard") or None
        verdict = qp.get("verdict") or None
        run_ok = bool(scan.run_dir) and (Path(scan.run_dir) / "findings.parquet").is_file()
        return c.render(
            request, "scan.html", scan=scan, run_ok=run_ok,
            verdict_counts=c.data.verdict_counts(scan.scan_id),
            verdicts=c.data.verdicts(scan.scan_id, verdict=verdict, page=_int(qp.get("vpage"))),
            by_check=findings_by_check(scan.run_dir),
            findings=findings(scan.run_dir, check=check, severity=severity, shard=shard, page=_int(qp.get("page"))),
            examples=examples(scan.run_dir, check=check, severity=severity, shard=shard),
            filters={"check": check, "severity": severity, "shard": shard, "verdict": verdict},
            has_report=bool(scan.run_dir) and (Path(scan.run_dir) / "report.html").is_file(),
            qs=lambda **kw: _qs(request, **kw))

    @page
    async def drop_list_file(request: Request, ident: auth.Identity) -> Response:
        scan = c.data.scan(request.path_params["scan_id"])
        fmt = request.path_params["fmt"]
        if scan is None or fmt not in ("csv", "parquet"):
            return c.render(request, "error.html", status=404, title="Not found", message="no such scan or format")
        qp = request.query_params
        df = drop_list(scan.run_dir, check=qp.get("check") or None, severity=qp.get("severity") or None,
                       shard=qp.get("shard") or None)
        buf = io.BytesIO()
        if fmt == "csv":
            df.write_csv(buf)
            media = "text/csv; charset=utf-8"
        else:
            df.write_parquet(buf)
            media = "application/vnd.apache.parquet"
        resp = Response(buf.getvalue(), media_type=media)
        resp.headers["Content-Disposition"] = f'attachment; filename="droplist-{scan.scan_id}.{fmt}"'
        return c.finish(request, resp)

    @page
    async def report_file(request: Request, ident: auth.Identity) -> Response:
        scan = c.data.scan(request.path_params["scan_id"])
        path = Path(scan.run_dir) / "report.html" if scan and scan.run_dir else None
        if path is None or not path.is_file():
            return c.render(request, "error.html", status=404, title="Not found",
                            message="this scan's run directory has no report.html")
        resp = FileResponse(path, media_type="text/html; charset=utf-8")
        resp.headers["Content-Security-Policy"] = REPORT_CSP
        return c.finish(request, resp)

    @page
    async def shard_page(request: Request, ident: auth.Identity) -> Response:
        shard = request.query_params.get("name") or ""
        nights = c.data.shard_nights(shard, page=_int(request.query_params.get("page")))
        if not nights.total and not c.ledger.actions(shard_or_uri=shard):
            return c.render(request, "error.html", status=404, title="Not found",
                            message=f"the ledger knows no shard named {shard!r}")
        latest = nights.rows[0] if nights.rows and nights.page == 1 else None
        run_dir = c.data.scan(latest["scan_id"]).run_dir if latest else None
        return c.render(request, "shard.html", shard=shard, nights=nights, latest=latest,
                        sha_changes=c.data.sha_changes(shard), events=c.data.shard_events(shard),
                        by_check=findings_by_check(run_dir, shard=shard),
                        findings=findings(run_dir, shard=shard, per_page=20),
                        series=c.data.shard_verdict_series(shard), qs=lambda **kw: _qs(request, **kw))

    @page
    async def queue(request: Request, ident: auth.Identity) -> Response:
        return c.render(request, "quarantine.html", pending=c.data.pending(),
                        completed=c.data.completed(page=_int(request.query_params.get("page"))),
                        audit=c.ledger.console_actions(limit=30), message=request.query_params.get("done"),
                        qs=lambda **kw: _qs(request, **kw))

    # -- actions -----------------------------------------------------------

    def _action_or_404(request: Request):
        """The quarantine action and kind (release/restore) a request names, or None."""
        if request.path_params["kind"] not in ("release", "restore"):
            return None
        try:
            return c.ledger.action(int(request.path_params["action_id"]))
        except (LedgerError, ValueError):
            return None

    @page
    async def confirm(request: Request, ident: auth.Identity) -> Response:
        kind = request.path_params["kind"]
        a = _action_or_404(request)
        if a is None:
            return c.render(request, "error.html", status=404, title="Not found", message="no such quarantine action")
        return c.render(request, "confirm.html", kind=kind, action=a, error=None, reason="")

    @page
    async def act(request: Request, ident: auth.Identity) -> Response:
        kind = request.path_params["kind"]
        a = _action_or_404(request)
        if a is None:
            return c.render(request, "error.html", status=404, title="Not found", message="no such quarantine action")
        form = await request.form()
        reason = str(form.get("reason") or "").strip()

        def audit(outcome: str, detail: str) -> None:
            c.ledger.record_console_action(who=ident.name, role=ident.role, action=kind, target=a.shard,
                                           reason=reason or None, outcome=outcome, detail=f"#{a.id} {a.uri}: {detail}")

        if not auth.csrf_ok(c.session(request), form.get("csrf")):
            audit("refused", "missing or wrong CSRF token")
            return c.render(request, "error.html", status=403, title="Refused",
                            message="This request lacked the console's CSRF token, so it was refused. "
                                    "Use the console's own forms.")
        if not ident.can_act:
            audit("refused", f"role {ident.role} may not {kind}")
            return c.render(request, "error.html", status=403, title="Refused",
                            message=f"Only operators may {kind} shards; you are signed in as "
                                    f"{ident.name} ({ident.role}).")
        if not reason:
            return c.render(request, "confirm.html", status=400, kind=kind, action=a, reason="",
                            error="Say why (the reason is recorded in the ledger with your name).")
        if form.get("confirm") != "yes":
            return c.render(request, "confirm.html", status=400, kind=kind, action=a, reason=reason,
                            error="Tick the confirmation box to go on.")
        try:
            if kind == "release":
                rel = q.release(c.ledger, f"#{a.id}", reason=reason, who=ident.name, restore=True)
                detail = "released; " + ("file put back" if rel.restored else "nothing to put back (mark mode)")
            else:
                done = q.restore(c.ledger, f"#{a.id}", who=ident.name)
                detail = f"restored (restore {done.restore_state or 'not needed'})"
        except (q.QuarantineError, LedgerError, OSError, ValueError) as e:
            audit("failed", str(e))
            return c.render(request, "confirm.html", status=409, kind=kind, action=a, reason=reason,
                            error=f"The {kind} did not complete: {e}")
        audit("done", detail)
        return c.finish(request, RedirectResponse("/quarantine?" + urlencode({"done": f"{a.shard}: {detail}"}),
                                                  status_code=303))

    routes = [
        Route("/", home),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/charts/{kind}.svg", trend_svg),
        Route("/scans/{scan_id}", scan_page),
        Route("/scans/{scan_id}/droplist.{fmt}", drop_list_file),
        Route("/scans/{scan_id}/report", report_file),
        Route("/shard", shard_page),
        Route("/quarantine", queue),
        Route("/quarantine/{action_id:int}/{kind}", confirm, methods=["GET"]),
        Route("/quarantine/{action_id:int}/{kind}", act, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.console = c
    return app
