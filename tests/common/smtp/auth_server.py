"""aiosmtpd that requires AUTH (PLAIN or LOGIN) of one user, on plain text, delivering into a
Maildir with the RefusingMailbox handler. aiosmtpd's command line takes no authenticator,
hence this script. Run as `python3 auth_server.py HOST:PORT MAILDIR` with SMTP_USER and
SMTP_PASSWORD in the environment and this folder on PYTHONPATH (tests/common/smtp.rs)."""

import asyncio
import os
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from refusing_mailbox import RefusingMailbox


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    user = os.environ["SMTP_USER"].encode()
    password = os.environ["SMTP_PASSWORD"].encode()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user
            and auth_data.password == password
        )
        # handled=False: aiosmtpd itself answers a failure (535 5.7.8).
        return AuthResult(success=ok, handled=False)

    handler = RefusingMailbox(sys.argv[2])
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(
        loop.create_server(
            lambda: SMTP(
                handler,
                authenticator=authenticator,
                auth_required=True,
                # Loopback only: the tests speak plain text.
                auth_require_tls=False,
            ),
            host=host,
            port=int(port),
        )
    )
    loop.run_forever()


main()
