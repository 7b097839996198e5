"""matrix-nio (a current Python client library, which calls only v3 paths) against an r0-only
homeserver behind the sidecar with `upstream.path_compat`: register, log in, create a room,
send messages, a long-poll /sync woken by a message, and a 5 MiB upload downloaded back
byte-identical.

Run by tests/e2e/clients.rs:  python nio_flow.py <sidecar base URL> <server name>
Exit 0 when every step passed; otherwise the failing step is on stderr (exit 1), or the whole
run took too long (exit 2). Each step prints one line on stdout.
"""

import asyncio
import hashlib
import io
import os
import sys
import time

from nio import (
    AsyncClient,
    AsyncClientConfig,
    DownloadError,
    LoginResponse,
    MemoryDownloadResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
    UploadResponse,
)

TOTAL_TIMEOUT = 60.0
LONG_POLL_MS = 3000
UPLOAD_SIZE = 5 * 1024 * 1024


class Failed(Exception):
    pass


def step(text):
    print(text, flush=True)


def expect(response, kind, what):
    if not isinstance(response, kind):
        raise Failed(f"{what}: expected {kind.__name__}, got {type(response).__name__}: {response}")
    return response


# Every path nio requested, to show which API versions it speaks.
REQUESTED = []


class RecordingClient(AsyncClient):
    """nio's AsyncClient, noting the path of every request (all of them go through send())."""

    async def send(self, method, path, *args, **kwargs):
        REQUESTED.append(path)
        return await super().send(method, path, *args, **kwargs)


def client(base_url, user=""):
    # Bounded: no retries on 429 or timeouts, 20 s per request (uploads and downloads have none
    # in nio; the overall timeout bounds them).
    config = AsyncClientConfig(max_limit_exceeded=0, max_timeouts=0, request_timeout=20)
    return RecordingClient(base_url, user, config=config)


def prefixes(paths):
    """"/_matrix/client/v3/sync?…" → "/_matrix/client/v3", in order of first use."""
    seen = []
    for path in paths:
        parts = path.split("?", 1)[0].split("/")
        prefix = "/".join(parts[:4]) if parts[3:4] != ["v1"] else "/".join(parts[:5])
        if prefix not in seen:
            seen.append(prefix)
    return seen


