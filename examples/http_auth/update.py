#parsed
"""Add authentication to the running HTTP server: convert sessions and pages, redefine
``respond``, in one update applied while no request is being served."""

import base64
import binascii
import sys

from pymoult.highlevel.managers import fetch_manager
from pymoult.highlevel.updates import QuiescentRedefineUpdate
from pymoult.lowlevel.data_update import redefineClass

app = sys.modules["__main__"]

USERS = {"alice": "wonderland"}
PROTECTED = {"/report"}


class Session:
    def __init__(self, sid):
        self.sid = sid
        self.visits = 0
        self.user = None  # who signed in with this session, if anyone


class Page:
    def __init__(self, path, title, text, protected=False):
        self.path = path
        self.title = title
        self.text = text
        self.views = 0
        self.protected = protected


def anonymous(session):
    session.user = None


def protect(page):
    page.protected = page.path in PROTECTED


def credentials(handler):
    """The user named by a valid ``Authorization: Basic`` header, else None."""
    scheme, _, encoded = handler.headers.get("Authorization", "").partition(" ")
    if scheme != "Basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user if USERS.get(user) == password else None


def respond(handler):
    """Serve one GET (version 2: protected pages need a user's credentials).

    Redefined in place, it runs with the application's globals: ``pages``, ``send``,
    ``session_of`` and ``lock`` are the application's; the names it needs that the application
    lacks (``credentials``) are brought over by the update.
    """
    page = pages.get(handler.path)
    if page is None:
        send(handler, 404, "no such page\n")
        return
    session = session_of(handler)
    user = credentials(handler)
    if page.protected and user is None:
        send(handler, 401, "sign in to see this page\n", session,
             [("WWW-Authenticate", 'Basic realm="example"')])
        return
    with lock:
        if user is not None:
            session.user = user
        session.visits += 1
        page.views += 1
        text = (f"{page.title}: {page.text} [session {session.sid}, visit {session.visits}, "
                f"page views {page.views}, user {session.user or 'anonymous'}]\n")
    send(handler, 200, text, session)


class AddAuthentication(QuiescentRedefineUpdate):
    """Requests are held at ``respond``'s entry until those running have left (forced
    quiescence); then everything changes at once, and the held requests run version 2."""

    def apply(self):
        redefineClass(app, app.Session, Session, anonymous)
        redefineClass(app, app.Page, Page, protect)
        super().apply()  # respond, redefined in place


# The wait for quiescence re-reads the stacks every sleep_time (running calls give no signal
# when they return): 5 ms rather than the default 100 ms, since requests are held meanwhile.
fetch_manager("runtime").add_update(AddAuthentication(
    app, "respond", respond, name="add authentication", timeout=10, sleep_time=0.005))
