"""A worker written with nothing but pyzmq, from PROTOCOL.md alone ("Workers", "Batches").

It joins a deployment's Subject, takes steps, runs the flows of the flow file it is given with its
own handlers (each appends "<name>@python" to the values' "trace"), goes on through each flow
itself until ??done, a @PUBLISH or an @ASYNC step, and sends the results back in batches.

Usage: python3 pyzmq_worker.py WORKER_ENDPOINT FLOWS_INI SECONDS
Runs for SECONDS, then says BYE and exits; prints how many steps it ran.
"""
import json
import struct
import sys
import time

import zmq

endpoint, flows_file, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])


def load_flows(path):
    """[Flow] sections of key lines; comments start with ; or #."""
    flows, current = {}, None
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("["):
            current = flows.setdefault(line[1:-1], [])
        elif current is not None:
            current.append(parse_key(line))
    return flows


def parse_key(text):
    """Sender?Context@Decorator?Action -> (sender, context, decorator, action)."""
    sender, middle, action = text.split("?")
    context, _, decorator = middle.partition("@")
    return sender, context, decorator, action


def topic(flow, key):
    sender, context, decorator, action = key
    return "~".join([flow, decorator, sender, context, action])


def read_batch(frame):
    """ZMB1, then per record: f64 tag, u8 kind, three u32 lengths, the three frames."""
    if frame[:4] != b"ZMB1":
        raise ValueError("not a batch")
    out, at = [], 4
    while at < len(frame):
        tag, kind, la, lb, lc = struct.unpack_from("<dBIII", frame, at)
        at += 21
        a, b, c = frame[at:at + la], frame[at + la:at + la + lb], frame[at + la + lb:at + la + lb + lc]
        at += la + lb + lc
        out.append((tag, kind, a, b, c))
    return out


def write_batch(records):
    parts = [b"ZMB1"]
    for tag, kind, a, b, c in records:
        parts.append(struct.pack("<dBIII", tag, kind, len(a), len(b), len(c)))
        parts += [a, b, c]
    return b"".join(parts)


DONE, PUBLISH, PAUSE, ERROR = 1, 2, 3, 4
STEP_LIMIT = 100


def run(flows, step_topic, header, values):
    """Runs from the step's position until the flow ends or reaches a @PUBLISH/@ASYNC step."""
    flow = step_topic.split("~")[0]
    steps = flows.get(flow)
    rid, pos, n = header["id"], header["pos"], header.get("n", 0)
    if steps is None:
        return ERROR, flow + "~~~~error", {"v": 1, "id": rid, "pos": pos,
                                           "error": {"code": "unknown_flow", "message": "unknown flow"}}, values
    while True:
        step = steps[pos]
        if not (header.get("r") == 1 and step[2] == "ASYNC"):
            values = dict(values, trace=list(values.get("trace", [])) + [step[3] + "@python"])
        header = {}
        pos, n = pos + 1, n + 1
        if pos >= len(steps) or steps[pos] == ("", "", "", "done"):
            return DONE, flow + "~~~~done", {"v": 1, "id": rid, "n": n}, values
        if n >= STEP_LIMIT:
            return ERROR, flow + "~~~~error", {"v": 1, "id": rid, "pos": pos, "n": n,
                                               "error": {"code": "step_limit", "message": "step limit"}}, values
        if steps[pos][2] in ("PUBLISH", "ASYNC"):
            kind = PUBLISH if steps[pos][2] == "PUBLISH" else PAUSE
            return kind, topic(flow, steps[pos]), {"v": 1, "id": rid, "pos": pos, "n": n}, values


flows = load_flows(flows_file)
ctx = zmq.Context()
sock = ctx.socket(zmq.DEALER)
sock.setsockopt(zmq.LINGER, 2000)
sock.setsockopt_string(zmq.ROUTING_ID, "pyworker-%d" % time.time_ns())
sock.connect(endpoint)
credit = 50
sock.send_multipart([b"READY", json.dumps({"credit": credit}).encode()])
holding, last, ran = set(), 0, 0
deadline, next_hb = time.time() + seconds, 0.0
while time.time() < deadline:
    if time.time() >= next_hb:
        sock.send_multipart([b"HB", json.dumps({"credit": credit, "holding": sorted(holding), "last": last}).encode()])
        next_hb = time.time() + 0.2
    if not sock.poll(50):
        continue
    frames = sock.recv_multipart()
    if frames[0] != b"STEPS":
        continue
    results = []
    for tag, _, t, h, v in read_batch(frames[1]):
        last = max(last, tag)
        kind, rt, rh, rv = run(flows, t.decode(), json.loads(h), json.loads(v))
        ran += 1
        results.append((tag, kind, rt.encode(), json.dumps(rh).encode(), json.dumps(rv).encode()))
    sock.send_multipart([b"RESULTS", write_batch(results)])
sock.send_multipart([b"BYE"])
sock.close()
ctx.term()
print(json.dumps({"steps": ran}))
