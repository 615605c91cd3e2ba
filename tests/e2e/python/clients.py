"""python-socketio 5.x against a running livebase: the three ways to authenticate
(handshake auth, Backand `login`, LoopBack `authentication`), an event only the
authenticated user may see, and a bad token refused with the reason. Prints one JSON
object of what it saw; `python.test.js` starts the server and checks it."""
import json
import os
import threading

import requests
import socketio

BASE = os.environ["LIVEBASE_URL"]
TOKEN = os.environ["LIVEBASE_TOKEN"]
WAIT = 5


def handshake():
    sio = socketio.Client(reconnection=False)
    created = threading.Event()
    seen = {}

    @sio.on("db_created")
    def on_created(data):
        seen["event"] = data
        created.set()

    sio.connect(BASE, auth={"token": TOKEN}, transports=["websocket"], wait_timeout=WAIT)
    joined = sio.call("join", "db-items", timeout=WAIT)
    made = requests.post(
        BASE + "/1/objects/items",
        json={"name": "from python"},
        headers={"Authorization": "Bearer " + TOKEN},
        timeout=WAIT,
    )
    made.raise_for_status()
    got = created.wait(WAIT)
    sio.disconnect()
    return {"joined": joined.get("ok"), "event": seen.get("event") if got else None}


def event_login(event, args, answer):
    sio = socketio.Client(reconnection=False)
    done = threading.Event()
    seen = {}

    @sio.on(answer)
    def on_answer(data):
        seen["who"] = data
        done.set()

    sio.connect(BASE, transports=["websocket"], wait_timeout=WAIT)
    sio.emit(event, args)
    got = done.wait(WAIT)
    echo = sio.call("echo", "hi", timeout=WAIT) if got else None
    sio.disconnect()
    return {"who": seen.get("who"), "echo": echo}


def refused():
    sio = socketio.Client(reconnection=False)
    reasons = []

    @sio.event
    def connect_error(data):
        reasons.append(data.get("message") if isinstance(data, dict) else str(data))

    try:
        sio.connect(BASE, auth={"token": "garbage"}, transports=["websocket"], wait_timeout=WAIT)
    except socketio.exceptions.ConnectionError:
        return {"refused": reasons[0] if reasons else "refused, no reason given"}
    sio.disconnect()
    return {"refused": None}


print(json.dumps({
    "handshake": handshake(),
    "login": event_login("login", ("Bearer " + TOKEN, "", ""), "authorized"),
    "authentication": event_login("authentication", {"id": TOKEN}, "authenticated"),
    "bad_token": refused(),
}))
