#!/usr/bin/env python3
"""Sends two records to a messagebuffer agent in acknowledged mode and checks every answer.

    python3 docs/examples/send.py SOCKET TOPIC    (or MB_SOCKET and MB_TOPIC in the environment)

The agent answers `#ack` with `ok`, then each line with `ok` once the record is stored, or with
`error line N: REASON`. Exits 0 only when all three answers are `ok`; 1 otherwise; 2 on usage
errors. Python 3 standard library only.
"""

import os
import socket
import sys


def main() -> int:
    args = sys.argv[1:]
    path = args[0] if len(args) > 0 else os.environ.get("MB_SOCKET")
    topic = args[1] if len(args) > 1 else os.environ.get("MB_TOPIC")
    if not path or not topic:
        print("usage: send.py SOCKET TOPIC (or MB_SOCKET and MB_TOPIC)", file=sys.stderr)
        return 2
    # TOPIC<TAB>KEY<TAB>VALUE; in KEY and VALUE, write \\ \n \t \r for those characters.
    lines = [f"{topic}\tkey-1\thello from Python", f"{topic}\tkey-2\tsecond line"]
    sent = ["#ack"] + lines
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        try:
            s.connect(path)
        except OSError as e:
            print(f"send.py: cannot connect to {path}: {e.strerror} (is the agent running?)", file=sys.stderr)
            return 1
        s.sendall("".join(line + "\n" for line in sent).encode())
        s.shutdown(socket.SHUT_WR)  # nothing more to send: the agent answers all, then closes
        answers = s.makefile("rb")
        failed = 0
        for line in sent:
            answer = answers.readline().decode().rstrip("\n")
            if answer != "ok":
                print(f"{line!r}: {answer or 'no answer'}", file=sys.stderr)
                failed += 1
    if failed == 0:
        print(f"send.py: {len(lines)} records stored")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
