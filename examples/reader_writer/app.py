"""A reader and a writer of a shared value, updated together to a new data format.

    pymoult run examples/reader_writer/app.py [--interval SECONDS]
    pymoult push examples/reader_writer/update.py --wait --to ADDRESS
    pymoult demo reader_writer    # all in one command: start, push, show the change, Ctrl-C

A writer thread publishes a temperature reading in ``shared``, a reader thread decodes it and
prints each new reading. Version 1 stores the text ``"seq:celsius"``; version 2 a dict with
Fahrenheit too. A reader of one format given the other fails, and the program prints
``MISMATCH``. The update parks both threads at their update points, redefines ``encode`` and
``decode`` and converts the value in ``shared``, all in one step: no reader ever sees the
other format. Ctrl-C ends it and prints how many readings were decoded and mismatched.
"""

import argparse
import threading

from pymoult.lowlevel.alterability import staticUpdatePoint
from pymoult.threads import DSU_Thread

shared = None
stop = threading.Event()
counts = {"read": 0, "mismatch": 0}
interval = 0.25


def encode(seq):
    return f"{seq}:{20 + seq % 10 / 2}"


def decode(value):
    seq, celsius = value.split(":")
    return int(seq), f"{float(celsius):.1f} C"


def write():
    global shared
    seq = 0
    while not stop.is_set():
        seq += 1
        shared = encode(seq)
        staticUpdatePoint("after a write")
        stop.wait(interval)


def read():
    last = 0
    while not stop.is_set():
        value = shared
        if value is not None:
            try:
                seq, reading = decode(value)
            except Exception as exc:  # the other format: what an unsafe update would cause
                counts["mismatch"] += 1
                print(f"MISMATCH: {exc!r} decoding {value!r}", flush=True)
            else:
                counts["read"] += 1
                if seq != last:
                    print(f"reading #{seq}: {reading}", flush=True)
                    last = seq
        staticUpdatePoint("after a read")
        stop.wait(interval / 4)


writer = DSU_Thread(target=write, name="writer")
reader = DSU_Thread(target=read, name="reader")


def main():
    global interval
    parser = argparse.ArgumentParser(description="write and read until Ctrl-C")
    parser.add_argument("--interval", type=float, default=interval,
                        help="seconds between writes")
    interval = parser.parse_args().interval
    writer.start()
    reader.start()
    try:
        while True:
            stop.wait(0.1)  # the Runner waits; Ctrl-C lands here
    except KeyboardInterrupt:
        stop.set()
        writer.join(5)
        reader.join(5)
        print(f"stopped: {counts['read']} decoded, {counts['mismatch']} mismatched", flush=True)


if __name__ == "__main__":
    main()
