#!/usr/bin/env python3
"""Starts each SAM-built bootstrap as Lambda starts it and waits for its first event request.

    tools/bootstrap_starts.py [--runner "qemu-aarch64 -L /usr/aarch64-linux-gnu"] BOOTSTRAP...

A local listener plays the Runtime API (`AWS_LAMBDA_RUNTIME_API`); a bootstrap has started
when it sends `GET /2018-06-01/runtime/invocation/next`, having built everything `main` builds
(the SDK, the Kareo and Dock clients; the webhook function's tenant-directory read meets a
closed port and is retried at its first request). On an x86-64 machine the arm64 bootstraps
run under qemu-user, so the time printed is the emulator's, not Lambda's: what this proves is
that the binary SAM deploys loads, links and reaches ready. Prints one Markdown row per
bootstrap (after the header); exits 1 if any did not start. Without the runner installed, the
sizes and ELF types alone, each row saying it was not checked.
"""
import argparse
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time


def elf_type(path):
    with open(path, "rb") as f:
        head = f.read(18)
    if head[:4] != b"\x7fELF":
        return "not ELF"
    return {2: "EXEC", 3: "DYN (PIE)"}.get(int.from_bytes(head[16:18], "little"), "other")


def starts(cmd, timeout):
    """(True, seconds) once the bootstrap asks for an event, else (False, why)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(timeout)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:%d" % listener.getsockname()[1],
            "AWS_LAMBDA_FUNCTION_NAME": "smoke",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/smoke",
            "AWS_LAMBDA_LOG_STREAM_NAME": "smoke",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "smoke",
            "AWS_SECRET_ACCESS_KEY": "smoke",
            "AWS_SESSION_TOKEN": "smoke",
            "KAREO_DOCK_FAMILY": "appointments",
            "KAREO_DOCK_TABLE": "smoke",
            "KAREO_DOCK_TASK_FUNCTION": "smoke-task",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_MAX_ATTEMPTS": "1",
        }
        started = time.monotonic()
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            child.kill()
            _, err = child.communicate()
            return False, "no request in %d s (exit %s): %s" % (
                timeout, child.returncode, err.decode(errors="replace").strip()[-200:])
        with conn:
            conn.settimeout(timeout)
            line = conn.recv(200).split(b"\r\n")[0].decode(errors="replace")
        took = time.monotonic() - started
        child.kill()
        child.communicate()
        if not line.startswith("GET /2018-06-01/runtime/invocation/next"):
            return False, "unexpected first request: " + line[:80]
        return True, took


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runner", default="", help="command to run each bootstrap under")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("bootstraps", nargs="+")
    a = p.parse_args()
    runner = shlex.split(a.runner)
    missing = bool(runner) and shutil.which(runner[0]) is None
    failed = 0
    for path in a.bootstraps:
        name = os.path.basename(os.path.dirname(path)) or path
        size = os.path.getsize(path) / 1e6
        if missing:
            print("| %s | %.1f MB | %s | not checked (no %s: apt-get install qemu-user libc6-arm64-cross) |"
                  % (name, size, elf_type(path), runner[0]))
            continue
        ok, what = starts(runner + [path], a.timeout)
        cell = ("yes (%.0f ms%s)" % (what * 1e3, " emulated" if runner else "")) if ok else "**NO**: " + what
        print("| %s | %.1f MB | %s | %s |" % (name, size, elf_type(path), cell))
        failed += not ok
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