async def flow(base_url, server_name):
    username = "nio-" + os.urandom(4).hex()
    password = "nio-Pass-" + os.urandom(6).hex()
    user_id = f"@{username}:{server_name}"

    # 1. Register: nio sends POST /_matrix/client/v3/register with m.login.dummy.
    alice = client(base_url)
    bob = client(base_url, user_id)
    try:
        registered = expect(await alice.register(username, password, "nio register"), RegisterResponse, "register")
        if registered.user_id != user_id:
            raise Failed(f"register: user_id {registered.user_id}, expected {user_id}")
        step(f"registered {registered.user_id} (device {registered.device_id})")

        # 2. Log in a second device: POST /_matrix/client/v3/login.
        logged_in = expect(await bob.login(password, device_name="nio login"), LoginResponse, "login")
        step(f"logged in as {logged_in.user_id} (device {logged_in.device_id})")

        # 3. A room, and two messages in it.
        room = expect(await alice.room_create(name="nio room", topic="v3 over r0"), RoomCreateResponse, "createRoom")
        room_id = room.room_id
        step(f"created {room_id}")
        for n in (1, 2):
            sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": f"hello {n}"})
            expect(sent, RoomSendResponse, f"send message {n}")
        step("sent 2 messages")

        # 4. The second device syncs and sees them.
        first = expect(await bob.sync(timeout=0, full_state=True), SyncResponse, "initial sync")
        bodies = timeline_bodies(first, room_id)
        if bodies[-2:] != ["hello 1", "hello 2"]:
            raise Failed(f"initial sync: room timeline {bodies}")
        step(f"initial sync: {len(first.rooms.join)} joined room(s), timeline ends {bodies[-2:]}")

        # 5. Long poll: a /sync with timeout=3000 is waiting when the next message is sent; it
        #    returns with that message, well before its timeout (the sidecar streams it through).
        #    A sync that returns early for something else (a presence update) is followed by
        #    another, as a client's sync loop does.
        token = first.next_batch
        for _ in range(4):
            started = time.monotonic()
            waiting = asyncio.create_task(bob.sync(timeout=LONG_POLL_MS, since=token))
            await asyncio.sleep(0.5)
            if not waiting.done():
                break
            early = expect(waiting.result(), SyncResponse, "long-poll sync")
            if timeline_bodies(early, room_id):
                raise Failed(f"long-poll sync: unexpected messages {timeline_bodies(early, room_id)}")
            token = early.next_batch
        else:
            raise Failed("every long-poll sync returned at once, before anything was sent")
        expect(
            await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "while you wait"}),
            RoomSendResponse,
            "send during the long poll",
        )
        woken = expect(await waiting, SyncResponse, "long-poll sync")
        elapsed = time.monotonic() - started
        if timeline_bodies(woken, room_id) != ["while you wait"]:
            raise Failed(f"long-poll sync: timeline {timeline_bodies(woken, room_id)}")
        if elapsed >= LONG_POLL_MS / 1000:
            raise Failed(f"long-poll sync took {elapsed:.2f}s: not woken by the message")
        step(f"long-poll sync (timeout={LONG_POLL_MS}) woken by the message after {elapsed:.2f}s")

        # ... and an idle one returns after its timeout, with nothing new.
        token = woken.next_batch
        for _ in range(4):
            started = time.monotonic()
            idle = expect(await bob.sync(timeout=1000, since=token), SyncResponse, "idle sync")
            elapsed = time.monotonic() - started
            if timeline_bodies(idle, room_id):
                raise Failed(f"idle sync: timeline {timeline_bodies(idle, room_id)}")
            if elapsed >= 0.9:
                break
            token = idle.next_batch
        else:
            raise Failed("every idle sync returned at once")
        step(f"idle long-poll sync (timeout=1000) returned after {elapsed:.2f}s")

        # 6. 5 MiB up (POST /_matrix/media/v3/upload) and back, byte-identical.
        data = os.urandom(UPLOAD_SIZE)
        digest = hashlib.sha256(data).hexdigest()
        uploaded, _ = await alice.upload(
            io.BytesIO(data), content_type="application/octet-stream", filename="blob.bin", filesize=len(data)
        )
        mxc = expect(uploaded, UploadResponse, "upload").content_uri
        step(f"uploaded {len(data)} bytes as {mxc}")

        # nio 0.26's download() asks for authenticated media (/_matrix/client/v1/media/download,
        # Matrix 1.11), which an r0-only homeserver does not have (and nio hands back the 404
        # page as if it were the file). Say what it got, then fetch the file where such a
        # homeserver serves it: the v3 media path, with nio's own session.
        via_nio = await bob.download(mxc)
        status = getattr(getattr(via_nio, "transport_response", None), "status", None)
        if isinstance(via_nio, MemoryDownloadResponse) and status == 200:
            check_bytes(via_nio.body, digest, "download()")
            step("download() (client/v1/media) returned the same bytes")
        elif isinstance(via_nio, (MemoryDownloadResponse, DownloadError)) and status == 404:
            step(f"NOTE: nio download() asks /_matrix/client/v1/media/download: {status} from the homeserver")
        else:
            raise Failed(f"download(): {status} {via_nio}")
        server, media_id = mxc[len("mxc://") :].split("/", 1)
        answer = await bob.send(
            "GET",
            f"/_matrix/media/v3/download/{server}/{media_id}",
            headers={"Authorization": f"Bearer {bob.access_token}"},
            timeout=30,
        )
        body = await answer.read()
        if answer.status != 200:
            raise Failed(f"GET /_matrix/media/v3/download: {answer.status} {body[:300]!r}")
        check_bytes(body, digest, "/_matrix/media/v3/download")
        step(f"downloaded {len(body)} bytes via /_matrix/media/v3/download: identical (sha256 {digest[:16]}…)")

        # Someone else's message, read back with /messages (GET .../v3/rooms/{id}/messages).
        history = await bob.room_messages(room_id, start=woken.next_batch, direction="b", limit=10)
        bodies = [e.body for e in getattr(history, "chunk", []) if isinstance(e, RoomMessageText)]
        if "while you wait" not in bodies:
            raise Failed(f"/messages: {history}")
        step(f"/messages back from the end: {bodies}")

        # nio spoke v3 (and, for download(), v1 authenticated media), never r0.
        used = prefixes(REQUESTED)
        if set(used) - {"/_matrix/client/v3", "/_matrix/media/v3", "/_matrix/client/v1/media"}:
            raise Failed(f"nio requested other prefixes: {used}")
        step(f"{len(REQUESTED)} requests, prefixes {used}")
    finally:
        await alice.close()
        await bob.close()


def timeline_bodies(sync, room_id):
    room = sync.rooms.join.get(room_id)
    if room is None:
        return []
    return [e.body for e in room.timeline.events if isinstance(e, RoomMessageText)]


def check_bytes(body, digest, what):
    got = hashlib.sha256(body).hexdigest()
    if len(body) != UPLOAD_SIZE or got != digest:
        raise Failed(f"{what}: {len(body)} bytes, sha256 {got}, expected {UPLOAD_SIZE} bytes, {digest}")


def main():
    if len(sys.argv) != 3:
        print("usage: nio_flow.py BASE_URL SERVER_NAME", file=sys.stderr)
        return 64
    try:
        asyncio.run(asyncio.wait_for(flow(sys.argv[1], sys.argv[2]), TOTAL_TIMEOUT))
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    except (TimeoutError, asyncio.TimeoutError):
        print(f"FAILED: the flow took longer than {TOTAL_TIMEOUT:.0f}s", file=sys.stderr)
        return 2
    step("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
