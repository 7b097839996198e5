"""aiosmtpd's Mailbox handler, plus one rule for the tests: a recipient whose local part
starts with "nobody-" is refused for good (550 5.1.1), as a real server refuses an unknown
mailbox. Run as `python3 -m aiosmtpd -c refusing_mailbox.RefusingMailbox <maildir>` with
this folder on PYTHONPATH (tests/common/smtp.rs)."""

from aiosmtpd.handlers import Mailbox


class RefusingMailbox(Mailbox):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@")[0].startswith("nobody-"):
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"
