"""The application factory and what every page shares: identity, CSRF, language, security headers, errors, and
the login, logout and language-switch routes. The pages themselves are in cases.py (agents) and overview.py
(supervisors and analysts)."""
from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any, Optional
from urllib.parse import urlsplit

from flask import (Flask, Response, g, jsonify, make_response, redirect, render_template, request, session,
                   url_for)
from werkzeug.exceptions import HTTPException

from apps.reply import ElasticsearchCases
from apps.web import access, i18n
from apps.web.audit import AuditLog
from apps.web.context import Context, context
from apps.web.users import UsersFileError, check_password, load_users
from connectors.config import ConnectConfig
from core.config import Settings, WebSettings

HOME = {"agent": "cases.queue_page", "supervisor": "overview.supervisor", "analyst": "overview.search_page"}
ERROR_KEYS = {400: "bad_request", 401: "login", 403: "forbidden", 404: "not_found", 429: "login_wait"}


def create_app(settings: Settings, web_config: WebSettings, sources: Optional[ConnectConfig] = None,
               es: Any = None) -> Flask:
    """The workspace over the indices of `settings`; `sources` (the sources file) is needed to reply.
    `es`: an Elasticsearch client (default: one from the settings)."""
    from core.clients import elasticsearch_client
    if not web_config.trusted_proxy.enabled:
        load_users(web_config.users_file)  # a missing or invalid users file stops the start with its reason
    app = Flask(__name__)
    secret = web_config.secret_key.get_secret_value() if web_config.secret_key else secrets.token_urlsafe(48)
    app.config.update(SECRET_KEY=secret, SESSION_COOKIE_NAME="triage_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=not web_config.insecure_cookies,
                      PERMANENT_SESSION_LIFETIME=timedelta(seconds=web_config.session_lifetime_s),
                      MAX_CONTENT_LENGTH=256 * 1024)
    es = es or elasticsearch_client(settings.elasticsearch)
    app.extensions["triage"] = Context(settings, web_config, es, ElasticsearchCases(es, settings.elasticsearch),
                                       access.LoginLimiter(web_config.login_attempts, web_config.login_window_s),
                                       AuditLog(web_config.audit_log), sources)
    from apps.web.cases import blueprint as cases_blueprint
    from apps.web.overview import blueprint as overview_blueprint
    app.register_blueprint(cases_blueprint)
    app.register_blueprint(overview_blueprint)
    _shared(app)
    _session_routes(app)
    return app


def _shared(app: Flask) -> None:
    @app.before_request
    def before() -> None:
        g.lang = i18n.choose_language()
        access.identify(context().web.trusted_proxy)
        access.check_csrf()

    @app.context_processor
    def helpers() -> dict[str, Any]:
        return {"t": lambda key: i18n.translate(key, g.get("lang", "en")), "csrf_token": access.csrf_token,
                "lang": g.get("lang", "en"), "user": g.get("user"), "role": g.get("role"),
                "proxy_mode": context().web.trusted_proxy.enabled}

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"  # pages hold customers' posts: never in a shared cache
        response.headers["Vary"] = "Cookie, Accept-Language"
        return response

    @app.errorhandler(HTTPException)
    def error(exc: HTTPException) -> Any:
        """Errors say what is wrong and nothing else: never a part of what was asked for."""
        code = exc.code or 500
        if code == 401 and not request.path.startswith("/api/"):
            return redirect(url_for("login"))
        if request.path.startswith("/api/"):
            return jsonify({"error": exc.name.lower()}), code
        key = ERROR_KEYS.get(code, "error")
        return render_template("error.html", code=code, message=i18n.translate(key, g.get("lang", "en")),
                               lang_next="/"), code


def _local(target: Optional[str]) -> str:
    """A redirect target on this site only (never //other.host or http://...)."""
    parts = urlsplit(target or "/")
    return target if target and target.startswith("/") and not target.startswith("//") and not parts.netloc else "/"


def _session_routes(app: Flask) -> None:
    @app.get("/")
    def index() -> Response:
        if g.role is None:
            return redirect(url_for("login"))
        return redirect(url_for(HOME[g.role]))

    @app.get("/login")
    def login() -> Any:
        return render_template("login.html", error=None)

    @app.post("/login")
    def login_post() -> Any:
        ctx = context()
        if ctx.web.trusted_proxy.enabled:
            return render_template("login.html", error=i18n.translate("login_proxy", g.lang)), 404
        name, password = request.form.get("username", ""), request.form.get("password", "")
        address = request.remote_addr or "-"
        if ctx.limiter.blocked(name, address):
            ctx.audit.record(name, "-", "login", outcome="rate_limited", address=address)
            return render_template("login.html", error=i18n.translate("login_wait", g.lang)), 429
        try:
            user = check_password(load_users(ctx.web.users_file), name, password)
        except UsersFileError:
            user = None
        if user is None:
            ctx.limiter.failed(name, address)
            ctx.audit.record(name, "-", "login", outcome="refused", address=address)
            return render_template("login.html", error=i18n.translate("login_wrong", g.lang)), 401
        ctx.limiter.succeeded(name, address)
        session.clear()  # a fresh session (and CSRF token) at every login: nothing carries over from before
        session.permanent = True
        session.update(user=name, role=user.role)
        ctx.audit.record(name, user.role, "login", address=address)
        return redirect(url_for("index"))

    @app.post("/logout")
    def logout() -> Response:
        if g.user:
            context().audit.record(g.user, g.role, "logout", address=request.remote_addr)
        session.clear()
        return redirect(url_for("login"))

    @app.get("/lang/<code>")
    def switch_language(code: str) -> Response:
        response = make_response(redirect(_local(request.args.get("next"))))
        if code in i18n.LANGUAGES:
            response.set_cookie("lang", code, max_age=365 * 24 * 3600, samesite="Lax", httponly=True,
                                secure=not context().web.insecure_cookies)
        return response
