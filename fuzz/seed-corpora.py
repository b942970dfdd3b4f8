#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ from the messages the tests and
docs/protocol.md use. Rerun after changing a format; the files are committed (small)."""
import json, os, struct, base64, hashlib

HERE = os.path.dirname(os.path.abspath(__file__))

def put(target, blobs):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for b in blobs:
        if isinstance(b, str):
            b = b.encode()
        name = "seed-" + hashlib.sha1(b).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as f:
            f.write(b)

def frame(channel, flags, payload):
    return struct.pack(">BBI", channel, flags, len(payload)) + payload

PAIRED = b'{"type":"paired","mode":"fullControl","chat":true}'
JOINED = b'{"type":"joined","role":"helper","sid":"5f1d3a9c"}'
INPUTS = [
    b'{"type":"pointerMove","x":512,"y":384}',
    b'{"type":"pointerButton","x":512,"y":384,"button":1,"down":true}',
    b'{"type":"wheel","x":512,"y":384,"dx":0,"dy":2}',
    b'{"type":"key","key":"Enter","down":true}',
]

def screen(width, height, tiles):
    out = struct.pack(">BHHH", 1, width, height, len(tiles))
    for (x, y, w, h, fmt, data) in tiles:
        out += struct.pack(">HHHHBI", x, y, w, h, fmt, len(data)) + data
    return out

SCREENS = [
    screen(64, 64, [(0, 0, 64, 64, 2, b"\x89PNG\r\n\x1a\n" + b"\0" * 8)]),
    screen(128, 64, [(0, 0, 64, 64, 1, b"\xff\xd8\xff"), (64, 0, 64, 64, 1, b"\xff\xd8\xff")]),
    screen(16, 16, []),
]

relay = [frame(0, 0x80, PAIRED), frame(0, 0x80, JOINED), frame(1, 1, SCREENS[0]),
         frame(2, 0, INPUTS[0]), frame(3, 0, b"hello"), frame(1, 0, b"")]
put("relay_frame", relay + [PAIRED, JOINED])

def ws_client(opcode, payload, fin=True, mask=b"\x01\x02\x03\x04"):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return head + mask + masked

def ws_server(opcode, payload):
    n = len(payload)
    head = bytes([0x80 | opcode, n]) if n < 126 else bytes([0x80 | opcode, 126]) + struct.pack(">H", n)
    return head + payload

# The first byte is the chunk size the target feeds the decoder with.
ws = []
for chunk in (1, 7, 255):
    ws.append(bytes([chunk]) + ws_client(2, relay[2]) + ws_client(9, b"ping") + ws_client(8, struct.pack(">H", 1000) + b"bye"))
ws.append(bytes([3]) + ws_client(2, relay[3][:4], fin=False) + ws_client(0, relay[3][4:]))
ws.append(bytes([64]) + ws_client(2, frame(1, 1, b"x" * 300)))
ws.append(bytes([16]) + ws_server(2, relay[0]) + ws_server(10, b""))
put("websocket", ws)

def prelude(ticket):
    return struct.pack(">H", len(ticket)) + ticket

ticket = b"v1." + base64.urlsafe_b64encode(b'{"sid":"5f1d3a9c","role":"helper","exp":1767225660}').rstrip(b"=") + b".c2ln"
put("quic_prelude", [prelude(ticket) + relay[2] + relay[3], prelude(ticket), prelude(b"t"), b"\x00\x00", b"\xff\xff"])

signal = [
    '{"type":"authenticate","token":"eyJhbGciOiJFUzI1NiJ9.e30.c2ln"}',
    '{"id":1,"type":"ping"}',
    '{"id":2,"type":"requestCode"}',
    '{"id":"r-3","type":"redeemCode","code":"7KQ4-MZ2P"}',
    '{"id":4,"type":"requestSession","deviceId":"0b8e5c1a-device"}',
    '{"id":5,"type":"requestSession","deviceId":"0b8e5c1a-device","mode":"unattended","acknowledgeWarnings":["deviceNotCompliant"]}',
    '{"id":6,"type":"answerLaunch","sessionId":"5f1d3a9c0b7e4d2a8c6b1e0f9a3d7c5b","accept":true}',
    '{"id":7,"type":"requestMode","sessionId":"5f1d3a9c0b7e4d2a8c6b1e0f9a3d7c5b","mode":"fullControl","acknowledgeWarnings":[]}',
    '{"id":9,"type":"consent","sessionId":"5f1d3a9c0b7e4d2a8c6b1e0f9a3d7c5b","allow":true}',
    '{"id":10,"type":"chat","sessionId":"5f1d3a9c0b7e4d2a8c6b1e0f9a3d7c5b","text":"Can you open Settings?"}',
    '{"id":11,"type":"endSession","sessionId":"5f1d3a9c0b7e4d2a8c6b1e0f9a3d7c5b"}',
    '{"id":12,"type":"nope"}',
]
put("signal_message", signal)

graph = [
    "$select=blockChat,remoteAssistanceState",
    "$filter=activityDateTime ge 2026-12-01T20:55:31Z and category eq 'Role'&$top=5&$count=true",
    "$filter=displayName eq 'O''Brien' and accountEnabled eq true&$skip=2",
    "%24filter=n gt 2&$orderby=x",
    "$filter=activityDateTime lt 2026-12-02&$expand=x",
    '{"userPrincipalName":"helen@contoso.com","displayName":"Helen Helper","jobTitle":"Help desk"}',
    '{"displayName":"Helpdesk","description":"line one\\nline two","securityEnabled":true}',
    '{"deviceName":"PC-1","azureADDeviceId":"0b8e5c1a","complianceState":"compliant","managementState":"managed"}',
    '{"displayName":"R","rolePermissions":[{"resourceActions":[{"allowedResourceActions":["Microsoft.Intune_RemoteAssistance_Read"]}]}]}',
    '{"displayName":"A","roleDefinition@odata.bind":"x","members":["g1"],"scopeType":"allDevices"}',
    '{"remoteAssistanceState":"enabled","allowSessionsToUnenrolledDevices":false,"blockChat":true}',
    '{"id":"contoso.com"}',
]
put("graph_request", graph)

def b64(o):
    return base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()

claims = {"iss": "urn:assist:dev-issuer", "aud": "api://assist", "exp": 4102444800,
          "tid": "t1", "oid": "o1", "upn": "ana@contoso.com", "roles": ["DeviceManagementServiceConfig.Read.All"]}
jwt = [
    json.dumps(claims),
    json.dumps({**claims, "iss": "https://login.example/t1/v2.0"}),
    json.dumps({**claims, "iss": "https://login.example/t2/v2.0", "tid": "t1"}),
    json.dumps({**claims, "upn": "ana\u0000@contoso.com"}),
    b64({"alg": "ES256", "typ": "JWT", "kid": "k1"}) + "." + b64(claims) + ".c2ln",
    b64({"alg": "none"}) + "." + b64(claims) + ".",
    b64({"alg": "HS256"}) + "." + b64(claims) + ".c2ln",
]
put("jwt", jwt)

put("screen_frame", SCREENS + INPUTS)
