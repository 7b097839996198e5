"""Small helpers for scripts/dev-env, standard library only (run with /usr/bin/python3).

    devenv.py render-synapse TEMPLATE DIR PORT IDENTITY_NAME
        Writes DIR/homeserver.yaml from tests/e2e/synapse/homeserver.yaml.in, filled in the
        way tests/common/synapse.rs does it (each @PLACEHOLDER@ replaced by a JSON value,
        which is valid YAML), and DIR/log.yaml (Synapse's log to DIR/homeserver.log).
    devenv.py port-free PORT
        Exit 0 when 127.0.0.1:PORT can be listened on, 1 when something holds it.
    devenv.py free-ports N
        N distinct free loopback ports, one a line.
    devenv.py last-link MAILDIR [--after N] [--wait SECONDS]
        The first http(s) link in the text part of the newest message in MAILDIR (the
        sidecar's email link). With --after N, waits (up to --wait seconds) until more than
        N messages are there. Exit 1 when there is none.
    devenv.py count MAILDIR
        How many messages MAILDIR holds.
    devenv.py json KEY [KEY ...] < JSON
        The value at that path of the JSON document on stdin (strings bare, the rest as JSON);
        exit 1 when the path is not there.
"""

import email
import email.policy
import json
import os
import re
import socket
import sys
import time

LOG_CONFIG = """version: 1
formatters:
  precise:
    format: "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"
filters:
  context:
    (): synapse.logging.context.LoggingContextFilter
    request: ""
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: @LOG_FILE@
    filters: [context]
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
"""

# What the dev env asks of Synapse beyond the e2e template (appended as @EXTRA_YAML@).
EXTRA_YAML = """# scripts/dev-env: nothing beyond the e2e template.
"""


def render_synapse(template, directory, port, identity_name):
    def path(name):
        return json.dumps(os.path.join(directory, name))

    with open(template, encoding="utf-8") as f:
        text = f.read()
    values = {
        "@PID_FILE@": path("homeserver.pid"),
        "@PORT@": str(int(port)),
        "@DATABASE@": path("homeserver.db"),
        "@LOG_CONFIG@": path("log.yaml"),
        "@MEDIA_STORE_PATH@": path("media_store"),
        "@UPLOADS_PATH@": path("uploads"),
        "@SIGNING_KEY_PATH@": path("signing.key"),
        # Registration needs a verified email: the point of the walkthrough.
        "@REGISTRATIONS_REQUIRE_3PID@": json.dumps(["email"]),
        "@IDENTITY_SERVER@": json.dumps(identity_name),
    }
    for placeholder, value in values.items():
        if placeholder not in text:
            sys.exit(f"devenv.py: {placeholder} missing from {template}")
        text = text.replace(placeholder, value)
    if "@EXTRA_YAML@" not in text:
        sys.exit(f"devenv.py: @EXTRA_YAML@ missing from {template}")
    text = text.replace("@EXTRA_YAML@", EXTRA_YAML)
    with open(os.path.join(directory, "homeserver.yaml"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(directory, "log.yaml"), "w", encoding="utf-8") as f:
        f.write(LOG_CONFIG.replace("@LOG_FILE@", path("homeserver.log")))


def port_free(port):
    # SO_REUSEADDR, as servers set it: a port with only TIME_WAIT leftovers counts as free,
    # one with a listener (on 127.0.0.1 or on a wildcard address) does not.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", int(port)))
        s.listen(1)
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def messages(maildir):
    files = []
    for sub in ("new", "cur"):
        d = os.path.join(maildir, sub)
        if os.path.isdir(d):
            files += [os.path.join(d, name) for name in os.listdir(d)]
    # Maildir names start with the delivery time; the mtime orders within a second.
    return sorted(files, key=lambda p: (os.path.getmtime(p), os.path.basename(p)))


def link_in(path):
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    body = msg.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    match = re.search(r"https?://[^\s\"'<>]+", text)
    return match.group(0) if match else None


def last_link(maildir, after, wait):
    deadline = time.monotonic() + wait
    while True:
        found = messages(maildir)
        if len(found) > after:
            link = link_in(found[-1])
            if link is None:
                sys.exit(f"devenv.py: no link in {found[-1]}")
            print(link)
            return
        if time.monotonic() >= deadline:
            if after:
                sys.exit(f"devenv.py: no new mail in {maildir} within {wait:g}s")
            sys.exit(f"devenv.py: no mail in {maildir} yet")
        time.sleep(0.1)


def json_get(keys):
    value = json.load(sys.stdin)
    for key in keys:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            sys.exit(1)
    print(value if isinstance(value, str) else json.dumps(value))


def main(argv):
    if not argv:
        sys.exit(__doc__)
    command, args = argv[0], argv[1:]
    if command == "render-synapse" and len(args) == 4:
        render_synapse(*args)
    elif command == "port-free" and len(args) == 1:
        sys.exit(0 if port_free(args[0]) else 1)
    elif command == "free-ports" and len(args) == 1:
        print("\n".join(str(p) for p in free_ports(int(args[0]))))
    elif command == "last-link" and args:
        after, wait = 0, 0.0
        rest = args[1:]
        while rest:
            if rest[0] == "--after" and len(rest) > 1:
                after = int(rest[1])
            elif rest[0] == "--wait" and len(rest) > 1:
                wait = float(rest[1])
            else:
                sys.exit(__doc__)
            rest = rest[2:]
        last_link(args[0], after, wait)
    elif command == "count" and len(args) == 1:
        print(len(messages(args[0])))
    elif command == "json" and args:
        json_get(args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
