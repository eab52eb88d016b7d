#!/usr/bin/env python3
"""An OpenAI-compatible chat server for scripts/e2e-dashboard.sh: its reply names the marker
(`Marker: WORD`) it finds in the system prompt, so a test sees which character.md a reply was
made with. Prints its port on stdout. Stdlib only."""
import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply(200, {"data": [{"id": "echo"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        system = " ".join(m.get("content", "") for m in body.get("messages", []) if m.get("role") == "system")
        found = re.search(r"Marker: (\S+)", system)
        text = "My persona marker is " + (found.group(1) if found else "missing")
        self.reply(200, {
            "id": "echo", "object": "chat.completion", "model": "echo",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
