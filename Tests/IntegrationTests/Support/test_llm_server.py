#!/usr/bin/env python3
"""An OpenAI-compatible chat server for whisperd's tests: a real HTTP listener whose answers
are scripted and which records what it was asked.

  POST /v1/chat/completions   answered by the next scripted behaviour (default: a reply)
  POST /script                append behaviours: [{"reply": "text"}, {"status": 500},
                              {"status": 429, "retry_after": 1}, {"delay": 0.5}, {"hang": true},
                              {"hold": true} (answered once POST /release lets it go)]
  POST /release               lets the oldest held request be answered
  GET  /requests              every chat request received: body, whether it had a bearer key, time
Prints its port on the first line of stdout. Stdlib only.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
script = []
received = []
released = threading.Semaphore(0)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def send_json(self, status, payload, headers=()):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/requests":
            with lock:
                self.send_json(200, received)
        elif self.path == "/v1/models":
            self.send_json(200, {"data": [{"id": "test-model-1"}]})
        else:
            self.send_json(404, {"error": "not found"})

    def do_POST(self):
        if self.path == "/script":
            with lock:
                script.extend(self.body())
            return self.send_json(200, {"ok": True})
        if self.path == "/release":
            released.release()
            return self.send_json(200, {"ok": True})
        if self.path != "/v1/chat/completions":
            return self.send_json(404, {"error": "not found"})
        request = self.body()
        with lock:
            received.append({"body": request, "bearer": self.headers.get("Authorization", "").startswith("Bearer "),
                             "at": time.time()})
            behaviour = script.pop(0) if script else {}
        if behaviour.get("hang"):
            time.sleep(3600)
        if behaviour.get("hold"):
            released.acquire()
        if "delay" in behaviour:
            time.sleep(behaviour["delay"])
        if "status" in behaviour:
            headers = [("Retry-After", str(behaviour["retry_after"]))] if "retry_after" in behaviour else []
            return self.send_json(behaviour["status"], {"error": {"message": "scripted failure"}}, headers)
        messages = request.get("messages", [])
        text = behaviour.get("reply") or f"echo: {messages[-1]['content']} [messages={len(messages)}]"
        answer = {
            "id": "chatcmpl-test", "object": "chat.completion", "model": "test-model-1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }
        if behaviour.get("no_usage"):  # {"no_usage": true}: a provider that reports no token counts
            del answer["usage"]
        self.send_json(200, answer)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
