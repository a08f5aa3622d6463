"""A service written with nothing but pyzmq: pushes a request and prints its final publication.

Usage: python3 pyzmq_client.py SUBJECT_ENDPOINT PUB_ENDPOINT FLOW VALUES_JSON [SECRET_KEY_FILE SERVER_PUB_FILE]

With the two key files (as `cli.ts keygen` writes them), both sockets are CURVE clients
(PROTOCOL.md, "Security"). ZM_PING_SECONDS (default 20): how long it pings before it gives up.
"""
import json
import os
import sys
import time
import uuid

import zmq

subject, pub, flow, values = sys.argv[1:5]


def read_key(path):
    """A key file: one Z85 key on a line of its own; lines starting with # are comments."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")][0].encode()


ctx = zmq.Context()
dealer = ctx.socket(zmq.DEALER)
sub = ctx.socket(zmq.SUB)
if len(sys.argv) > 6:
    secret = read_key(sys.argv[5])
    server = read_key(sys.argv[6])
    for s in (dealer, sub):
        s.curve_secretkey = secret
        s.curve_publickey = zmq.curve_public(secret)
        s.curve_serverkey = server
dealer.connect(subject)
sub.connect(pub)
sub.setsockopt_string(zmq.SUBSCRIBE, flow + "~~~~")
# Ping until it comes back: then the subscription above is known to be active.
nonce = uuid.uuid4().hex
ping_topic = "~~~~ping-" + nonce
sub.setsockopt_string(zmq.SUBSCRIBE, ping_topic)
deadline = time.time() + float(os.environ.get("ZM_PING_SECONDS", "20"))
while True:
    try:
        # Not blocking: a DEALER with no completed connection (not yet, or refused) cannot take it.
        dealer.send_multipart(
            [ping_topic.encode(), json.dumps({"v": 1, "id": nonce, "k": "ping"}).encode(), b"{}"], zmq.NOBLOCK
        )
    except zmq.Again:
        time.sleep(0.1)
    if sub.poll(100):
        topic, header, _ = sub.recv_multipart()
        if topic.decode() == ping_topic:
            break
    if time.time() > deadline:
        sys.exit("no ping came back")
request_id = "py-" + uuid.uuid4().hex
dealer.send_multipart([(flow + "~~~~").encode(), json.dumps({"v": 1, "id": request_id}).encode(), values.encode()])
while time.time() < deadline:
    if not sub.poll(100):
        continue
    topic, header, body = sub.recv_multipart()
    h = json.loads(header)
    if h.get("id") == request_id and topic.decode() in (flow + "~~~~done", flow + "~~~~error"):
        print(json.dumps({"topic": topic.decode(), "header": h, "values": json.loads(body)}))
        sys.exit(0)
sys.exit("no final publication")
