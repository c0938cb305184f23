#!/usr/bin/env python3
"""A stand-in for the calls faultline makes of the Kubernetes API server (no control plane
can run on this machine kind): enrolment's POST .../tokenreviews and GET of one pod, the
certificates Job's GET, POST and PUT of Secrets in the namespace "faultline", answered
with the objects and statuses the real API server returns.

    kube-apiserver-standin.py LISTEN_IP PORT CERT KEY CALLER_TOKEN LOG

Every request must carry `Authorization: Bearer CALLER_TOKEN` (the controller's own
service-account token) or gets 401, as the real server answers. Each request is logged
as one JSON line to LOG (method, path, the review's spec) so the test can check what the
controller asked.
"""
import http.server
import json
import ssl
import sys

ip, port, cert, key, caller, log = sys.argv[1:7]

AGENT_SA = "system:serviceaccount:faultline:faultline-agent"
# token -> the TokenReview status the API server would give it (audience faultline).
TOKENS = {
    # 1.30 and later: the node is in the token.
    "tok-node": {"user": AGENT_SA, "extra": {
        "authentication.kubernetes.io/node-name": ["node-e2"],
        "authentication.kubernetes.io/pod-name": ["faultline-agent-b"],
        "authentication.kubernetes.io/pod-uid": ["uid-b"]}},
    # Before 1.30: only the pod; its node is read from the pod.
    "tok-pod": {"user": AGENT_SA, "extra": {
        "authentication.kubernetes.io/pod-name": ["faultline-agent-a"],
        "authentication.kubernetes.io/pod-uid": ["uid-a"]}},
    # The token of a pod since replaced by another of the same name.
    "tok-replaced": {"user": AGENT_SA, "extra": {
        "authentication.kubernetes.io/pod-name": ["faultline-agent-a"],
        "authentication.kubernetes.io/pod-uid": ["uid-old"]}},
    # Another service account's pod, on a node.
    "tok-other-sa": {"user": "system:serviceaccount:default:web", "extra": {
        "authentication.kubernetes.io/node-name": ["node-e3"],
        "authentication.kubernetes.io/pod-name": ["web-0"],
        "authentication.kubernetes.io/pod-uid": ["uid-w"]}},
    # A node whose name is no DNS label.
    "tok-dotted": {"user": AGENT_SA, "extra": {
        "authentication.kubernetes.io/node-name": ["ip-10-0-1-2.ec2.internal"]}},
}
PODS = {"faultline-agent-a": {"uid": "uid-a", "node": "node-e1"}}
SECRETS_PATH = "/api/v1/namespaces/faultline/secrets"
SECRETS = {}


def status(code, reason, message):
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                  "message": message, "reason": reason, "code": code}


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def authorized(self):
        if self.headers.get("Authorization") == "Bearer " + caller:
            return True
        self.answer(401, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
        return False

    def note(self, **kw):
        with open(log, "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path, **kw}) + "\n")

    def body(self):
        length = int(self.headers.get("Content-Length", "0"))
        return json.loads(self.rfile.read(length) or b"{}")

    def do_PUT(self):
        obj = self.body()
        self.note(kind=obj.get("kind"), secret=obj.get("stringData"))
        if not self.authorized():
            return
        name = self.path[len(SECRETS_PATH) + 1:] if self.path.startswith(SECRETS_PATH + "/") else None
        if name not in SECRETS:
            return self.answer(*status(404, "NotFound", f'secrets "{name}" not found'))
        SECRETS[name] = obj
        self.answer(200, obj)

    def do_POST(self):
        review = self.body()
        self.note(spec=review.get("spec"), kind=review.get("kind"), secret=review.get("stringData"))
        if not self.authorized():
            return
        if self.path == SECRETS_PATH:
            name = review.get("metadata", {}).get("name")
            if name in SECRETS:
                return self.answer(*status(409, "AlreadyExists", f'secrets "{name}" already exists'))
            SECRETS[name] = review
            return self.answer(201, review)
        if self.path != "/apis/authentication.k8s.io/v1/tokenreviews":
            return self.answer(404, {"kind": "Status", "message": "the server could not find the requested resource", "code": 404})
        spec = review.get("spec", {})
        known = TOKENS.get(spec.get("token"))
        wanted = spec.get("audiences") or ["https://kubernetes.default.svc.cluster.local"]
        if known is None or "faultline" not in wanted:
            status = {"authenticated": False, "user": {}, "error": "[invalid bearer token, token audiences are invalid]"}
        else:
            status = {"authenticated": True, "audiences": ["faultline"],
                      "user": {"username": known["user"], "uid": "sa-uid",
                               "groups": ["system:serviceaccounts", "system:authenticated"],
                               "extra": known["extra"]}}
        self.answer(201, {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                          "metadata": {"creationTimestamp": None}, "spec": spec, "status": status})

    def do_GET(self):
        self.note()
        if not self.authorized():
            return
        if self.path.startswith(SECRETS_PATH + "/"):
            name = self.path[len(SECRETS_PATH) + 1:]
            if name not in SECRETS:
                return self.answer(*status(404, "NotFound", f'secrets "{name}" not found'))
            return self.answer(200, SECRETS[name])
        prefix = "/api/v1/namespaces/faultline/pods/"
        name = self.path[len(prefix):] if self.path.startswith(prefix) else None
        pod = PODS.get(name)
        if pod is None:
            return self.answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                     "message": f'pods "{name}" not found', "reason": "NotFound", "code": 404})
        self.answer(200, {"kind": "Pod", "apiVersion": "v1",
                          "metadata": {"name": name, "namespace": "faultline", "uid": pod["uid"]},
                          "spec": {"nodeName": pod["node"], "serviceAccountName": "faultline-agent"},
                          "status": {"phase": "Running"}})

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer((ip, int(port)), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
