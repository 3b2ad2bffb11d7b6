"""A client of the FTP example that stays logged in and transfers files through the update.

    python examples/ftp_server/client.py ftp://127.0.0.1:PORT/ [--interval SECONDS]

``pymoult demo ftp_server --port 0`` runs it next to the server. Over one control connection
(user ``user``, password ``12345``) each round uploads a small file, downloads it back and
compares the bytes, then sends ``NOOP`` and ``SITE STATS`` and prints their replies. Before the
update ``SITE STATS`` is an unknown command (500) and ``NOOP`` gives pyftpdlib's own reply;
after it, on the same connection, both answer from version 2. Ctrl-C ends it: exit code 0 if
every file came back identical and no command failed, 1 otherwise.
"""

import argparse
import ftplib
import io
import sys
import time
import urllib.parse


def reply(ftp, command):
    """The server's reply to ``command``, an error reply included (500 is a reply too)."""
    try:
        return ftp.sendcmd(command)
    except ftplib.error_perm as exc:
        return str(exc)


def main():
    parser = argparse.ArgumentParser(description="transfer files until Ctrl-C")
    parser.add_argument("url", help="the server's address, e.g. ftp://127.0.0.1:2121/")
    parser.add_argument("--interval", type=float, default=0.3, help="seconds between rounds")
    args = parser.parse_args()
    server = urllib.parse.urlsplit(args.url)
    rounds = 0
    try:
        ftp = ftplib.FTP()
        ftp.connect(server.hostname, server.port, timeout=10)
        print(f"client: connected: {ftp.getwelcome()}", flush=True)
        ftp.login("user", "12345")
        while True:
            name, data = f"round{rounds + 1}.txt", f"file of round {rounds + 1}\n".encode() * 64
            ftp.storbinary(f"STOR {name}", io.BytesIO(data))
            back = io.BytesIO()
            ftp.retrbinary(f"RETR {name}", back.write)
            if back.getvalue() != data:
                raise ValueError(f"{name} came back different")
            rounds += 1
            print(f"round {rounds}: {name} stored and read back identical; "
                  f"NOOP: {reply(ftp, 'NOOP')}; SITE STATS: {reply(ftp, 'SITE STATS')}",
                  flush=True)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        print(f"client: {rounds} rounds on one connection, every file identical", flush=True)
        return 0
    except (OSError, EOFError, ftplib.Error, ValueError) as exc:
        print(f"client: round {rounds + 1} failed: {exc!r}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
