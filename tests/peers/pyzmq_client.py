"""A service written with nothing but pyzmq: pushes a request and prints its final publication.

Usage: python3 pyzmq_client.py SUBJECT_ENDPOINT PUB_ENDPOINT FLOW VALUES_JSON
"""
import json
import sys
import time
import uuid

import zmq

subject, pub, flow, values = sys.argv[1:5]
ctx = zmq.Context()
dealer = ctx.socket(zmq.DEALER)
dealer.connect(subject)
sub = ctx.socket(zmq.SUB)
sub.connect(pub)
sub.setsockopt_string(zmq.SUBSCRIBE, flow + "~~~~")
# Ping until it comes back: then the subscription above is known to be active.
nonce = uuid.uuid4().hex
ping_topic = "~~~~ping-" + nonce
sub.setsockopt_string(zmq.SUBSCRIBE, ping_topic)
deadline = time.time() + 20
while True:
    dealer.send_multipart([ping_topic.encode(), json.dumps({"v": 1, "id": nonce, "k": "ping"}).encode(), b"{}"])
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
