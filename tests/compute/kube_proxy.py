"""SSH ProxyCommand standing in for SkyPilot's ``kubectl port-forward`` proxy in the Kubernetes lab.

``python kube_proxy.py PODS_JSON POD`` joins stdin/stdout to the SSH port of the pod named ``POD`` (its
address looked up in PODS_JSON, which tests/compute/skylab.py keeps), as SkyPilot's proxy joins
them to the pod through the API server. A pod that was deleted cannot be reached.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import sys


def main() -> int:
    pods_file, pod = sys.argv[1], sys.argv[2]
    with open(pods_file) as f:
        address = json.load(f).get(pod)
    if address is None:
        print(f'Error from server (NotFound): pods "{pod}" not found', file=sys.stderr)
        return 1
    host, port = address.rsplit(":", 1)
    conn = socket.create_connection((host, int(port)), timeout=10)
    conn.settimeout(None)
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "in")
    selector.register(conn, selectors.EVENT_READ, "pod")
    while True:
        for key, _ in selector.select():
            if key.data == "in":
                data = os.read(sys.stdin.fileno(), 65536)
                if not data:
                    conn.shutdown(socket.SHUT_WR)
                    selector.unregister(sys.stdin.fileno())
                    continue
                conn.sendall(data)
            else:
                data = conn.recv(65536)
                if not data:
                    return 0
                view = memoryview(data)
                while view:
                    view = view[os.write(sys.stdout.fileno(), view) :]


if __name__ == "__main__":
    sys.exit(main())
