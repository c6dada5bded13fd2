"""A small Flask application for trying scgiwsgi behind a front-end server.

Run it from the repository root with::

    scgi-wsgi examples.flask_app:app --bind 127.0.0.1:4000

Routes: ``/`` greets (the signed-in user by name on a page, anyone else with
one line), ``/echo`` (POST) echoes the form back, ``/info`` shows how the
request URL was understood (useful for checking SCRIPT_NAME and the scheme
behind a proxy), ``/upload`` (POST) returns the SHA-256 of the uploaded file
field ``file``.

``/login`` shows a form; posting the demo credentials, user ``demo`` and
password ``scgiwsgi``, signs in (a Flask session cookie) and redirects to
``/`` with a relative URL, as most applications do after a POST.  ``/logout``
(POST) signs out.  The pages link ``static/style.css`` through
``url_for("static", ...)``: the front end serves it from this package's
``static/`` directory under ``<prefix>/static/`` (``examples/nginx.conf``),
so it never reaches Python.

The ``secret_key`` below is a fixed value for development only: a real
deployment sets its own secret, kept out of the source.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from flask import (
    Flask,
    abort,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue

DEMO_USER = "demo"
DEMO_PASSWORD = "scgiwsgi"

# root_path is explicit so the static and template folders are found however
# the package is loaded (as examples.flask_app, or from the file path).
app = Flask(__name__, root_path=str(Path(__file__).resolve().parent))
app.secret_key = "dev-only-not-secret: set your own in production"


@app.route("/")
def index() -> ResponseReturnValue:
    """Greet the signed-in user by name, anyone else with one line."""
    user = session.get("user")
    if user is None:
        return "Hello from Flask!\n"
    return render_template("hello.html", user=user)


@app.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Show the form; sign in and redirect to ``/`` on the demo credentials."""
    error = None
    username = request.form.get("username", "")
    if request.method == "POST":
        password = request.form.get("password", "")
        if username == DEMO_USER and hmac.compare_digest(
            password.encode("utf-8"), DEMO_PASSWORD.encode("utf-8")
        ):
            session.clear()
            session["user"] = username
            # A relative URL (the prefix included): the browser resolves it.
            return redirect(url_for("index"))
        error = "Wrong user name or password."
    return render_template("login.html", error=error, username=username)


@app.route("/logout", methods=["POST"])
def logout() -> ResponseReturnValue:
    """Forget the session and go back to the login form."""
    session.clear()
    return redirect(url_for("login"))


@app.route("/echo", methods=["POST"])
def echo() -> ResponseReturnValue:
    """Return the submitted form fields as JSON."""
    return jsonify(request.form.to_dict(flat=False))


@app.route("/info")
def info() -> ResponseReturnValue:
    """Show how the server's environ was turned into a URL."""
    return jsonify(
        path=request.path,
        script_root=request.script_root,
        url_for_index=url_for("index"),
        url=request.url,
        scheme=request.scheme,
    )


@app.route("/upload", methods=["POST"])
def upload() -> str:
    """Return the SHA-256 hex digest of the uploaded file ``file``."""
    uploaded = request.files.get("file")
    if uploaded is None:
        abort(400, "missing file field 'file'")
    digest = hashlib.sha256()
    for chunk in iter(lambda: uploaded.stream.read(65536), b""):
        digest.update(chunk)
    return digest.hexdigest() + "\n"
