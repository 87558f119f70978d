"""A Sarama consumer group (Go) against `kafka-trace-harness broker`.

Builds tests/interop/sarama_group with Debian's Go and Sarama packages
(GOPATH mode: no module download), starts the broker with its admin
channel, creates a topic of two partitions and runs the program: a first
member's first record, a second member's partition about one heartbeat
after it subscribes, and every later record at the member holding its
partition (see main.go).
Usage: python3 tests/interop/sarama_client.py PATH_TO_BINARY OUT_DIR
"""
import os
import socket
import subprocess
import sys

DEADLINE_S = 90  # the whole Go program, two members included


def create_topic(admin, topic, partitions):
    host, port = admin.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as channel:
        channel.sendall(f"create {topic} {partitions}\n".encode())
        reply = channel.makefile().readline().strip()
    assert reply == "ok", f"creating {topic}: {reply}"


def build(out_dir):
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sarama_group")
    program = os.path.join(out_dir, "sarama_group")
    env = dict(
        os.environ,
        GO111MODULE="off",
        GOPATH="/usr/share/gocode",
        GOCACHE=os.path.join(out_dir, "gocache"),
        # Debian's zstd binding calls a function zstd.h marks deprecated.
        CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations",
    )
    subprocess.run(["go", "build", "-o", program, "."], cwd=here, env=env, check=True, timeout=600)
    return program


def main(binary, out_dir):
    # Go wants an absolute GOCACHE, and the build runs in the program's folder.
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    program = build(out_dir)
    broker = subprocess.Popen(
        [binary, "broker", "--port", "0", "--admin-port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        bootstrap = broker.stdout.readline().strip()
        assert bootstrap, "the broker printed no bootstrap address"
        admin = broker.stdout.readline().strip().removeprefix("admin ")
        assert admin, "the broker printed no admin address"
        create_topic(admin, "interop-sarama", 2)
        result = subprocess.run([program, bootstrap, "interop-sarama"], timeout=DEADLINE_S)
    finally:
        broker.terminate()
        assert broker.wait(10) == 0, "the broker did not exit cleanly on SIGTERM"
    sys.exit(result.returncode)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
