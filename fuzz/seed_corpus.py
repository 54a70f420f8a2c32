#!/usr/bin/env python3
"""Writes the starting inputs of every fuzz target into fuzz/seeds/<target>/.

The map_* seeds are the normalizer's golden fixtures in the targets' input layout (see
fuzz/src/push.rs); the others are the parsers' unit-test examples and a few hand-written HTTP
requests. fuzz/run.sh fuzzes from fuzz/corpus/<target>/ (the minimized corpus, checked in)
plus these seeds; rerun this script after adding fixtures.
"""
import json
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parent
FIXTURES = ROOT.parent / "normalizer" / "fixtures"
CONTENT_TYPES = [
    None,
    "application/json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "application/json;charset=utf-8",
    "application/x-www-form-urlencoded; charset=GBK",
    "text/javascript",
    "multipart/form-data; boundary=x",
]


def push_input(request):
    flags = CONTENT_TYPES.index(request.get("content_type"))
    if request["method"] == "GET":
        flags |= 0b1000
    if request["source"].get("account"):
        flags |= 0b1_0000
    flags |= 0b10_0000  # the golden tests redact `token`
    if request.get("body_json") is not None:
        body = json.dumps(request["body_json"], ensure_ascii=False, separators=(",", ":"))
    else:
        body = request.get("body") or ""
    data = bytes([flags])
    if request.get("query") is not None:
        data += request["query"].encode() + b"\0"
    return data + body.encode()


def http_request(method, target, headers=(), body=b"", chunked=False):
    lines = [f"{method} {target} HTTP/1.1", "Host: callhook"] + list(headers)
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    else:
        if method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def main():
    seeds = {name: [] for name in
             ["phone", "time", "lenient", "map_7moor", "map_coocenter", "map_uincall", "ingest"]}
    bodies = {"7moor": [], "coocenter": [], "uincall": []}
    for path in sorted(FIXTURES.glob("*/*.request.json")):
        request = json.loads(path.read_text())
        dialect = request["source"]["dialect"]
        data = push_input(request)
        seeds["map_" + dialect].append(data)
        bodies[dialect].append((request, data[1:].split(b"\0", 1)[-1] if request.get("query") is not None else data[1:]))
        if dialect == "coocenter" and request.get("body", "").lstrip().startswith("{"):
            seeds["lenient"].append(request["body"].encode())

    for zone in range(5):
        for text in ["1620455977", "1534993059.785012", "1609226863021", "1620455977123456",
                     "1620455977.1234567891", "2021-05-08 14:39:37", "2021-05-0814:39:37",
                     "2021-05-08T14:39:37", "2021/05/08 14:39:37", "20210508143937",
                     "2021-05-08+14%3A39%3A37", "2021-05-08%2014:39:37",
                     "2021-05-08T14:39:37+08:00", "2021-05-08T06:39:37.5Z",
                     "\"2021-05-08 14:39:37\"", "1620455977123.456", "2000-01-01 00:00:00"]:
            if zone == 0 or text[0] == "2":
                seeds["time"].append(bytes([zone]) + text.encode())
    for text in ["17319132391", "+8617319132391", "008617319132391", "8617319132391",
                 "017319132391", "01081400192", "+861081400192", "0755-12345678",
                 "(010) 8140-0192", "\"808\" <808>", "4001234567", "95588", "10086", "808",
                 "+442071234567", "0044 20 7123 4567", "sip:808@pbx", "s", " "]:
        seeds["phone"].append(text.encode())
    seeds["lenient"] += [
        b"{a:1, 'b':'x', \"c\": [1,2,], /* note */ d: true, e: null, f: undefined, g: -2.5, h: ANSWERED,}",
        b"{\nevent:\"cdr\",\ncallerid:\"\"808\"<808>\",//x\nsource:'808'\n}",
        b'{"a":{"b":[1,2.5e3,"\\u00e9\\n"]},"c":null}',
    ]

    moor = next(b for r, b in bodies["7moor"] if r.get("content_type") == "application/json")
    v2 = next(r["query"] for r, _ in bodies["7moor"] if r.get("query"))
    coo = next(b for r, b in bodies["coocenter"] if r.get("content_type") is None)
    uin = next(b for r, b in bodies["uincall"] if r.get("content_type") == "application/json")
    json_type = "Content-Type: application/json"
    requests = [
        (0, http_request("POST", "/hooks/7moor", [json_type], moor)),
        (1, http_request("POST", "/hooks/7moor", [json_type], moor)),
        (0, http_request("GET", "/hooks/7moor?" + v2)),
        (0, http_request("POST", "/hooks/coocenter", [], coo[:200], chunked=True)),
        (0, http_request("POST", "/hooks/coocenter", [], coo + b" " * 300)),
        (0, http_request("POST", "/hooks/uincall?token=fuzz-token-0123456789", [json_type], uin)),
        (0, http_request("POST", "/hooks/uincall/fuzz-token-0123456789", [json_type], uin)),
        (0, http_request("POST", "/hooks/uincall", ["Authorization: Bearer fuzz-token-0123456789", json_type], uin)),
        (0, http_request("POST", "/hooks/signed", ["X-Signature: sha256=00", json_type], uin)),
        (0, http_request("POST", "/hooks/sw", ["webhook-id: m1", "webhook-timestamp: 1620455977",
                                              "webhook-signature: v1,AAAA", json_type], moor)),
        (0, http_request("POST", "/hooks/cc", ["Authorization: 0123abcd"], coo)),
        (0, http_request("GET", "/hooks/ips", ["X-Forwarded-For: 10.1.2.3, 8.8.8.8"])),
        (2, http_request("GET", "/hooks/ips")),
        (0, http_request("PUT", "/hooks/7moor")),
        (0, http_request("GET", "/metrics")),
        (0, http_request("GET", "/hooks/nope")),
        (0, http_request("POST", "/hooks/7moor", [json_type], moor) + http_request("GET", "/hooks/7moor?" + v2)),
        (0, http_request("POST", "/hooks/7moor", [json_type], moor)[:-10]),
        (0, b"GET /hooks/7moor HTTP/1.0\r\n\r\n"),
    ]
    seeds["ingest"] = [bytes([flags]) + request for flags, request in requests]

    out = ROOT / "seeds"
    shutil.rmtree(out, ignore_errors=True)
    for name, inputs in seeds.items():
        folder = out / name
        folder.mkdir(parents=True)
        for index, data in enumerate(inputs):
            (folder / f"seed_{index:03}").write_bytes(data)
        print(f"{name}: {len(inputs)} seeds")


if __name__ == "__main__":
    main()
